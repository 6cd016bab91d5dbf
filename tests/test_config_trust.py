"""Graph files as a hostile or careless user writes them: validate runs no code,
caps on YAML, secrets never echoed, names never printed raw, one pass reports
everything, typos in --set are errors."""

from __future__ import annotations

import sys
import textwrap
import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coral_graph import ConfigError
from coral_graph.cli import EXIT_BAD_INPUT, EXIT_OK, app
from coral_graph.config import check_graph, load_graph, parse_spec

ROOT = Path(__file__).resolve().parent.parent

ECHO = '''
async def echo(ctx, message):
    """Says it back."""
    await ctx.send_message(message.thread_id, "echo: " + message.content, ["user"])
'''


AGENT = """
class Agent:
    \"\"\"Made at run time.\"\"\"

    async def handle(self, ctx, message):
        await ctx.send_message(message.thread_id, "agent", ["user"])
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, BaseException) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.stdout, result.stderr


def problems_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    lines = str(exc.value).splitlines()
    assert lines == [str(p) for p in exc.value.problems]
    return lines


def assert_printable(text: str) -> None:
    """No control, format or separator character other than newline and space."""
    bad = [c for c in text if c != "\n" and (unicodedata.category(c)[0] in "CZ" and c != " ")]
    assert not bad, bad


# -- validate and graph execute nothing ---------------------------------------------


@pytest.fixture
def marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder whose Python files each create a marker file when imported, and a
    package of the same kind on sys.path."""
    monkeypatch.chdir(tmp_path)
    for name in ("agent.py", "pkg/__init__.py", "pkg/sub.py"):
        stem = name.replace("/", "_").replace(".py", "")
        mark = (
            f"import pathlib\npathlib.Path({str(tmp_path)!r}, 'imported-{stem}').write_text('r')\n"
        )
        write(tmp_path, name, mark + ECHO + AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in ("pkg", "pkg.sub"):
        sys.modules.pop(mod, None)


def markers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("imported-*")) + sorted(
        p.name for p in folder.glob("shell-*")
    )


def test_validate_and_graph_import_nothing_and_run_no_command(marked: Path) -> None:
    write(
        marked,
        "g.yaml",
        f"""
        agents:
          a: {{python: "agent.py:echo"}}
          b: {{python: "pkg.sub:Agent"}}
          c: {{python: "pkg:echo"}}
          shell:
            python: os:system
            args: {{command: "touch {marked}/shell-ran"}}
        edges: [a -> b, a -> c, a -> shell]
        """,
    )
    lg = check_graph(marked / "g.yaml")
    assert markers(marked) == []
    assert "pkg" not in sys.modules
    assert "pkg.sub" not in sys.modules
    # The description of a python agent is read from its source, not its object.
    assert lg.graph.spec("a").description == "Says it back."
    assert lg.graph.spec("b").description == "Made at run time."
    for args in (
        ["validate", "g.yaml"],
        ["graph", "g.yaml"],
        ["graph", "g.yaml", "--format", "dot"],
    ):
        code, _out, err = invoke(*args)
        assert code == EXIT_OK, err
    assert markers(marked) == []
    # Loading for a run imports, and calls factories: the code runs then, and only
    # then (os.system returns no agent, which is a problem of the graph).
    with pytest.raises(ConfigError) as info:
        load_graph(marked / "g.yaml")
    assert problems_of(info) == [
        f'{marked / "g.yaml"}:5:3: agents.shell: agent "shell": int has no `async def '
        "handle(self, ctx, message)` (or `async def run(self, ctx)` for a loop-style agent); "
        "wrap a plain async function with @coral_graph.agent"
    ]
    assert markers(marked) == [
        "imported-agent",
        "imported-pkg___init__",
        "imported-pkg_sub",
        "shell-ran",
    ]


