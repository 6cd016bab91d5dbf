"""The CLI as a new user meets it: failures in plain sight, readable help, safe text,
whole answers, listings for scripts. In-process with typer's runner, and as real
subprocesses where the terminal or a pipe matters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_stub import OpenAIStub, error
from typer.main import get_command
from typer.testing import CliRunner

from coral_graph.cli import EXIT_BAD_INPUT, EXIT_NO_ANSWER, EXIT_OK, app

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "coral-graph"
VOTING = ROOT / "configs" / "voting.yaml"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORAL_DB", str(tmp_path / "runs.db"))
    return tmp_path


# -- help and version ------------------------------------------------------------------


def _commands() -> list[str]:
    commands: dict[str, Any] = getattr(get_command(app), "commands", {})
    assert "run" in commands
    return [name for name, cmd in commands.items() if not cmd.hidden]


def test_version() -> None:
    import coral_graph

    code, out, _ = invoke("--version")
    assert code == EXIT_OK
    assert out.strip() == f"coral-graph {coral_graph.__version__}"


@pytest.mark.parametrize("name", _commands())
def test_help_shows_readable_types(name: str) -> None:
    code, out, _ = invoke(name, "--help", env={"COLUMNS": "200"})
    assert code == EXIT_OK
    # Typer's own labels are Python annotations: <bool>, <str>, <list[Path]>, {graph}.
    assert not re.search(r"<[a-zA-Z_.\[\]|]+>", out), out
    assert "{" not in out.split("\n\n")[0] + out.splitlines()[1], out


def test_bench_help_lists_its_options() -> None:
    _, out, _ = invoke("bench", "--help", env={"COLUMNS": "200"})
    for option in ("--repeat", "--only", "--quick", "--json", "--store", "--tokens"):
        assert re.search(rf"│ {option}\b", out), option


def test_top_level_help_documents_the_exit_codes() -> None:
    _, out, _ = invoke("--help", env={"COLUMNS": "200"})
    for code in ("0 answered", "1 bad input", "2 no answer", "3 the store failed", "130"):
        assert code in out


def test_top_level_help_sums_up_each_command_in_one_flowing_line() -> None:
    """Each command's summary is its docstring's first paragraph as one line (the
    terminal wraps it), not cut where the docstring's lines break."""
    import inspect

    _, out, _ = invoke("--help", env={"COLUMNS": "400"})
    commands = get_command(app).commands  # type: ignore[attr-defined]
    for name in _commands():
        cmd = commands[name]
        first = inspect.cleandoc(cmd.callback.__doc__ or "").split("\n\n")[0]
        line = " ".join((cmd.short_help or first).split())
        assert re.search(rf"│ {name} +{re.escape(line)} +│", out), (name, line, out)


# -- failures in plain sight -------------------------------------------------------------


def test_every_llm_call_refused_names_the_cause_everywhere(
    project: Path, openai_stub: OpenAIStub
) -> None:
    """The voting config on a server that answers 401 to every call: the stop reason
    is ``error`` and says why, the counts show each failed call and turn, and the
    stored run says the same in ``runs`` and ``show``."""
    openai_stub.script("m401", [error(401, "Incorrect API key provided: sk-no")] * 10)
    args = ["--model", "openai/m401", "--set", f"defaults.api_base={openai_stub.base_url}"]
    code, out, err = invoke("run", str(VOTING), *args, "--json")
    assert code == EXIT_NO_ANSWER, err
    data = json.loads(out)
    assert data["stop_reason"] == "error"
    assert data["error"].startswith("all 3 LLM calls failed: openai/m401: ")
    assert "Incorrect API key provided" in data["error"]
    assert data["failures"] == {"llm_calls": 3, "tool_calls": 0, "turns": 3}
    for voter in ("voter-a", "voter-b", "voter-c"):
        assert (data["usage"][voter]["llm_errors"], data["usage"][voter]["errors"]) == (1, 1)
    run_id = data["run_id"]

    code, out, _ = invoke("run", str(VOTING), *args)
    assert code == EXIT_NO_ANSWER
    lines = out.splitlines()
    assert lines[0] == "no answer (error)"
    assert lines[1].startswith("error: all 3 LLM calls failed: openai/m401: ")
    assert lines[2] == (
        "failed: 3 LLM calls (voter-a 1, voter-b 1, voter-c 1), "
        "3 turns (voter-a 1, voter-b 1, voter-c 1)"
    )

    _, out, _ = invoke("show", run_id, "--json")
    shown = json.loads(out)
    assert shown["run"]["stop_reason"] == "error"
    assert shown["run"]["error"] == data["error"]
    assert sum(u["llm_errors"] for u in shown["usage"].values()) == 3
    assert len(shown["llm_errors"]) == 3
    _, out, _ = invoke("show", run_id)
    assert "all 3 LLM calls failed" in out
    assert "failed: 3 LLM calls (voter-a 1, voter-b 1, voter-c 1)" in out
    assert out.count("LLM call failed: openai/m401") == 3


