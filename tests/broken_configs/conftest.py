# The .py files here are fixtures of the broken-config corpus, not test modules.
collect_ignore_glob = ["*.py"]