def test_python_references_are_checked_without_importing(marked: Path) -> None:
    write(
        marked,
        "g.yaml",
        """
        agents:
          a: {python: "agent.py:ehco"}
          b: {python: "pkg.sub:Nope"}
          c: {python: "pkg.nothere:Agent"}
          d: {python: "no_such_package_xyz.mod:Agent"}
          e: {python: "pkg.sub.deeper:Agent"}
          f: {python: "syntax.py:f"}
        edges: [a -> b, a -> c, a -> d, a -> e, a -> f]
        """,
    )
    write(marked, "syntax.py", "def f(:\n    pass\n")
    with pytest.raises(ConfigError) as info:
        check_graph(marked / "g.yaml")
    lines = [line.removeprefix(f"{marked}/") for line in problems_of(info)]
    assert lines == [
        'g.yaml:2:15: agents.a.python: agent.py has no "ehco" — did you mean "echo"?',
        'g.yaml:3:15: agents.b.python: pkg.sub has no "Nope"',
        "g.yaml:4:15: agents.c.python: cannot find module pkg.nothere: install it, or use "
        'a file next to the graph ("file.py:Name")',
        "g.yaml:5:15: agents.d.python: cannot find module no_such_package_xyz.mod: install "
        'it, or use a file next to the graph ("file.py:Name")',
        "g.yaml:6:15: agents.e.python: cannot find module pkg.sub.deeper: pkg.sub is not a package",
        "g.yaml:7:15: agents.f.python: syntax.py:1: invalid Python: invalid syntax",
    ]
    assert markers(marked) == []
    assert "pkg" not in sys.modules


@pytest.mark.parametrize(
    "ref", ["../outside.py:echo", "/tmp/outside.py:echo", "sub/../../outside.py:echo"]
)
def test_python_files_must_be_inside_the_graphs_folder(tmp_path: Path, ref: str) -> None:
    write(tmp_path, "outside.py", ECHO)
    write(tmp_path, "/tmp/outside.py" if ref.startswith("/") else "outside.py", ECHO)
    f = write(tmp_path, "graphs/g.yaml", f"agents:\n  a: {{python: '{ref}'}}\n")
    with pytest.raises(ConfigError) as info:
        check_graph(f)
    target = ref.rpartition(":")[0]
    assert str(info.value).endswith(
        f"agents.a.python: file {target} is outside the folder of the YAML file that names it "
        f"({tmp_path / 'graphs'}); python: files must be inside that folder: move the file "
        'there, or install it and write "package.module:Name"'
    )


def test_a_class_with_a_sync_handle_is_found_without_importing(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.py",
        "import sys\nsys.exit(3)\nclass A:\n    def handle(self, ctx, m):\n        pass\n",
    )
    f = write(tmp_path, "g.yaml", "agents:\n  a: {python: 'a.py:A'}\n")
    with pytest.raises(ConfigError, match=r"A\.handle must be `async def`"):
        check_graph(f)


# -- user code that exits ------------------------------------------------------------


EXITS = """
import sys
{body}
async def echo(ctx, message):
    pass
def factory():
    raise SystemExit(0)
"""


@pytest.mark.parametrize(
    ("body", "ref", "message"),
    [
        (
            "raise SystemExit(0)",
            "bye.py:echo",
            "importing bye.py failed: it raised SystemExit(0) (a module must not exit the process)",
        ),
        (
            "sys.exit('done')",
            "bye.py:echo",
            "importing bye.py failed: it raised SystemExit('done') (a module must not exit "
            "the process)",
        ),
        ("", "bye.py:factory", "bye.py:factory(**args) failed: SystemExit: 0"),
        ("raise GeneratorExit", "bye.py:echo", "importing bye.py failed: GeneratorExit: "),
    ],
)
def test_user_code_raising_system_exit_is_a_config_error(
    tmp_path: Path, body: str, ref: str, message: str
) -> None:
    write(tmp_path, "bye.py", EXITS.format(body=body))
    f = write(tmp_path, "g.yaml", f"agents:\n  a: {{python: '{ref}'}}\n")
    check_graph(f)  # runs nothing, so finds nothing
    with pytest.raises(ConfigError) as info:
        load_graph(f)
    assert str(info.value) == f"{f}:2:15: agents.a.python: {message}"


