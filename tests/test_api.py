"""The public API: a sorted, complete ``__all__`` and a light ``import coral_graph``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import coral_graph as cg

# Names loaded lazily (they import heavier modules on first use).
LAZY = {"GraphSpec", "LLMAgent", "LoadedGraph", "load_graph"}

# The names DESIGN.md's "Public Python API" section promises.
PROMISED = {
    "AgentGraph",
    "Agent",
    "agent",
    "AgentContext",
    "Message",
    "Thread",
    "open_runtime",
    "Runtime",
    "run",
    "load_graph",
    "LLMAgent",
    "CoralError",
    "ConfigError",
    "UnknownAgentError",
    "EdgeNotAllowedError",
    "NotAParticipantError",
    "ThreadClosedError",
    "Budgets",
}


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 ("isort-style"): CONSTANTS, then Classes, then everything else.
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted_and_unique() -> None:
    assert list(cg.__all__) == sorted(cg.__all__, key=_isort_key)
    assert len(set(cg.__all__)) == len(cg.__all__)


def test_all_matches_what_is_exported() -> None:
    public = {
        name
        for name, value in vars(cg).items()
        if not name.startswith("_") and not isinstance(value, type(sys))
    }
    public |= {"__version__"}
    public -= {"annotations", "TYPE_CHECKING", "Any"}
    assert set(cg.__all__) - LAZY == public - LAZY


def test_every_name_in_all_resolves() -> None:
    for name in cg.__all__:
        if name in LAZY:
            continue
        assert getattr(cg, name) is not None, name


def test_design_names_are_public() -> None:
    assert set(cg.__all__) >= PROMISED


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = cg.no_such_name  # type: ignore[attr-defined]


def test_error_tree() -> None:
    protocol = [
        cg.UnknownAgentError,
        cg.UnknownThreadError,
        cg.EdgeNotAllowedError,
        cg.NotAParticipantError,
        cg.ThreadClosedError,
        cg.InvalidMentionError,
        cg.ContentTooLargeError,
        cg.InboxFullError,
        cg.ConcurrentWaitError,
    ]
    for err in protocol:
        assert issubclass(err, cg.ProtocolError), err
    for err in (
        cg.ConfigError,
        cg.ProtocolError,
        cg.BudgetExceededError,
        cg.TurnTimeoutError,
        cg.RuntimeClosedError,
        cg.LLMError,
    ):
        assert issubclass(err, cg.CoralError), err
    assert issubclass(cg.AgentNameError, cg.ConfigError)
    assert issubclass(cg.DuplicateAgentError, cg.ConfigError)
    for name in cg.__all__:
        if name.endswith("Error"):
            assert issubclass(getattr(cg, name), cg.CoralError), name


def test_error_attributes() -> None:
    edge = cg.EdgeNotAllowedError("a", "b")
    assert (edge.sender, edge.recipient) == ("a", "b")
    unknown = cg.UnknownAgentError("solvr", ["solver", "planner"])
    assert (unknown.name, unknown.suggestion) == ("solvr", "solver")
    budget = cg.BudgetExceededError("messages", 10)
    assert (budget.budget, budget.limit) == ("messages", 10)
    assert "Budgets" in str(budget)
    timeout = cg.TurnTimeoutError("a", 1.5)
    assert (timeout.agent, timeout.timeout_s) == ("a", 1.5)
    config = cg.ConfigError("bad", path="g.yaml", line=3, field="agents.a")
    assert (config.path, config.line, config.field) == ("g.yaml", 3, "agents.a")


def test_version() -> None:
    assert isinstance(cg.__version__, str)
    assert cg.__version__.count(".") >= 2


def test_import_is_light() -> None:
    code = textwrap.dedent(
        """
        import sys
        import coral_graph
        # networkx too: it loads with the first AgentGraph (it was half the import).
        heavy = [m for m in ("litellm", "starlette", "nats", "uvicorn", "llama_cpp", "networkx")
                 if m in sys.modules]
        print(",".join(heavy))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_core_run_does_not_import_heavy_modules() -> None:
    code = textwrap.dedent(
        """
        import sys
        import coral_graph as cg

        @cg.agent
        async def echo(ctx, message):
            await ctx.send_message(message.thread_id, message.content, ["user"])

        g = cg.AgentGraph()
        g.add_agent("echo", echo)
        assert cg.run(g, "hi", entry=["echo"]).answer == "hi"
        import coral_graph.mcp  # the package is light: the SDK loads when a server starts
        heavy = ("litellm", "starlette", "uvicorn", "nats", "mcp", "mcp_types")
        print(",".join(m for m in heavy if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


# -- the backend: asyncio (uvloop optional), stated and checked -------------------


def _echo_graph() -> cg.AgentGraph:
    @cg.agent
    async def echo(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "echo " + message.content, ["user"])

    g = cg.AgentGraph()
    g.add_agent("echo", echo)
    return g


def test_on_trio_open_runtime_refuses_clearly() -> None:
    import anyio

    pytest.importorskip("trio")

    async def main() -> None:
        async with cg.open_runtime(_echo_graph()):
            pass  # pragma: no cover - refused before

    with pytest.raises(cg.RuntimeClosedError, match="runs on asyncio, not on trio"):
        anyio.run(main, backend="trio")


def test_runs_on_uvloop() -> None:
    pytest.importorskip("uvloop")

    async def main() -> cg.RunResult:
        import asyncio

        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        async with cg.open_runtime(_echo_graph()) as rt:
            return await rt.run("hi", entry=["echo"])

    assert cg.run_async(main, use_uvloop=True).answer == "echo hi"
