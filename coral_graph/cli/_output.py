"""What ``run`` and ``resume`` print: the live view while a run goes, then the result.

The result block is the same for both commands: the whole answer (never cut: on a
terminal it is printed as plain text under a rule, so the terminal wraps it and a
copy gives it back intact), the stop line, the failures, the error, where the run
was saved, and at last a store problem in one line. Every text that comes from the
run goes through :func:`coral_graph.cli._text.safe`.

"Messages" means the same everywhere (the live line, the summary, ``runs``,
``show``, ``--json``, the web viewer): every message of the run's transcript, the
task included — what ``show`` lists. ``messages_sent`` (in ``--json``) leaves the
task out: it is what ``budgets.max_messages`` limits and what
``RunResult.messages`` and the store's ``runs.messages`` column hold.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from coral_graph.cli._text import json_text, one_line, safe, safe_markup

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from coral_graph import AgentUsage, Event, RunResult

__all__ = ["Progress", "failures_line", "message_count", "print_result", "result_json"]


def message_count(result: RunResult) -> int:
    """The messages of the run's transcript, the task included (see the module doc)."""
    return sum(len(th) for th in result.threads.values())


def failures_line(usage: dict[str, AgentUsage] | dict[str, dict[str, Any]]) -> str | None:
    """``failed: 6 LLM calls (voter-a 2, voter-b 4), 1 turn (tally 1)``, or None
    when nothing failed. ``usage`` is per agent, as objects or as dicts."""
    kinds = (("llm_errors", "LLM call"), ("tool_errors", "tool call"), ("errors", "turn"))
    parts = []
    for key, word in kinds:
        per = []
        total = 0
        for name, u in sorted(usage.items()):
            n = int(u.get(key, 0) if isinstance(u, dict) else getattr(u, key, 0))
            if n:
                per.append(f"{safe(name)} {n}")
                total += n
        if total:
            parts.append(f"{total} {word}{'s' if total != 1 else ''} ({', '.join(per)})")
    return "failed: " + ", ".join(parts) if parts else None


def result_json(result: RunResult, **extra: Any) -> str:
    """The result as one JSON line (``extra`` keys first); ``messages`` counts the
    transcript (the task included), ``messages_sent`` what the agents sent."""
    data = {**extra, **result.to_dict()}
    data["messages"] = message_count(result)
    data["messages_sent"] = result.messages
    return json_text(data)


def print_result(
    result: RunResult,
    *,
    db_path: str | None,
    explicit_db: bool,
    tty: bool,
    store_problem: str | None = None,
) -> None:
    """The result block of ``run`` and ``resume`` on stdout (see the module doc)."""
    total = result.total
    summary = (
        f"stop: {result.stop_reason} · {message_count(result)} messages · "
        f"{total.tokens:,} tokens · ${result.cost_usd:.4f} · {result.duration_s:.1f}s"
    )
    failed = failures_line(result.usage)
    if tty:
        from rich.rule import Rule

        out = _stdout_console()
        if result.answer is not None:
            out.print(Rule("answer", align="left", style="dim"))
            out.file.flush()
            print(safe(result.answer), flush=True)
        else:
            out.print(f"[yellow]no answer[/] ({safe_markup(result.stop_reason)})")
        if result.error:
            out.print(f"[red]error:[/] {safe_markup(one_line(result.error))}")
        if failed:
            out.print(f"[red]{safe_markup(failed)}[/]")
        out.print(f"[dim]{safe_markup(summary)}[/]")
        out.file.flush()
    else:
        if result.answer is not None:
            print(safe(result.answer))
        else:
            print(f"no answer ({safe(result.stop_reason)})")
        if result.error:
            print(f"error: {one_line(result.error)}")
        if failed:
            print(failed)
        print(summary)
    if db_path is not None and store_problem is None:
        flag = f" --db {db_path}" if explicit_db else ""
        print(
            f"run: {result.run_id} saved in {db_path}; open it with: "
            f"coral-graph show {result.run_id}{flag}"
        )
    elif db_path is None:
        print(f"run: {result.run_id} (not recorded)")
    if result.stop_reason == "cancelled":
        print("interrupted: the run was cancelled", file=sys.stderr)
    sys.stdout.flush()
    if store_problem is not None:
        print(f"store: {one_line(store_problem)}", file=sys.stderr)


def _stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


# -- live progress -------------------------------------------------------------------