def test_run_and_validate_exit_codes_when_user_code_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "bye.py", EXITS.format(body="raise SystemExit(0)"))
    write(tmp_path, "a.yaml", "agents:\n  a: {python: 'bye.py:echo'}\ntask: hi\n")
    write(tmp_path, "b.yaml", "agents:\n  b: {python: 'bye.py:nope'}\n")
    code, out, err = invoke("run", "a.yaml", "--no-store")
    assert code == EXIT_BAD_INPUT
    assert "importing bye.py failed: it raised SystemExit(0)" in err
    assert out == ""
    code, out, err = invoke("validate", "a.yaml", "b.yaml")
    assert code == EXIT_BAD_INPUT
    assert out.startswith("ok: a.yaml")
    assert err.splitlines() == [
        'b.yaml:2:15: agents.b.python: bye.py has no "nope"',
        "1 file has problems",
    ]


def test_a_task_file_that_is_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "e.py", ECHO)
    write(tmp_path, "g.yaml", "agents:\n  a: {python: 'e.py:echo'}\n")
    (tmp_path / "task.txt").write_bytes(b"caf\xe9 au lait")
    code, _out, err = invoke("run", "g.yaml", "--task-file", "task.txt", "--no-store")
    assert code == EXIT_BAD_INPUT
    assert err.splitlines() == [
        "error: the task file task.txt is not UTF-8 text (byte 0xe9 at offset 3); convert "
        "it, e.g. iconv -t UTF-8 task.txt"
    ]


# -- YAML caps -----------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "agents:\n  x:\n    metadata:\n" + textwrap.indent("\n".join(lines), "      ") + "\n"


def test_an_alias_bomb_is_stopped() -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(alias_bomb(), "bomb.yaml")
    (line,) = problems_of(info)
    assert line.startswith("bomb.yaml:")
    assert "more than 200,000 values once aliases are expanded" in line


def test_a_few_aliases_still_work() -> None:
    spec = parse_spec(alias_bomb(levels=2, width=3), "ok.yaml")
    assert spec.agents["x"].metadata is not None
    assert spec.agents["x"].metadata["a2"] == [[["lol"]] * 3] * 3


def test_a_recursive_alias_is_a_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec("agents:\n  x:\n    metadata: &m {self: *m}\n", "r.yaml")
    assert problems_of(info) == [
        "r.yaml:3:15: an alias refers to a node that contains it; remove the alias"
    ]


@pytest.mark.parametrize("depth", [65, 900, 5000])
def test_deep_nesting_is_a_problem(depth: int) -> None:
    text = "agents:\n  x:\n    metadata: {k: " + "[" * depth + "]" * depth + "}\n"
    with pytest.raises(ConfigError) as info:
        parse_spec(text, "deep.yaml")
    (line,) = problems_of(info)
    assert line.startswith("deep.yaml:3:")
    assert "nested more than 64 levels deep" in line


def test_deep_nesting_through_aliases_is_a_problem() -> None:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 100)]
    text = "agents:\n  x:\n    metadata:\n" + textwrap.indent("\n".join(lines), "      ") + "\n"
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        parse_spec(text, "deep.yaml")


def test_deep_nesting_through_set(tmp_path: Path) -> None:
    f = write(tmp_path, "g.yaml", "agents:\n  a: {kind: human}\n")
    for value in ["[" * 900 + "]" * 900, "{a: " * 200 + "1" + "}" * 200]:
        with pytest.raises(ConfigError) as info:
            check_graph(f, overrides=[f"agents.a.metadata={value}"])
        (line,) = problems_of(info)
        assert "nested more than 64 levels deep" in line
        assert line.startswith("--set agents.a.metadata=")
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        check_graph(f, overrides=["agents.a.metadata" + ".k" * 100 + "=1"])


