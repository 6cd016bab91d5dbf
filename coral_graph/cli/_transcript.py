"""A stored run as text lines, for ``coral-graph show``.

Built for size: 100,000 messages render in well under a second, because each line
is a plain string (ANSI styles added by hand when colour is on) instead of a Rich
renderable, and nothing is hard-wrapped — the terminal wraps long lines itself, and
a pipe gets each line whole. Every text from the run goes through
:func:`coral_graph.cli._text.safe`.

Failures are shown where they happened, between the messages (a failed model
call, a turn that raised), and counted per agent at the end.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from coral_graph.cli._output import failures_line
from coral_graph.cli._text import UNSAFE, columns, one_line, safe

__all__ = ["Style", "dur", "fold_tools", "render_messages", "render_totals", "when"]


def when(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A local time (``-`` when unknown)."""
    return datetime.fromtimestamp(ts).strftime(fmt) if ts else "-"


def dur(s: float | None) -> str:
    """A duration for people: 320ms, 4.2s, 3.5m."""
    if s is None:
        return "-"
    return f"{s * 1000:.0f}ms" if s < 1 else f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}m"


class Style:
    """ANSI styles, or nothing when ``color`` is off (a pipe, ``--plain``, NO_COLOR)."""

    def __init__(self, color: bool) -> None:
        self.color = color and not os.environ.get("NO_COLOR")

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text

    def bold(self, t: str) -> str:
        return self(t, "1")

    def dim(self, t: str) -> str:
        return self(t, "2")

    def red(self, t: str) -> str:
        return self(t, "31")

    def who(self, t: str) -> str:
        return self(t, "1;36")

    def to(self, t: str) -> str:
        return self(t, "35")


