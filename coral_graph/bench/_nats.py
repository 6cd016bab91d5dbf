"""``coral-graph bench --nats``: pingpong, ring and fanout with the agents in worker
processes over NATS JetStream, each beside a floor measured in the same run — bare
nats-py JetStream (publish -> pull -> ack, one consumer per agent with one delivery in
flight, as coral-graph's inboxes) of the same pattern and message size, no coral-graph.

The floor acknowledges a delivery as coral-graph's workers do, without waiting for the
server to confirm the acknowledgement (``Msg.ack``). A second floor, printed beside it,
waits for that confirmation (``Msg.ack_sync``: one more round trip per delivery); it is
the floor this benchmark used before, kept for comparison. The ratio is to the first.

Both sides are measured the same way: deliveries per second (deliveries / time from
the first send to the last handled delivery) and the latency of a delivery (its send
to the end of the turn that handled it), p50 and p99. Sizes are small: every delivery
is a few round trips to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from coral_graph.bench._util import median, percentile

PAYLOAD = "x" * 100

_AGENTS = '''
"""Agents of coral-graph bench --nats (written next to a generated graph file)."""
import json

PAYLOAD = "x" * 100
_THREADS = {}


async def pp_a(ctx, message):
    meta = dict(message.metadata or {})
    if message.sender == "user":
        cfg = json.loads(message.content)
        th = await ctx.create_thread("pp", ["pp_b"])
        meta = {"task": message.thread_id, "n": 1, "rounds": cfg["rounds"]}
        await ctx.send_message(th.id, PAYLOAD, ["pp_b"], metadata=meta)
        return
    if meta["n"] >= meta["rounds"]:
        await ctx.send_message(meta["task"], "done", ["user"])
        return
    meta["n"] += 1
    await ctx.send_message(message.thread_id, PAYLOAD, ["pp_b"], metadata=meta)


async def pp_b(ctx, message):
    await ctx.send_message(message.thread_id, PAYLOAD, ["pp_a"], metadata=message.metadata)


def _ring_next(name):
    i, n = (int(x) for x in name[1:].split("_"))
    return f"r{(i + 1) % n}_{n}"


async def ring(ctx, message):
    meta = dict(message.metadata or {})
    if message.sender == "user":
        cfg = json.loads(message.content)
        meta = {"hops": 0, "limit": cfg["hops_per_token"]}
    if meta["hops"] >= meta["limit"]:
        return
    nxt = _ring_next(ctx.name)
    key = (ctx.run_id, ctx.name)
    tid = _THREADS.get(key)
    if tid is None:
        tid = _THREADS[key] = (await ctx.create_thread("ring", [nxt])).id
    meta["hops"] += 1
    await ctx.send_message(tid, PAYLOAD, [nxt], metadata=meta)


async def fan_sender(ctx, message):
    cfg = json.loads(message.content)
    th = await ctx.create_thread("fan", cfg["to"])
    for _ in range(cfg["messages"]):
        await ctx.send_message(th.id, PAYLOAD, cfg["to"])


async def fan_sink(ctx, message):
    pass
'''


def _yaml(name: str, agents: dict[str, str], edges: list[str], entry: list[str]) -> str:
    lines = [f"name: {name}", "agents:"]
    for a, fn in agents.items():
        lines.append(f'  {a}: {{kind: python, python: "bench_agents.py:{fn}"}}')
    if edges:
        lines.append("edges:")
        lines += [f"  - {e}" for e in edges]
    lines.append(f"entry: [{', '.join(entry)}]")
    lines.append("budgets: {max_messages: 1000000, turn_timeout_s: 600}")
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """A private nats-server with JetStream on 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        args = [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(folder)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("nats-server did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _start_workers(graph: Path, url: str, groups: list[list[str]]) -> list[subprocess.Popen[str]]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    procs = []
    for agents in groups:
        p = subprocess.Popen(
            [sys.executable, "-c", "from coral_graph.cli import main; main()", "worker",
             str(graph), "--nats", url, "--agents", ",".join(agents)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        procs.append(p)
    for p in procs:
        assert p.stderr is not None
        line = p.stderr.readline()
        if ": hosting " not in line:
            raise RuntimeError(f"a worker did not start: {line}{p.stderr.read()}")
    return procs


def _stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
        if p.stderr is not None:
            p.stderr.close()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _figures(events: Sequence[Any]) -> dict[str, Any]:
    """Deliveries/s and latency from a run's transcript (the task's deliveries excluded)."""
    sent = {e.message.id: e.message.timestamp for e in events if e.kind == "message_sent"}
    task = {e.message.id for e in events if e.kind == "message_sent" and e.message.sender == "user"}
    first = min((e.message.timestamp for e in events if e.kind == "message_sent"
                 and e.message.sender != "user"), default=0.0)  # fmt: skip
    lat, last = [], 0.0
    for e in events:
        if e.kind == "delivery_handled" and e.message_id not in task:
            lat.append(e.ts - sent.get(e.message_id, e.ts))
            last = max(last, e.ts)
    n = len(lat)
    span = last - first if n else float("nan")
    return {
        "deliveries": n,
        "deliveries_per_s": n / span if n and span > 0 else float("nan"),
        "p50_us": percentile(lat, 50) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
    }


async def _coral(
    url: str,
    folder: Path,
    name: str,
    yaml: str,
    groups: list[list[str]],
    task: dict[str, Any],
    server_pid: int | None = None,
) -> dict[str, Any]:
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    graph = folder / f"{name}.yaml"
    graph.write_text(yaml)
    procs = _start_workers(graph, url, groups)
    try:
        lg = load_graph(graph)
        pids = [p.pid for p in procs]
        w0 = sum(_cpu_s(p) for p in pids)
        s0 = _cpu_s(server_pid) if server_pid else 0.0
        c0 = time.process_time()
        result = await run_on_nats(lg, json.dumps(task), url, wait_workers_s=30)
        cpu = {
            "workers": sum(_cpu_s(p) for p in pids) - w0,
            "server": _cpu_s(server_pid) - s0 if server_pid else float("nan"),
            "starter": time.process_time() - c0,
        }
    finally:
        _stop_workers(procs)
    out = _figures(result.events)
    out["stop_reason"] = result.stop_reason
    out["workers"] = len(groups)
    # CPU milliseconds per delivery, per kind of process (the whole run: idle scan and
    # recording included): what a delivery costs where, on a machine with few cores.
    n = max(1, out["deliveries"])
    out["cpu_ms"] = {k: v * 1000 / n for k, v in cpu.items()}
    return out


# -- the floor: bare nats-py JetStream ------------------------------------------------


class _Floor:
    """One stream, one durable pull consumer per agent (explicit ack, one in flight);
    with ``confirm`` each acknowledgement waits for the server's confirmation."""

    def __init__(self, js: Any, agents: list[str], confirm: bool = False) -> None:
        self.js = js
        self.confirm = confirm
        self.agents = agents
        self.tag = secrets.token_hex(4)
        self.stream = f"FLOOR_{self.tag}"
        self.subs: dict[str, Any] = {}
        self.lat: list[float] = []
        self.first = 0.0
        self.last = 0.0

    def subject(self, agent: str) -> str:
        return f"floor.{self.tag}.{agent}"

    async def open(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

        await self.js.add_stream(
            name=self.stream, subjects=[f"floor.{self.tag}.*"],
            retention=RetentionPolicy.WORK_QUEUE,
        )  # fmt: skip
        for a in self.agents:
            cfg = ConsumerConfig(
                durable_name=a, filter_subject=self.subject(a), ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=1,
            )  # fmt: skip
            await self.js.add_consumer(self.stream, cfg)
            self.subs[a] = await self.js.pull_subscribe_bind(durable=a, stream=self.stream)

    async def close(self) -> None:
        await self.js.delete_stream(self.stream)

    async def send(self, to: str, hops: int) -> None:
        now = time.time()
        if not self.first:
            self.first = now
        body = json.dumps({"t": now, "hops": hops, "p": PAYLOAD}).encode()
        await self.js.publish(self.subject(to), body, headers={"Nats-Msg-Id": secrets.token_hex(8)})

    async def take(self, agent: str) -> dict[str, Any] | None:
        import nats.errors

        try:
            msgs = await self.subs[agent].fetch(1, timeout=2.0)
        except nats.errors.TimeoutError:
            return None
        m = msgs[0]
        data: dict[str, Any] = json.loads(m.data)
        if self.confirm:
            await m.ack_sync()
        else:
            await m.ack()
        now = time.time()
        self.lat.append(now - data["t"])
        self.last = max(self.last, now)
        return data

    def figures(self) -> dict[str, Any]:
        n = len(self.lat)
        span = self.last - self.first
        return {
            "deliveries": n,
            "deliveries_per_s": n / span if n and span > 0 else float("nan"),
            "p50_us": percentile(self.lat, 50) * 1e6,
            "p99_us": percentile(self.lat, 99) * 1e6,
        }


async def _floor_pingpong(js: Any, confirm: bool, rounds: int) -> dict[str, Any]:
    f = _Floor(js, ["a", "b"], confirm)
    await f.open()

    async def b() -> None:
        for _ in range(rounds):
            d = await f.take("b")
            assert d is not None
            await f.send("a", 0)

    tb = asyncio.create_task(b())
    for _ in range(rounds):
        await f.send("b", 0)
        assert await f.take("a") is not None
    await tb
    await f.close()
    return f.figures()


async def _floor_ring(
    js: Any, confirm: bool, agents: int, tokens: int, hops: int
) -> dict[str, Any]:
    names = [f"r{i}" for i in range(agents)]
    f = _Floor(js, names, confirm)
    await f.open()
    per = hops // tokens
    total = per * tokens
    done = asyncio.Event()

    async def node(i: int) -> None:
        while not done.is_set():
            d = await f.take(names[i])
            if d is None:
                continue
            if len(f.lat) >= total:
                done.set()
            if d["hops"] < per:
                await f.send(names[(i + 1) % agents], d["hops"] + 1)

    tasks = [asyncio.create_task(node(i)) for i in range(agents)]
    for k in range(tokens):
        await f.send(names[k * agents // tokens], 1)
    await asyncio.wait_for(done.wait(), 600)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await f.close()
    return f.figures()


async def _floor_fanout(js: Any, confirm: bool, participants: int, messages: int) -> dict[str, Any]:
    names = [f"s{i}" for i in range(participants)]
    f = _Floor(js, names, confirm)
    await f.open()

    async def sink(a: str) -> None:
        for _ in range(messages):
            while await f.take(a) is None:
                pass

    tasks = [asyncio.create_task(sink(a)) for a in names]
    for _ in range(messages):
        for a in names:
            await f.send(a, 0)
    await asyncio.gather(*tasks)
    await f.close()
    return f.figures()


@contextlib.asynccontextmanager
async def _bare_nats(url: str) -> AsyncIterator[Any]:
    """JetStream on a connection exactly as nats-py makes it, for the floor.
    (coral-graph's own connections hand replies over without nats-py's
    subscription tasks: the floor must not get that.)"""
    import nats

    nc = await nats.connect(url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def _floor_cpu(run: Any, server_pid: int | None) -> dict[str, Any]:
    """A floor's figures with its CPU per delivery (the server's and this process's)."""
    s0 = _cpu_s(server_pid) if server_pid else 0.0
    c0 = time.process_time()
    out: dict[str, Any] = await run
    n = max(1, out["deliveries"])
    out["cpu_ms"] = {
        "server": (_cpu_s(server_pid) - s0) * 1000 / n if server_pid else float("nan"),
        "starter": (time.process_time() - c0) * 1000 / n,
    }
    return out


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures over its runs: the median of each (the deliveries of the
    first run: every run makes as many)."""
    figs = ("deliveries_per_s", "p50_us", "p99_us")
    out: dict[str, Any] = {k: median([r[k] for r in runs]) for k in figs}
    out["deliveries"] = runs[0]["deliveries"]
    out["cpu_ms"] = {k: median([r["cpu_ms"][k] for r in runs]) for k in runs[0]["cpu_ms"]}
    return out


def _cpu_text(cpu: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def _split(agents: list[str], k: int) -> list[list[str]]:
    return [agents[i::k] for i in range(k) if agents[i::k]]


async def _bench(
    url: str,
    folder: Path,
    sizes: dict[str, int],
    repeat: int,
    log: Any,
    scaling: Sequence[int] = (1, 2, 4),
    server_pid: int | None = None,
    only: Sequence[str] = ("pingpong", "ring", "fanout"),
) -> dict[str, Any]:
    folder.joinpath("bench_agents.py").write_text(_AGENTS)
    out: dict[str, Any] = {}
    rounds, ring_n, tokens = sizes["rounds"], sizes["ring_agents"], sizes["ring_tokens"]
    hops, fan_p, fan_m = sizes["ring_hops"], sizes["fanout_participants"], sizes["fanout_messages"]
    ring_agents = {f"r{i}_{ring_n}": "ring" for i in range(ring_n)}
    ring_names = list(ring_agents)
    ring_edges = [f"{ring_names[i]} -> {ring_names[(i + 1) % ring_n]}" for i in range(ring_n)]
    ring_entry = [ring_names[t * ring_n // tokens] for t in range(tokens)]
    sinks = [f"s{i}" for i in range(fan_p)]
    fan_agents = {"sender": "fan_sender", **{s: "fan_sink" for s in sinks}}

    def fan_yaml(name: str) -> str:
        return _yaml(name, fan_agents, [f"sender -> {', '.join(sinks)}"], ["sender"])

    plans: list[tuple[str, Any, Any]] = [
        (
            "pingpong",
            lambda: _coral(url, folder, "bench-pp", _yaml(
                "bench-pp", {"pp_a": "pp_a", "pp_b": "pp_b"}, ["pp_a <-> pp_b"], ["pp_a"]),
                [["pp_a"], ["pp_b"]], {"rounds": rounds}, server_pid),
            lambda js, confirm: _floor_pingpong(js, confirm, rounds),
        ),
        (
            "ring",
            lambda: _coral(url, folder, "bench-ring",
                _yaml("bench-ring", ring_agents, ring_edges, ring_entry),
                _split(ring_names, 2), {"hops_per_token": hops // tokens}, server_pid),
            lambda js, confirm: _floor_ring(js, confirm, ring_n, tokens, hops),
        ),
        (
            "fanout",
            lambda: _coral(url, folder, "bench-fan", fan_yaml("bench-fan"),
                _split(["sender", *sinks], 2), {"to": sinks, "messages": fan_m}, server_pid),
            lambda js, confirm: _floor_fanout(js, confirm, fan_p, fan_m),
        ),
    ]  # fmt: skip
    async with _bare_nats(url) as floor_js:
        for name, coral, floor in plans:
            if name not in only:
                continue
            cs, fs, fcs = [], [], []
            for _ in range(repeat):
                fs.append(await _floor_cpu(floor(floor_js, False), server_pid))
                fcs.append(await _floor_cpu(floor(floor_js, True), server_pid))
                cs.append(await coral())
            c, fl, fc = _medians(cs), _medians(fs), _medians(fcs)
            c["stop_reason"] = cs[0]["stop_reason"]
            ratio = c["deliveries_per_s"] / fl["deliveries_per_s"]
            ratio_c = c["deliveries_per_s"] / fc["deliveries_per_s"]
            out[name] = {
                "coral": c, "floor": fl, "ratio": ratio,
                "floor_confirmed_acks": fc, "ratio_confirmed_acks": ratio_c, "runs": repeat,
            }  # fmt: skip
            log(
                f"{name:9s} coral {c['deliveries_per_s']:9.0f} deliveries/s "
                f"p50 {c['p50_us'] / 1000:7.2f} ms p99 {c['p99_us'] / 1000:7.2f} ms | floor "
                f"{fl['deliveries_per_s']:9.0f}/s p50 {fl['p50_us'] / 1000:6.2f} ms "
                f"p99 {fl['p99_us'] / 1000:6.2f} ms | {ratio:.2f}x floor "
                f"({c['deliveries']} deliveries, {c['stop_reason']})"
            )
            log(f"{'':9s} CPU ms per delivery: coral {_cpu_text(c['cpu_ms'])} | "
                f"floor {_cpu_text(fl['cpu_ms'])}")  # fmt: skip
            log(f"{'':9s} floor with confirmed acks: {fc['deliveries_per_s']:.0f}/s "
                f"p50 {fc['p50_us'] / 1000:.2f} ms p99 {fc['p99_us'] / 1000:.2f} ms | "
                f"{ratio_c:.2f}x")  # fmt: skip
        by_workers: dict[str, float] = {}
        for k in scaling if "fanout" in only else ():
            runs = []
            for _ in range(repeat):
                runs.append(await _coral(url, folder, f"bench-fan{k}", fan_yaml(f"bench-fan{k}"),
                                         _split(["sender", *sinks], k),
                                         {"to": sinks, "messages": fan_m}, server_pid))  # fmt: skip
            dps = median([r["deliveries_per_s"] for r in runs])
            by_workers[str(k)] = dps
            log(f"fanout over {k} worker process(es): {dps:9.0f} deliveries/s")
        out["fanout_scaling"] = by_workers
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coral-graph bench --nats", description=__doc__)
    parser.add_argument("--nats", nargs="?", const="", default="", help="a NATS URL "
                        "(default: start a private nats-server on 127.0.0.1)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--scaling", default="1,2,4", help="worker counts for fanout")
    parser.add_argument("--only", default="pingpong,ring,fanout", help="comma-separated "
                        "workloads (pingpong, ring, fanout)")  # fmt: skip
    args, _ = parser.parse_known_args(argv)
    scaling = [int(k) for k in args.scaling.split(",") if k.strip()]
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in ("pingpong", "ring", "fanout")]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}: choose from pingpong, ring, fanout")
    sizes = {
        "rounds": 100, "ring_agents": 4, "ring_tokens": 4, "ring_hops": 400,
        "fanout_participants": 8, "fanout_messages": 50,
    }  # fmt: skip
    repeat = args.repeat
    if args.quick:
        sizes = {k: max(2, v // 4) for k, v in sizes.items()}
        sizes["ring_tokens"] = sizes["ring_agents"] = 2
        repeat = 1

    def log(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="coral-bench-nats-") as tmp:
        folder = Path(tmp)
        server = None if args.nats else _Server(folder / "js")
        url = args.nats or (server.url if server else "")
        log(f"coral-graph bench --nats on {url} (sizes {sizes}, {repeat} runs, medians)")
        try:
            pid = server.proc.pid if server is not None else None
            out = asyncio.run(_bench(url, folder, sizes, repeat, log, scaling, pid, only))
        finally:
            if server is not None:
                server.close()
    print(json.dumps({"bench": "nats", "sizes": sizes, **out}))
    return 0