@pytest.mark.parametrize(
    ("text", "where", "char"),
    [
        ("agents:\n  a: {kind: human}\nname: x\x07y\n", "c.yaml:3:8", "\\x07"),
        ("agents:\n  a: {kind: human}\n\x1b[2Jname: x\n", "c.yaml:3:1", "\\x1b"),
        ("agents:\n  a:\n    description: ok\x00\n", "c.yaml:3:20", "\\x00"),
    ],
)
def test_control_characters_are_a_problem_with_line_and_column(
    text: str, where: str, char: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(text, "c.yaml")
    assert problems_of(info) == [
        f"{where}: the character {char} is not allowed in YAML; remove it (inside a "
        'double-quoted string, write it as an escape such as "\\t")'
    ]


def test_the_file_size_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path, "g.yaml", "agents:\n  a: {kind: human}\n" + "# padding\n" * 20)
    check_graph(f)
    monkeypatch.setenv("CORAL_MAX_YAML_BYTES", "100")
    with pytest.raises(ConfigError) as info:
        check_graph(f)
    assert problems_of(info) == [
        f"{f}: the file is {f.stat().st_size} bytes, more than the 100 a graph file may "
        "have; split it, or raise the limit with CORAL_MAX_YAML_BYTES=<bytes>"
    ]


def test_a_graph_file_that_is_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_bytes(b"agents:\n  a: {kind: human, description: caf\xe9}\n")
    with pytest.raises(ConfigError) as info:
        check_graph(f)
    assert problems_of(info) == [
        f"{f}:2: not UTF-8 text (byte 0xe9 at offset 43); save the file as UTF-8"
    ]


@pytest.mark.parametrize(
    ("written", "value"),
    [("1e3", 1000.0), ("1e308", 1e308), (".5", 0.5), ("1.5E-2", 0.015), ("2", 2)],
)
def test_numbers_in_every_notation(written: str, value: float) -> None:
    spec = parse_spec(f"agents:\n  a: {{kind: human}}\nbudgets: {{max_cost_usd: {written}}}\n")
    assert spec.budgets.max_cost_usd == value


