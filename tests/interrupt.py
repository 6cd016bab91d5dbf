"""Ctrl-C sent to a command of coral-graph running as its own process, the way a
terminal sends it; shared by the tests of `run`, `eval` and `resume`."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence

INHERITED_SIGINT = ["default", "ignored"]
"""How the command's parent left SIGINT: Python's default, or ignored (what a shell
without job control does for a command it starts in the background; asyncio then
installs no Ctrl-C handling of its own, and a command that relied on it ignored
Ctrl-C for good)."""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt(
    cmd: Sequence[str],
    ready: Callable[[], bool],
    *,
    inherited_sigint: str,
    env: dict[str, str] | None = None,
    ready_within_s: float = 30.0,
    exit_within_s: float = 30.0,
) -> tuple[int, str, str]:
    """Start ``cmd``, wait until ``ready()``, send SIGINT; its exit code, stdout and
    stderr. The process is killed and its pipes closed however this ends (a failure
    must not leave open files for the garbage collector to report in a later test)."""
    with subprocess.Popen(
        list(cmd),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if inherited_sigint == "ignored" else None,
    ) as proc:
        try:
            deadline = time.monotonic() + ready_within_s
            while not ready():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"not ready within {ready_within_s:g} s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=exit_within_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return proc.returncode, out, err
