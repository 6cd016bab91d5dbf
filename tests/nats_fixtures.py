"""A real ``nats-server`` with JetStream on 127.0.0.1, and workers as real processes.

``nats_server`` starts ``nats-server -js -sd <tmp> -p <free port>``; tests may kill
it and start it again on the same store directory. ``Workers`` starts
``coral-graph worker`` subprocesses and stops (or SIGKILLs) them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
)
needs_nats = pytest.mark.skipif(NATS_SERVER is None, reason="nats-server is not installed")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError("nats-server did not listen in time")


class NatsServer:
    def __init__(self, store_dir: Path, port: int, jetstream: bool = True) -> None:
        self.store_dir = store_dir
        self.port = port
        self.jetstream = jetstream
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert NATS_SERVER is not None
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc)
        if self.jetstream:
            time.sleep(0.1)  # JetStream recovers its store after the port opens

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(name="nats_server")
def nats_server_fixture(tmp_path: Path) -> Iterator[NatsServer]:
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed")
    srv = NatsServer(tmp_path / "jetstream", free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def cli_args(*args: str) -> list[str]:
    return [sys.executable, "-c", "from coral_graph.cli import main; main()", *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProc:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if ": hosting " in line:
                self.ready.set()
        self.ready.set()

    def close(self) -> None:
        self._t.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


class Workers:
    """Starts ``coral-graph worker`` processes; stops every one at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: list[WorkerProc] = []

    def start(
        self, graph: Path, *extra: str, wait: bool = True, env: dict[str, str] | None = None
    ) -> WorkerProc:
        proc = subprocess.Popen(
            cli_args("worker", str(graph), "--nats", self.url, *extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**cli_env(), **(env or {})},
            cwd=str(graph.parent),
        )
        w = WorkerProc(proc)
        self.procs.append(w)
        if wait:
            assert w.ready.wait(60), w.output
            assert w.proc.poll() is None, f"worker exited: {w.output}"
        return w

    def close(self) -> None:
        for w in self.procs:
            if w.proc.poll() is None:
                w.proc.terminate()
        for w in self.procs:
            try:
                w.proc.wait(15)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)
            w.close()


@pytest.fixture(name="workers")
def workers_fixture(nats_server: NatsServer) -> Iterator[Workers]:
    ws = Workers(nats_server.url)
    try:
        yield ws
    finally:
        ws.close()


def announce_writes(st: Any, link: Any, changes: str) -> list[int]:
    """Publish each change ``st`` (a ``RunState``) stores as its change notice, on
    ``link``, as ``NatsRun.notice`` does; returns a list that grows by one per notice."""
    import asyncio

    sent: list[int] = []
    tasks: list[asyncio.Task[None]] = []

    def wrote(key: str, value: bytes, rev: int) -> None:
        sent.append(1)
        publish = link.nc.publish(f"{changes}.{rev}.{key}", value)
        tasks.append(asyncio.get_running_loop().create_task(publish))

    st.on_write = wrote
    return sent