@pytest.mark.parametrize(
    ("field", "written", "message"),
    [
        (
            "max_messages",
            "99999999999999999999999999999999",
            "must be <= 9,007,199,254,740,991, got a number (99999999999999999999999999999999)",
        ),
        (
            "max_tokens",
            "9007199254740992",
            "must be <= 9,007,199,254,740,991, got a number (9007199254740992)",
        ),
        (
            "max_cost_usd",
            ".inf",
            "expected a finite number, got a number (inf); leave the key out for no limit",
        ),
        (
            "timeout_s",
            "1e999",
            "expected a finite number, got a number (inf); leave the key out for no limit",
        ),
        (
            "max_messages",
            "1" * 5000,
            "cannot read this value as int (ValueError); quote it or fix its tag",
        ),
        (
            "max_messages",
            "!!int twelve",
            "cannot read this value as int (ValueError); quote it or fix its tag",
        ),
    ],
)
def test_numbers_out_of_range_are_problems(field: str, written: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(f"agents:\n  a: {{kind: human}}\nbudgets:\n  {field}: {written}\n", "n.yaml")
    assert problems_of(info) == [f"n.yaml:4:{len(field) + 5}: budgets.{field}: {message}"]


def test_every_integer_in_the_schema_is_bounded() -> None:
    from coral_graph.config import graph_schema

    unbounded: list[str] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer" and "maximum" not in node:
                unbounded.append(path)
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(graph_schema(), "graph")
    walk(graph_schema(agent=True), "agent")
    assert unbounded == []


def test_non_finite_numbers_in_free_form_fields() -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec("agents:\n  a:\n    kind: human\n    metadata: {w: [1, .nan]}\n", "f.yaml")
    assert problems_of(info) == [
        "f.yaml:4:23: agents.a.metadata.w[1]: expected a finite number, got nan; transcripts "
        "are JSON, which has no nan"
    ]


@pytest.mark.parametrize(
    "name",
    ["ev\nil", "a\u202eb", "zero\u200bwidth", "bell\x07", "tab\tname", "para\u2029x", "nb\u00a0sp"],
)
def test_names_with_invisible_characters_are_escaped(name: str) -> None:
    quoted = name.encode("unicode_escape").decode("ascii")
    text = (
        f'agents:\n  "{quoted}": {{kind: human}}\n  ok: {{kind: human}}\n'
        f'edges: ["ok -> {quoted}"]\nentry: "{quoted}2"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_graph_text(text)
    lines = problems_of(info)
    assert len(lines) == len(info.value.problems) >= 2
    for line in lines:
        assert_printable(line)
    assert any("invalid agent name" in line for line in lines)
    for p in info.value.problems:
        assert p.field is None or p.field.isprintable()


def load_graph_text(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "g.yaml"
        f.write_text(text)
        check_graph(f)


def test_a_duplicate_key_with_a_newline_in_it(tmp_path: Path) -> None:
    f = write(tmp_path, "g.yaml", 'agents:\n  a: {kind: human}\nname: x\n"na\\nme": y\nx\\ty: 1\n')
    with pytest.raises(ConfigError) as info:
        check_graph(f)
    for line in problems_of(info):
        assert_printable(line)
    assert 'unknown key "na\\nme"' in str(info.value)


# -- secrets -------------------------------------------------------------------------


SECRET = "sk-LEAK-1234567890"


@pytest.mark.parametrize(
    "text",
    [
        "agents:\n  a: {kind: human}\nentry: ${SECRET}\n",
        "agents:\n  a: {kind: human}\nentry: [a, '${SECRET}']\n",
        "agents:\n  a: {kind: human}\nedges: ['a -> ${SECRET}']\n",
        "agents:\n  a: {kind: human}\nedges: [{from: a, to: '${SECRET}'}]\n",
        "agents:\n  a: {kind: human}\nanswer_by: ${SECRET}\n",
        "agents:\n  a: {kind: human}\nbudgets: {max_messages: '${SECRET}'}\n",
        "agents:\n  a: {use: '${SECRET}'}\n",
        "agents:\n  a: {python: '${SECRET}'}\n",
        "agents:\n  a: {python: 'x.py:${SECRET}'}\n",
        "agents:\n  a: {kind: '${SECRET}'}\n",
        "agents:\n  a: {model: openai/x, api_key_env: '${SECRET}'}\n",
        "name: ${SECRET}\nagents: ${SECRET}\n",
        "agents:\n  a: {kind: human}\ntask: [${SECRET}]\n",
    ],
)
def test_a_value_from_the_environment_is_never_echoed(tmp_path: Path, text: str) -> None:
    (tmp_path / "x.py").write_text(ECHO)
    f = write(tmp_path, "g.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_graph(f, env={"SECRET": SECRET})
    err = info.value
    shown = [str(err), *(str(p) for p in err.problems), *(str(p.field) for p in err.problems)]
    assert all(SECRET not in s for s in shown), shown
    assert all("LEAK" not in s for s in shown), shown


def test_a_secret_in_a_registry_definition_is_never_echoed(tmp_path: Path) -> None:
    write(
        tmp_path, "agents/helper/agent.yaml", "kind: human\ndescription: x\nprompt: [${SECRET}]\n"
    )
    f = write(tmp_path, "g.yaml", "agents:\n  a: {use: helper}\n")
    with pytest.raises(ConfigError) as info:
        load_graph(f, env={"SECRET": SECRET})
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ("model: openai/x\n    extra: {api_key: sk-live-abc}", "agents.a.extra.api_key"),
        (
            "model: openai/x\n    extra: {extra_headers: {Authorization: Bearer sk-live-abc}}",
            "agents.a.extra.extra_headers.Authorization",
        ),
        ("model: openai/x\n    extra: {x-api-key: sk-live-abc}", "agents.a.extra.x-api-key"),
        (
            "kind: human\n    metadata: {db: {password: hunter2-live}}",
            "agents.a.metadata.db.password",
        ),
        (
            "kind: human\n    metadata: {tokens: [{token: sk-live-abc}]}",
            "agents.a.metadata.tokens[0].token",
        ),
    ],
)
def test_a_secret_written_under_a_nested_key_is_flagged(
    tmp_path: Path, fields: str, where: str
) -> None:
    f = write(tmp_path, "g.yaml", f"agents:\n  a:\n    {fields}\n")
    with pytest.raises(ConfigError) as info:
        check_graph(f)
    (line,) = problems_of(info)
    assert f": {where}: this looks like a secret written into the graph file" in line
    assert "live" not in line


def test_secrets_from_the_environment_in_nested_keys_are_fine(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "g.yaml",
        """
        defaults:
          model: openai/x
          max_tokens: 10
          extra: {api_key: "${KEY}", extra_headers: {Authorization: "Bearer ${KEY}"}}
        agents:
          a: {metadata: {token_count: 3, secret_sauce: "", use_token: true}}
        """,
    )
    lg = check_graph(f, env={"KEY": "sk-live-abc"})
    assert lg.agents["a"].definition.extra == {
        "api_key": "sk-live-abc",
        "extra_headers": {"Authorization": "Bearer sk-live-abc"},
    }
    assert "sk-live" not in lg.spec.to_yaml()


def test_an_api_key_at_the_top_of_an_agent_names_the_fix(tmp_path: Path) -> None:
    f = write(tmp_path, "g.yaml", "agents:\n  a:\n    model: openai/x\n    password: hunter2\n")
    with pytest.raises(ConfigError) as info:
        check_graph(f)
    assert problems_of(info) == [
        f'{f}:4:5: agents.a.password: unknown key "password": put it in an environment '
        "variable and write ${NAME} instead (values read from the environment are never echoed)"
    ]


# -- --set ---------------------------------------------------------------------------


def test_set_on_an_unknown_agent_is_an_error(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "g.yaml",
        "agents:\n  writer: {kind: human}\n  reader: {kind: human}\nedges: [writer -> reader]\n",
    )
    with pytest.raises(ConfigError) as info:
        check_graph(f, overrides=["agents.wrtier.temperature=1"])
    assert problems_of(info) == [
        "--set agents.wrtier.temperature=1: agents.wrtier.temperature: unknown agent "
        '"wrtier" — did you mean "writer"? (the agents: writer, reader); to add an agent, '
        'set it whole: --set "agents.wrtier={use: solver}"'
    ]
    # A whole definition adds one.
    lg = check_graph(f, overrides=["agents.critic={kind: human}", "edges[0]=writer -> critic"])
    assert list(lg.agents) == ["writer", "reader", "critic"]


# -- one pass ------------------------------------------------------------------------


def test_every_problem_in_one_pass(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "g.yaml",
        """
        agents:
          planner: {use: planer}
          tool: {python: "nothere.py:Tool"}
          solver: {use: solver, temprature: 0.2}
          ok: {use: critic}
        edges: [planner -> solvr]
        budgets: {max_mesages: 3}
        """,
    )
    with pytest.raises(ConfigError) as info:
        check_graph(f, overrides=["agents.okk.model=x"])
    lines = [line.removeprefix(f"{f}:") for line in problems_of(info)]
    assert lines == [
        '2:18: agents.planner.use: unknown registry agent "planer" — did you mean "planner"?',
        f"3:18: agents.tool.python: file nothere.py not found (looked in {tmp_path})",
        '4:25: agents.solver.temprature: unknown key "temprature" — did you mean "temperature"?',
        '6:9: edges[0]: unknown agent "solvr" — did you mean "solver"?',
        '7:11: budgets.max_mesages: unknown key "max_mesages" — did you mean "max_messages"?',
        '--set agents.okk.model=x: agents.okk.model: unknown agent "okk" — did you mean "ok"? '
        "(the agents: planner, tool, solver, ok); to add an agent, set it whole: "
        '--set "agents.okk={use: solver}"',
    ]


# -- agents no edge reaches ----------------------------------------------------------


def test_agents_no_edge_reaches_are_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "g.yaml",
        """
        agents:
          planner: {kind: human}
          solver: {kind: human}
          lonely: {kind: human}
          pair-a: {kind: human}
          pair-b: {kind: human}
        edges: [planner -> solver, pair-a <-> pair-b, lonely -> planner]
        """,
    )
    lg = check_graph("g.yaml")
    assert lg.warnings == [
        f"g.yaml:{line}:3: agents.{name}: warning: no edge from the entry agents (planner) "
        f'reaches "{name}", so it can never receive a message; add an edge such as '
        f'"planner -> {name}", make it an entry agent, or remove it'
        for line, name in ((4, "lonely"), (5, "pair-a"), (6, "pair-b"))
    ]
    code, out, err = invoke("validate", "g.yaml")
    assert code == EXIT_OK
    assert out.startswith("ok: g.yaml: 5 agents")
    assert err.splitlines() == lg.warnings
    assert check_graph("g.yaml", overrides=["entry=[planner, lonely, pair-a]"]).warnings == []


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_have_no_warnings(path: Path) -> None:
    assert check_graph(path).warnings == []


# -- drawings and listings print nothing raw ------------------------------------------

NASTY = "\\e]52;c;aGk=\\a\\e[2J\\u202e"  # clipboard write, clear screen, bidi override


def test_graph_and_agents_escape_text_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "agents/shady/agent.yaml",
        f'kind: human\ndescription: "shady {NASTY} helper"\n',
    )
    write(
        tmp_path,
        "g.yaml",
        f'name: "g {NASTY}"\nagents:\n  a:\n    kind: human\n    description: "a {NASTY}"\n'
        "  b: {use: shady}\nedges: [a -> b]\n",
    )
    for args in (
        ["graph", "g.yaml"],
        ["graph", "g.yaml", "--format", "dot"],
        ["graph", "g.yaml", "--format", "mermaid"],
        ["agents"],
        ["agents", "shady"],
        ["validate", "g.yaml"],
    ):
        code, out, err = invoke(*args)
        assert code == EXIT_OK, (args, err)
        assert "\x1b" not in out + err, args
        assert "\u202e" not in out + err, args
        assert "\x07" not in out + err, args
    code, out, _ = invoke("graph", "g.yaml")
    assert "\\x1b]52;c;aGk=" in out