def fold_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Tool calls by the message they belong to: the one they produced, else the
    next message of the same agent."""
    by_msg: dict[str, list[dict[str, Any]]] = {}
    ids = {m["message_id"] for m in messages}
    later: dict[str, tuple[list[int], list[str]]] = {}
    for m in messages:
        seqs, mids = later.setdefault(m["sender"], ([], []))
        seqs.append(m["gseq"])
        mids.append(m["message_id"])
    for tc in tools:
        mid = tc.get("message_id")
        if mid is None or mid not in ids:
            mid = None
            got = later.get(tc["agent"])
            if got is not None:
                i = bisect.bisect_right(got[0], tc["seq"])
                if i < len(got[0]):
                    mid = got[1][i]
        if mid is not None:
            by_msg.setdefault(mid, []).append(tc)
    return by_msg


def _usage(meta: dict[str, Any]) -> str:
    parts = []
    if meta.get("model"):
        parts.append(safe(meta["model"]))
    tokens = meta.get("tokens")
    if tokens is None and ("prompt_tokens" in meta or "completion_tokens" in meta):
        tokens = (meta.get("prompt_tokens") or 0) + (meta.get("completion_tokens") or 0)
    if isinstance(tokens, int | float) and tokens:
        parts.append(f"{tokens:,} tokens")
    cost = meta.get("cost_usd", meta.get("cost"))
    if isinstance(cost, int | float) and cost:
        parts.append(f"${cost:.4f}")
    lat = meta.get("latency_s", meta.get("latency"))
    if isinstance(lat, int | float) and lat:
        parts.append(dur(lat))
    return " · ".join(parts)


class _Heads:
    """The pieces of message headers that repeat (senders, mentions, threads, the
    time to the second), each made safe and styled once."""

    def __init__(self, st: Style, threads: dict[str, str]) -> None:
        self.st = st
        self.threads = threads
        self.who: dict[str, str] = {}
        self.to: dict[tuple[str, ...], str] = {}
        self.where: dict[str, str] = {}
        self.second: dict[int, str] = {}

    def head(self, m: dict[str, Any]) -> str:
        st = self.st
        ts = m["ts"]
        if ts:
            sec = int(ts)
            hms = self.second.get(sec)
            if hms is None:
                hms = self.second[sec] = datetime.fromtimestamp(sec).strftime("%H:%M:%S")
            ms = min(round((ts - sec) * 1_000_000) // 1000, 999)  # as strftime's %f
            clock = f"{hms}.{ms:03d}"
        else:
            clock = "-"
        sender = m["sender"]
        who = self.who.get(sender)
        if who is None:
            who = self.who[sender] = st.who(safe(sender))
        ms = tuple(m["mentions"])
        to = self.to.get(ms)
        if to is None:
            names = " ".join("@" + safe(x) for x in ms)
            to = self.to[ms] = " " + st.to("→ " + names) if names else ""
        tid = m["thread_id"]
        where = self.where.get(tid)
        if where is None:
            where = self.where[tid] = f"[{safe(tid)} {safe(self.threads.get(tid, ''))} #"
        return f"{st.dim(clock)}  {who}{to}  {st.dim(where + str(m['seq']) + ']')}"


def _message(heads: _Heads, m: dict[str, Any], tools: list[dict[str, Any]], out: list[str]) -> None:
    st = heads.st
    out.append(heads.head(m))
    content = m["content"] or ""
    if UNSAFE.search(content) is not None:
        content = safe(content)
    if "\n" in content:
        out.extend("    " + line for line in content.split("\n"))
    else:
        out.append("    " + content)
    if tools:
        folded = ", ".join(
            f"{safe(tc['tool'])} {'ok' if tc['ok'] else 'failed'} {dur(tc['duration_s'])}"
            for tc in tools
        )
        n = len(tools)
        out.append("    " + st.dim(f"▸ {n} tool call{'s' * (n != 1)}: {folded}"))
    meta = m["metadata"]
    if meta and isinstance(meta, dict):
        usage = _usage(meta)
        if usage:
            out.append("    " + st.dim(f"▸ {usage}"))


def _aside(st: Style, f: dict[str, Any]) -> str:
    """A line between the messages: an agent's log line or a delivery a worker
    process handled (dim), or a failure (red)."""
    if "worker" in f:  # a delivery (see StoreReader.deliveries)
        line = (
            f"  ▸ {safe(f['message_id'])} handled by {safe(f['agent'])} on {safe(f['worker'])}"
            f" ({'turn' if f['via'] == 'handle' else 'wait'}, {dur(f['duration_s'])})"
        )
        return st.dim(line) if f["ok"] else st.red(line + " failed")
    if "source" in f:  # an agent_logged event
        return st.dim(f"  ▸ {safe(f['agent'])} [{safe(f['source'])}] {one_line(f['text'])}")
    if "outcome" in f:  # a model call
        why = f.get("error") or f.get("outcome")
        return st.red(f"  ✗ {safe(f['agent'])}: LLM call failed: {one_line(why)}")
    return st.red(
        f"  ✗ {safe(f['agent'])}: {safe(f['error_type'])}: {one_line(f['error'])}"
        f" ({safe(f['action'])})"
    )


def render_messages(
    st: Style,
    messages: list[dict[str, Any]],
    tools: dict[str, list[dict[str, Any]]],
    threads: dict[str, str],
    failures: Iterable[dict[str, Any]] = (),
    logs: Iterable[dict[str, Any]] = (),
    handled: Iterable[dict[str, Any]] = (),
) -> list[str]:
    """The lines of ``messages``, with ``failures`` (failed model calls and agent
    errors), ``logs`` (agent_logged events) and ``handled`` (deliveries, with the
    worker process that handled each), each with its event ``seq``, placed where
    they happened."""
    fails = sorted([*failures, *logs, *handled], key=lambda f: f["seq"])
    heads = _Heads(st, threads)
    out: list[str] = []
    i = 0
    nxt = fails[0]["seq"] if fails else None
    no_tools: list[dict[str, Any]] = []
    for m in messages:
        if nxt is not None and nxt < m["gseq"]:
            while i < len(fails) and fails[i]["seq"] < m["gseq"]:
                out.append(_aside(st, fails[i]))
                i += 1
            nxt = fails[i]["seq"] if i < len(fails) else None
        _message(heads, m, tools.get(m["message_id"], no_tools) if tools else no_tools, out)
    out.extend(_aside(st, f) for f in fails[i:])
    return out


def render_totals(st: Style, run: dict[str, Any], usage: dict[str, dict[str, Any]]) -> list[str]:
    """The per-agent table, the run's summary line, its error and what failed."""
    header = ["agent", "turns", "sent", "deliveries", "failed turns", "llm calls"]
    header += ["failed calls", "failed tools", "tokens", "cost"]
    rows = [
        [
            safe(name),
            str(u.get("turns", 0)),
            str(u.get("messages_sent", 0)),
            str(u.get("deliveries", 0)),
            str(u.get("errors", 0)),
            str(u.get("llm_calls", 0)),
            str(u.get("llm_errors", 0)),
            str(u.get("tool_errors", 0)),
            f"{u.get('tokens', 0):,}",
            f"${u.get('cost_usd', 0.0):.4f}",
        ]
        for name, u in sorted(usage.items())
    ]
    out = ["", st.dim("per agent")]
    table = columns(header, rows, right=header[1:])
    out.append(st.bold(table[0]))
    out.extend(table[1:])
    stop = f" ({safe(run['stop_reason'])})" if run.get("stop_reason") else ""
    out.append(
        f"{run['run_id']}: {safe(run['status'])}{stop}"
        f" · {run.get('messages') or 0} messages · {run.get('tokens') or 0:,} tokens"
        f" · ${run.get('cost_usd') or 0:.4f} · {dur(run.get('duration_s'))}"
    )
    if run.get("error"):
        out.append(st.red(f"error: {one_line(run['error'])}"))
    failed = failures_line(usage)
    if failed:
        out.append(st.red(failed))
    return out