def test_a_missing_key_is_refused_before_the_first_message(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, out, err = invoke("run", str(VOTING), "--model", "openai/gpt-4o-mini")
    assert code == EXIT_BAD_INPUT
    assert err.startswith("error: Missing credentials for openai (set OPENAI_API_KEY)")
    assert out == ""
    code, _, err = invoke("run", str(VOTING), "--model", "gpt-unheard-of")
    assert code == EXIT_BAD_INPUT
    assert 'model "gpt-unheard-of": litellm does not know its provider' in err
    assert "openai/gpt-unheard-of" in err
    assert not (project / "runs.db").exists()  # refused before anything: no store opened


def test_the_python_api_refuses_a_missing_key_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import coral_graph as cg
    from coral_graph.llm import LLMAuthenticationError

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    graph = cg.AgentGraph()
    graph.add_agent("a", cg.LLMAgent("anthropic/claude-3-haiku-20240307"))
    with pytest.raises(LLMAuthenticationError, match=r"set ANTHROPIC_API_KEY"):
        cg.run(graph, "hi", entry=["a"])


def test_subprocess_run_without_a_key(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [str(CLI), "run", str(VOTING), "--model", "openai/gpt-4o-mini"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.splitlines() == [
        "error: Missing credentials for openai (set OPENAI_API_KEY); model openai/gpt-4o-mini"
    ]


# -- helpers -----------------------------------------------------------------------------

ECHO_PY = textwrap.dedent("""
    async def echo(ctx, message):
        await ctx.send_message(message.thread_id, message.content, ["user"])
""")


# -- the Python API records runs ------------------------------------------------------


def _echo_graph() -> Any:
    import coral_graph as cg

    @cg.agent
    async def echo(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "echo: " + message.content, ["user"])

    graph = cg.AgentGraph()
    graph.add_agent("echo", echo)
    return graph


def test_python_run_is_written_where_coral_db_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coral_graph as cg
    from coral_graph.store import SQLiteStore, open_reader

    db = tmp_path / "env.db"
    monkeypatch.setenv("CORAL_DB", str(db))
    result = cg.run(_echo_graph(), "hi", entry=["echo"])
    with open_reader(db) as rd:
        row = rd.run(result.run_id)
        assert (row["status"], row["answer"]) == ("finished", "echo: hi")
        assert row["messages"] == result.messages == 1

    # store=False records nothing; a store given wins over CORAL_DB.
    unrecorded = cg.run(_echo_graph(), "not kept", entry=["echo"], store=False)
    other = tmp_path / "given.db"
    with SQLiteStore(other) as store:
        given = cg.run(_echo_graph(), "kept there", entry=["echo"], store=store)
    with open_reader(db) as rd:
        assert [r["run_id"] for r in rd.list_runs()] == [result.run_id]
    with open_reader(other) as rd:
        assert [r["run_id"] for r in rd.list_runs()] == [given.run_id]
    assert unrecorded.answer == "echo: not kept"

    async def main() -> str:
        async with cg.open_runtime(_echo_graph()) as rt:
            return (await rt.run("async", entry=["echo"])).run_id

    rid = cg.run_async(main)
    with open_reader(db) as rd:
        assert rd.run(rid)["answer"] == "echo: async"


def test_python_run_without_coral_db_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coral_graph as cg

    monkeypatch.delenv("CORAL_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cg.run(_echo_graph(), "hi", entry=["echo"]).answer == "echo: hi"
    assert list(tmp_path.iterdir()) == []


# -- terminal escapes never reach the terminal ------------------------------------------

PAYLOADS = [
    "\x1b]0;pwned title\x07",
    "\x1b[2J\x1b[H cleared",
    "\x1b]52;c;cm0gLXJmIH4=\x07",
    "\x1b[8mhidden\x1b[0m",
    "over\rwrite",
    "\x9b31mC1 CSI\x9d0;osc\x9c",
    "bidi \u202eevil\u202c \u2066iso\u2069 \u200fmark",
    "bell\x07 back\x08 nul\x00 del\x7f",
    "[red]markup[/red] [bold]x",
    "line1\u2028line2\u2029",
]
_C0_C1 = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def assert_clean(out: str) -> None:
    bad = _C0_C1.findall(out)
    assert not bad, f"raw control characters {bad!r} in {out!r}"


def _payload_strategy() -> Any:
    from hypothesis import strategies as st

    anything = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
    return st.builds(lambda a, b, c: "x" + a + b + c, anything, st.sampled_from(PAYLOADS), anything)


BAD_PY = textwrap.dedent("""
    async def echo(ctx, message):
        await ctx.send_message(message.thread_id, message.content, ["user"],
                               metadata={"model": message.content[:30]})

    async def bad(ctx, message):
        raise ValueError(message.content)
""")


@pytest.fixture(scope="module")
def escapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """One store for every example: a graph whose answer is the task and whose other
    agent raises with it."""
    from coral_graph.config import load_graph
    from coral_graph.store import SQLiteStore

    d = tmp_path_factory.mktemp("escapes")
    (d / "bots.py").write_text(BAD_PY)
    (d / "g.yaml").write_text(
        "agents:\n  echo: {python: 'bots.py:echo'}\n  bad: {python: 'bots.py:bad'}\n"
        "entry: [bad, echo]\nanswer_by: [echo]\n"
    )
    with SQLiteStore(d / "e.db") as store:
        yield d, (load_graph(d / "g.yaml"), store)


def test_no_control_character_of_a_run_reaches_the_terminal(
    escapes: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hypothesis import HealthCheck, given, settings

    import coral_graph as cg

    d, (lg, store) = escapes
    monkeypatch.chdir(d)
    db = str(d / "e.db")

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(_payload_strategy())
    def check(text: str) -> None:
        result = cg.run(lg.graph, text, entry=["bad", "echo"], answer_by=["echo"], store=store)
        assert result.answer == text
        store.flush()
        for args in (
            ["show", result.run_id, "--db", db],
            ["show", result.run_id, "--db", db, "--plain"],
            ["show", result.run_id, "--db", db, "--json"],
            ["show", result.run_id, "--db", db, "--agent", text],
            ["runs", "--db", db, "-n", "3"],
            ["runs", "--db", db, "-n", "3", "--json"],
            ["run", "g.yaml", "--task", text, "--no-store"],
            ["run", "g.yaml", "--task", text, "--no-store", "--json"],
        ):
            _, out, err = invoke(*args)
            assert_clean(out)
            assert_clean(err)
        _, out, _ = invoke("show", result.run_id, "--db", db, "--json")
        data = json.loads(out)
        assert data["messages"][-1]["content"] == text  # escaped for the eye, not altered

    check()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_live_view_prints_no_control_character(payload: str) -> None:
    """The live lines of `run` on a real terminal: only Rich's own colour codes."""
    import io

    from rich.console import Console

    from coral_graph._events import AgentErrored, MessageSent
    from coral_graph._model import Message
    from coral_graph.cli._output import Progress

    p = Progress()
    msg = Message("t-1#2", "t-1", 2, "a", payload, ("user",), 0.0)  # type: ignore[arg-type]
    p.on_event(MessageSent("run-x", 1, 0.0, msg))  # type: ignore[arg-type]
    p.on_event(AgentErrored("run-x", 2, 0.0, "a", None, "ValueError", payload, "tb", "continue"))
    buf = io.StringIO()
    p.flush_lines(Console(file=buf, force_terminal=True, width=80))
    p.status()
    out = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue())  # Rich's SGR styles
    assert_clean(out)
    assert "\\x1b" in out or "\\u" in out or "\\x" in out or "[red]" in out


# -- listings, ids, prefixes, pipes --------------------------------------------------------

ECHO_YAML = "name: echo\nagents:\n  echo: {python: 'bots.py:echo'}\ntask: hello\n"


@pytest.fixture
def echo_project(project: Path) -> Path:
    (project / "bots.py").write_text(ECHO_PY)
    (project / "echo.yaml").write_text(ECHO_YAML)
    return project


def _run_ids(n: int) -> list[str]:
    ids = []
    for i in range(n):
        code, out, err = invoke("run", "echo.yaml", "--task", f"task {i}\nsecond line", "--json")
        assert code == EXIT_OK, err
        ids.append(json.loads(out)["run_id"])
    return ids


def test_runs_piped_has_a_header_stable_columns_and_whole_ids(echo_project: Path) -> None:
    ids = _run_ids(3)
    for columns in ("40", "200"):
        code, out, _ = invoke("runs", env={"COLUMNS": columns})
        assert code == EXIT_OK
        lines = out.splitlines()
        assert lines[0].split() == [
            "run", "started", "graph", "status", "stop", "msgs", "failed", "tokens", "cost",
            "time", "task",
        ]  # fmt: skip
        assert [line.split()[0] for line in lines[1:]] == ids[::-1]  # never cut
        assert all(line.split()[4:9] == ["finished", "answer", "2", "0", "0"] for line in lines[1:])
        assert lines[1].endswith("task 2 second line")  # one line per run
    code, out, _ = invoke("runs", "--json")
    data = json.loads(out)
    assert [r["run_id"] for r in data] == ids[::-1]
    assert data[0]["failures"] == {"llm_calls": 0, "tool_calls": 0, "turns": 0}
    assert data[0]["answer"] == "task 2\nsecond line"


def test_an_ambiguous_prefix_is_named_as_such(echo_project: Path) -> None:
    ids = _run_ids(3)
    prefix = ids[0]
    while not all(i.startswith(prefix) for i in ids):
        prefix = prefix[:-1]
    assert len(prefix) >= len("run-")
    code, _, err = invoke("show", prefix)
    assert code == EXIT_BAD_INPUT
    assert err.startswith(f"error: {prefix} matches 3 runs: {', '.join(ids[::-1])};")
    code, out, _ = invoke("show", ids[0][: len(prefix) + 6], "--json")
    if code == EXIT_OK:  # the first 6 more characters tell it apart
        assert json.loads(out)["run"]["run_id"] == ids[0]
    code, _, err = invoke("show", "run-nope")
    assert code == EXIT_BAD_INPUT
    assert "no run 'run-nope'" in err


def test_show_filters_tail_limit_and_unknown_names(echo_project: Path) -> None:
    [rid] = _run_ids(1)
    code, out, _ = invoke("show", rid, "--plain")
    assert code == EXIT_OK
    assert not set(out) & set("╭╮╰╯│─┃━┏┓┗┛")  # --plain draws no box
    assert "    echo: task 0" in out or "    task 0" in out
    _, out, _ = invoke("show", rid, "--tail", "1")
    assert "user →" not in out
    assert "echo → @user" in out
    _, out, _ = invoke("show", rid, "--limit", "1")
    assert "user → @echo" in out
    assert "echo → @user" not in out
    code, _, err = invoke("show", rid, "--agent", "tally")
    assert code == EXIT_BAD_INPUT
    assert err == f'error: run {rid} has no agent "tally"; its agents: echo\n'
    code, _, err = invoke("show", rid, "--thread", "t-9")
    assert code == EXIT_BAD_INPUT
    assert 'has no thread "t-9"; its threads: t-1' in err


def test_show_opens_a_pager_on_a_terminal(
    echo_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coral_graph.cli._store as store_cli

    [rid] = _run_ids(1)
    paged = echo_project / "paged.txt"
    monkeypatch.setattr(store_cli, "_isatty", lambda: True)
    monkeypatch.setenv("PAGER", f"sh -c 'cat > {paged}'")
    monkeypatch.setenv("LINES", "3")
    code, out, _ = invoke("show", rid)
    assert code == EXIT_OK
    assert out == ""
    text = paged.read_text()
    assert "\x1b[" in text  # colours for the pager (less -R)
    assert "echo → @user" in re.sub(r"\x1b\[[0-9;]*m", "", text)
    paged.unlink()
    code, out, _ = invoke("show", rid, "--no-pager")
    assert "echo → @user" in re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert not paged.exists()


def _cli(*args: str, cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False, **kw
    )


def test_a_closed_pipe_is_silent(echo_project: Path) -> None:
    _run_ids(1)
    for cmd in ("export last", "show last --json", "runs"):
        proc = subprocess.run(
            f"{CLI} {cmd} | head -c 50",
            shell=True,
            cwd=echo_project,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert len(proc.stdout) <= 50
        assert proc.stderr == b"", (cmd, proc.stderr)


def test_the_whole_answer_is_printed_on_a_terminal(echo_project: Path) -> None:
    """A real terminal (a pty) 40 columns wide: the answer comes back whole."""
    import pty

    answer = "word " * 60 + "END"
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "40", "LINES": "20", "TERM": "xterm"}
    proc = subprocess.Popen(
        [str(CLI), "run", "echo.yaml", "--task", answer, "--no-store"],
        cwd=echo_project, stdin=slave, stdout=slave, stderr=slave, env=env,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert proc.returncode == EXIT_OK, text
    assert answer in text.replace("\r\n", "\n")  # one line, wrapped by the terminal only
    assert "│" not in text


# -- a store that fails: the result first, then one line, exit 3 --------------------------

KILLER_PY = textwrap.dedent("""
    import glob, os, signal
    import anyio

    def read(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:  # a thread or a process that ended meanwhile
            return b""

    def writers():
        # This process's children that are the store's writer. Threads and other
        # children come and go while we look (a loaded machine showed it): a file
        # of one that ended is skipped, not an error of the agent.
        for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
            for pid in read(path).split():
                if b"coral_graph.store" in read(f"/proc/{int(pid)}/cmdline"):
                    yield int(pid)

    async def killer(ctx, message):
        for pid in writers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await anyio.sleep(0.5)
        await ctx.send_message(message.thread_id, "the answer survives", ["user"])
""")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_store_killed_mid_run_prints_the_result_then_one_line(tmp_path: Path) -> None:
    from coral_graph.cli._app import EXIT_STORE

    (tmp_path / "killer.py").write_text(KILLER_PY)
    (tmp_path / "k.yaml").write_text("agents:\n  k: {python: 'killer.py:killer'}\ntask: go\n")
    env = {**os.environ, "CORAL_DB": str(tmp_path / "k.db")}
    proc = _cli("run", "k.yaml", cwd=tmp_path, env=env)
    assert proc.returncode == EXIT_STORE, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "the answer survives"
    assert lines[1].startswith("stop: answer · 2 messages")
    [store_line] = [x for x in proc.stderr.splitlines() if x.startswith("store: ")]
    assert "writer" in store_line
    assert "Traceback" not in proc.stderr
    proc = _cli("run", "k.yaml", "--json", cwd=tmp_path, env=env)
    assert proc.returncode == EXIT_STORE
    data = json.loads(proc.stdout)
    # the whole result in the message: a rare failure here must say why
    assert data["answer"] == "the answer survives", (data, proc.stderr)
    assert data["store_error"].startswith(store_line.removeprefix("store: ")[:20])


def test_a_store_that_cannot_be_opened_stops_before_the_run(tmp_path: Path) -> None:
    from coral_graph.cli._app import EXIT_STORE

    (tmp_path / "bots.py").write_text(ECHO_PY)
    (tmp_path / "echo.yaml").write_text(ECHO_YAML)
    (tmp_path / "not-a-db").write_text("plain text, not SQLite\n" * 100)
    proc = _cli("run", "echo.yaml", "--db", "not-a-db", cwd=tmp_path)
    assert proc.returncode == EXIT_STORE
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("store: cannot record the run in not-a-db: ")
    assert line.endswith("(fix it, or pass --no-store to run without a transcript)")


# -- resume ---------------------------------------------------------------------------------

DYING_PY = textwrap.dedent("""
    import os, time

    async def relay(ctx, message):
        other = "b" if ctx.name == "a" else "a"
        if message.sender == "user":
            th = await ctx.create_thread("relay", [other])
            await ctx.send_message(th, "1", [other])
            return
        n = int(message.content)
        if n == 5 and os.environ.get("DIE_AT_5"):
            time.sleep(1.0)  # the store's timer thread commits what was sent
            os._exit(9)      # the process dies mid-run
        if n >= 8 and ctx.name == "a":
            await ctx.send_message("t-1", f"done {n}", ["user"])
        else:
            await ctx.send_message(message.thread_id, str(n + 1), [other])
""")
DYING_YAML = """\
name: relay
agents:
  a: {python: dying.py:relay}
  b: {python: dying.py:relay}
edges: ["a <-> b"]
entry: [a]
task: go
"""


def test_resume_from_anywhere_prints_the_run_block_and_refuses_a_wrong_graph(
    tmp_path: Path,
) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "dying.py").write_text(DYING_PY)
    (proj / "relay.yaml").write_text(DYING_YAML)
    (proj / "other.yaml").write_text(DYING_YAML.replace("  b: {", "  c: {").replace("b", "c"))
    db = tmp_path / "r.db"
    env = {**os.environ, "CORAL_DB": str(db)}
    proc = _cli("run", "relay.yaml", cwd=proj, env={**env, "DIE_AT_5": "1"})
    assert proc.returncode == 9
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code_runs = _cli("runs", "--json", cwd=elsewhere, env=env)
    [row] = json.loads(code_runs.stdout)
    assert row["status"] == "interrupted"
    assert row["graph_path"] == str(proj / "relay.yaml")  # absolute: resume works anywhere

    proc = _cli("resume", "last", "--graph", str(proj / "other.yaml"), cwd=elsewhere, env=env)
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.startswith(
        f"error: cannot resume: the graph relay lacks agents of run {row['run_id']}: b; "
        f"resume it with the graph it was started from ({proj / 'relay.yaml'})"
    )
    proc = _cli("resume", "last", cwd=elsewhere, env=env)
    assert proc.returncode == EXIT_OK, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] in ("done 8", "done 9", "done 10")
    assert lines[1].startswith("stop: answer · ")
    assert lines[2].startswith(f"run: {row['run_id']} saved in {db}")


# -- counts agree, lines stay whole -----------------------------------------------------


def test_messages_count_the_same_in_the_live_line_the_result_and_the_store(
    tmp_path: Path,
) -> None:
    import coral_graph as cg
    from coral_graph.cli._output import Progress
    from coral_graph.store import SQLiteStore, open_reader

    @cg.agent
    async def a(ctx: cg.AgentContext, message: cg.Message) -> None:
        if message.sender == "user":
            th = await ctx.create_thread("side", ["b"])
            await ctx.send_message(th, "1", ["b"])
        else:
            await ctx.send_message("t-1", "done", ["user"])

    @cg.agent
    async def b(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "2", ["a"])

    graph = cg.AgentGraph()
    graph.add_agent("a", a)
    graph.add_agent("b", b)
    graph.connect("a", "b", mutual=True)
    progress = Progress()

    async def main() -> Any:
        with SQLiteStore(tmp_path / "c.db") as store:
            async with cg.open_runtime(graph, store=store) as rt:
                rt.subscribe(progress.on_event)
                return await rt.run("go", entry=["a"])

    result = cg.run_async(main)
    with open_reader(tmp_path / "c.db") as rd:
        stored = rd.run(result.run_id)["messages"]
        shown = len(rd.messages(result.run_id))
    # "messages" everywhere a person reads it: the transcript, the task included ...
    _, out, _ = invoke("runs", "--db", str(tmp_path / "c.db"), "--json")
    [listed] = json.loads(out)
    _, out, _ = invoke("show", result.run_id, "--db", str(tmp_path / "c.db"), "--json")
    assert progress.messages == shown == listed["messages"] == 4
    assert json.loads(out)["run"]["messages"] == 4
    _, out, _ = invoke("show", result.run_id, "--db", str(tmp_path / "c.db"))
    assert " · 4 messages · " in out
    # ... and what the budget counts, the task left out, under its own name.
    assert result.messages == stored == listed["messages_sent"] == 3


def test_piped_show_never_wraps_a_line(echo_project: Path) -> None:
    long = " ".join(f"w{i}" for i in range(400))
    code, out, err = invoke("run", "echo.yaml", "--task", long, "--json")
    assert code == EXIT_OK, err
    _, out, _ = invoke("show", "last", env={"COLUMNS": "40"})
    assert f"    {long}" in out.splitlines()
    _, out, _ = invoke("run", "echo.yaml", "--task", long, env={"COLUMNS": "40"})
    assert out.splitlines()[0] == long


def test_agents_lists_as_json_and_as_whole_lines_when_piped() -> None:
    code, out, _ = invoke("agents", "--json")
    assert code == EXIT_OK
    listed = json.loads(out)
    names = [a["name"] for a in listed]
    assert {"planner", "calculator", "tally"} <= set(names)
    assert all(set(a) == {"name", "kind", "scope", "folder", "shadowed", "description"}
               for a in listed)  # fmt: skip
    _, out, _ = invoke("agents", env={"COLUMNS": "40"})
    lines = out.splitlines()
    assert lines[0].split() == ["name", "kind", "scope", "description"]
    assert [line.split()[0] for line in lines[1:]] == names
