"""A module that fails at import, for the broken-config corpus."""

raise RuntimeError("this module is broken on purpose")