LIVE_LOG_SOURCES = frozenset({"mcp", "watchdog"})
"""The ``agent_logged`` sources the live view of ``run`` prints."""


class Progress:
    """Counts what a run does, from its events. ``on_event`` is on the runtime's hot
    path: it only updates counters and queues lines; a timer task draws them."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.threads = 0
        self.messages = 0
        self.tokens = 0
        self.cost = 0.0
        self.llm_calls = 0
        self.llm_errors = 0
        self.tool_errors = 0
        self.errors = 0
        self.queued: dict[str, int] = {}
        self.lines: deque[tuple[str, str, tuple[str, ...], str]] = deque()
        self.dropped = 0

    def _line(self, what: str, who: str, mentions: tuple[str, ...], text: str) -> None:
        if len(self.lines) < 200:
            self.lines.append((what, who, mentions, text))
        else:
            self.dropped += 1

    def on_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "message_sent":
            msg = event.message  # type: ignore[union-attr]
            self.messages += 1
            for m in msg.mentions:
                if m != "user":
                    self.queued[m] = self.queued.get(m, 0) + 1
            self._line("msg", msg.sender, msg.mentions, msg.content)
        elif kind == "delivery_handled":
            agent = event.agent  # type: ignore[union-attr]
            self.queued[agent] = max(0, self.queued.get(agent, 0) - 1)
        elif kind == "thread_created":
            self.threads += 1
        elif kind == "llm_called":
            self.llm_calls += 1
            self.tokens += event.prompt_tokens + event.completion_tokens  # type: ignore[union-attr]
            self.cost += event.cost_usd  # type: ignore[union-attr]
            if event.outcome != "ok":  # type: ignore[union-attr]
                self.llm_errors += 1
                why = event.error or event.outcome  # type: ignore[union-attr]
                self._line("err", event.agent, (), f"LLM call failed: {why}")  # type: ignore[union-attr]
        elif kind == "tool_called":
            if not event.ok:  # type: ignore[union-attr]
                self.tool_errors += 1
        elif kind == "agent_errored":
            self.errors += 1
            err = event
            self._line("err", str(err.agent), (), f"{err.error_type}: {err.error}")  # type: ignore[union-attr]
        elif kind == "agent_logged" and event.source in LIVE_LOG_SOURCES:  # type: ignore[union-attr]
            # MCP endpoints (the URL an external agent connects at), connections,
            # blocked-loop notices; a process's own output is left to `show`.
            src = event.source  # type: ignore[union-attr]
            self._line("log", event.agent, (src,), event.text)  # type: ignore[union-attr]

    def busy(self) -> list[str]:
        return [a for a, n in self.queued.items() if n > 0]

    def status(self) -> RenderableType:
        from rich.text import Text

        busy = ", ".join(safe(b) for b in self.busy()) or "-"
        t = Text()
        t.append(f"{time.monotonic() - self.started:6.1f}s", style="bold")
        t.append(f"  threads {self.threads}  messages {self.messages}  ")
        t.append(f"tokens {self.tokens:,}  ${self.cost:.4f}  ")
        failed = [
            f"{n} {word}"
            for n, word in (
                (self.llm_errors, "LLM calls"),
                (self.tool_errors, "tool calls"),
                (self.errors, "turns"),
            )
            if n
        ]
        if failed:
            t.append(f"failed: {', '.join(failed)}  ", style="red")
        t.append("busy: ", style="dim")
        t.append(busy, style="cyan")
        return t

    def flush_lines(self, console: Console) -> None:
        while self.lines:
            what, who, mentions, text = self.lines.popleft()
            short = one_line(text, 160)
            if what == "err":
                console.print(f"[red]✗ {safe_markup(who)}: {safe_markup(short)}[/]")
                continue
            if what == "log":  # whole: a URL cut short is no use
                src = safe_markup(mentions[0] if mentions else "")
                line = safe_markup(one_line(text))
                console.print(f"[dim]▸ {safe_markup(who)} \\[{src}] {line}[/]", soft_wrap=True)
                continue
            to = " ".join("@" + safe(m) for m in mentions)
            console.print(
                f"[bold]{safe_markup(who)}[/] [cyan]{safe_markup(to)}[/] {safe_markup(short)}"
            )
        if self.dropped:
            console.print(f"[dim]… {self.dropped} more[/]")
            self.dropped = 0