def test_a_bad_python_reference_in_a_registry_definition_is_placed_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "agents/tool/agent.yaml", "kind: python\ndescription: x\npython: tool.py:Tol\n")
    write(tmp_path, "agents/tool/tool.py", ECHO.replace("echo", "Tool"))
    write(tmp_path, "g.yaml", "agents:\n  a: {use: tool}\n  b: {use: tool, python: '../x.py:A'}\n")
    with pytest.raises(ConfigError) as info:
        check_graph("g.yaml")
    assert problems_of(info) == [
        "g.yaml:3:26: agents.b.python: file ../x.py is outside the folder of the YAML "
        "file that names it (.); python: files must be inside that folder: move the file "
        'there, or install it and write "package.module:Name"',
        'agents/tool/agent.yaml:3:9: python: tool.py has no "Tol" — did you mean "Tool"?',
    ]


def test_a_secret_in_a_process_or_tool_server_env_is_flagged(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "g.yaml",
        """
        agents:
          p: {kind: process, command: [python, p.py], env: {GITHUB_TOKEN: ghp-live-1}}
          q:
            model: openai/x
            tools: [{command: [srv], env: {OPENAI_API_KEY: sk-live-2, LOG_LEVEL: debug}}]
          r: {kind: process, command: [python, p.py], env: {GITHUB_TOKEN: "${TOKEN}"}}
        edges: [p -> q, p -> r]
        """,
    )
    with pytest.raises(ConfigError) as info:
        check_graph(f, env={"TOKEN": "ghp-live-3"})
    lines = [line.removeprefix(f"{f}:") for line in problems_of(info)]
    assert [line.split(": ")[1] for line in lines] == [
        "agents.p.env.GITHUB_TOKEN",
        "agents.q.tools[0].env.OPENAI_API_KEY",
    ]
    assert "live" not in str(info.value)
