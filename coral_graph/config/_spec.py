"""The graph file format as pydantic models: ``GraphSpec`` and its parts.

Every model forbids unknown keys and validates strictly (``"10"`` is not a number),
so a typo is an error instead of a silently ignored setting. The same models give
``coral-graph schema`` (JSON Schema for editors) and dump back to YAML.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr

__all__ = [
    "AGENT_KINDS",
    "MAX_INT",
    "AgentDef",
    "BudgetsSpec",
    "EdgeMap",
    "GraphSpec",
    "MCPServerDef",
    "ModelSettings",
]

AGENT_KINDS = ("llm", "python", "human", "process", "external")


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Names = Annotated[
    list[str],
    BeforeValidator(_one_or_many, json_schema_input_type=str | list[str]),
]
MAX_INT = 2**53 - 1
"""The largest integer any field takes: exact in JSON and JavaScript (the viewer),
and far inside SQLite's 64-bit integers (the store)."""
NonNeg = Annotated[float, Field(ge=0)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_INT)]
PosInt = Annotated[int, Field(ge=1, le=MAX_INT)]
AnyInt = Annotated[int, Field(ge=-MAX_INT, le=MAX_INT)]


class _Strict(BaseModel):
    # allow_inf_nan=False: ".inf", ".nan" and 1e999 are refused (say "no limit" by
    # leaving a budget out).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        validate_default=False,
        use_attribute_docstrings=True,
        allow_inf_nan=False,
    )


def _split_command(value: Any) -> Any:
    if isinstance(value, str):
        import shlex

        return shlex.split(value)
    return value


Command = Annotated[
    list[str],
    Field(min_length=1),
    BeforeValidator(_split_command, json_schema_input_type=str | list[str]),
]


class MCPServerDef(_Strict):
    """An MCP tool server of an LLM agent: command (stdio) or url (streamable HTTP)."""

    command: Command | None = None
    """The server's program and arguments, spoken to over stdio."""
    url: str | None = None
    """The URL of a streamable HTTP server."""
    env: dict[str, str] | None = None
    """Extra environment variables of the command."""
    cwd: str | None = None
    """The command's working directory (relative to the YAML file)."""
    name: str | None = None
    """A prefix for its tools' names when they clash with others (name__tool)."""


class ModelSettings(_Strict):
    """Model and sampling settings of an LLM agent (``defaults`` holds the shared ones)."""

    model: str | None = None
    """A litellm model string such as "openai/gpt-4o-mini", or "embedded/smollm2-135m"."""
    mode: Literal["auto", "tools", "text"] | None = None
    """How the model acts: "tools" (function calls), "text" (plain replies) or "auto"."""
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    """Sampling temperature, 0 to 2."""
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    """Nucleus sampling, above 0 and at most 1."""
    seed: AnyInt | None = None
    """A fixed sampling seed (the same in every run). Without it each run gets its own
    seed, so samples differ from run to run."""
    max_tokens: PosInt | None = None
    """Most tokens one reply may have."""
    stop: Names | None = None
    """Stop sequences."""
    api_base: str | None = None
    """The endpoint, e.g. "${OPENAI_BASE_URL}" or "http://127.0.0.1:8000/v1"."""
    api_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """The NAME of the environment variable that holds the API key (never the key)."""
    max_steps: PosInt | None = None
    """Model calls per turn (tool-use steps)."""
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    """Seconds one model call may take."""
    retries: NonNegInt | None = None
    """Retries of a failed model call (rate limit, timeout, 5xx)."""
    fallbacks: Names | None = None
    """Models tried in order when the main one fails."""
    context_tokens: PosInt | None = None
    """The context window the prompt is trimmed to."""
    max_concurrency: PosInt | None = None
    """Model calls of this agent in flight at once."""
    extra: dict[str, Any] | None = None
    """Provider-specific keyword arguments passed through to the model call."""
    context: Literal["auto", "compact", "full"] | None = None
    """The per-wake prompt in text mode: "compact" (for small models: the agent's own
    prompt, short history, the bare message), "full" (roster, thread ids, other
    threads) or "auto" (compact for embedded models and names with at most 3B
    parameters, such as "openai/smollm2-135m" or "ollama/llama3.2:1b"; full otherwise)."""


MODEL_FIELDS: tuple[str, ...] = tuple(ModelSettings.model_fields)


class AgentDef(ModelSettings):
    """One agent of a graph, or a reusable definition in the ``agents/`` registry."""

    use: str | None = None
    """Start from this registry definition (a name such as "planner", or a path to a
    folder or agent.yaml) and override its fields here."""
    kind: Literal["llm", "python", "human", "process", "external"] | None = None
    """"llm" (the default), "python" (code given by `python:`), "human" (a person at
    the terminal), "process" (a command the run launches, which joins over MCP) or
    "external" (an agent someone else connects over MCP; the run prints its URL)."""
    description: str | None = None
    """What the other agents see in list_agents()."""
    system_prompt: str | None = None
    """The instructions of an LLM agent."""
    python: str | None = None
    """For kind "python": "file.py:Name" (relative to the YAML file) or "package.module:Name";
    Name is an agent class, an async function (ctx, message) or a factory."""
    args: dict[str, Any] | None = None
    """Keyword arguments for the Python class or factory."""
    prompt: str | None = None
    """For kind "human": the text shown before the answer is typed."""
    on_error: Literal["continue", "restart", "stop"] | None = None
    """What happens when the agent raises: continue, restart or stop the run."""
    turn_timeout_s: Annotated[float, Field(gt=0)] | None = None
    """Seconds one turn may take (overrides budgets.turn_timeout_s)."""
    max_restarts: NonNegInt | None = None
    """With on_error: restart, restarts allowed before the run stops."""
    metadata: dict[str, Any] | None = None
    """Free-form data kept with the agent."""
    command: Command | None = None
    """For kind "process": the program and its arguments, e.g. [python, agent.py]
    ("python" is the interpreter running coral-graph); run in the folder of the file
    that sets it unless cwd is given."""
    env: dict[str, str] | None = None
    """For kind "process": extra environment variables of the command."""
    cwd: str | None = None
    """For kind "process": the command's working directory (relative to the YAML file)."""
    connect_timeout_s: Annotated[float, Field(gt=0)] | None = None
    """For kinds "process" and "external": seconds to wait for the agent to connect
    (or reconnect) to its MCP endpoint; default 30."""
    tools: list[MCPServerDef] | None = None
    """For kind "llm": MCP tool servers offered beside the seven operations (tools mode)."""
    max_tool_calls: NonNegInt | None = None
    """For kind "llm" with tools: MCP tool calls the agent may make in one run."""


class EdgeMap(_Strict):
    """Edges from every agent of ``from`` to every agent of ``to``."""

    from_: Names = Field(alias="from")
    """One agent name or a list."""
    to: Names
    """One agent name or a list."""
    mutual: bool = False
    """Also add the reverse edges."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


Edge = Annotated[
    str | list[str] | EdgeMap,
    Field(
        description='"a -> b", "a <-> b", "a -> b, c", "a -> b -> c", a pair [a, b], '
        "or {from: ..., to: ..., mutual: true}"
    ),
]


class BudgetsSpec(_Strict):
    """Limits of a run (the names of coral_graph.Budgets)."""

    max_messages: NonNegInt | None = None
    """Messages posted in the run (the task excluded)."""
    max_turns: NonNegInt | None = None
    """Turns of any one agent."""
    max_llm_calls: NonNegInt | None = None
    """Model calls across the run."""
    max_tokens: NonNegInt | None = None
    """Prompt plus completion tokens across the run."""
    max_cost_usd: NonNeg | None = None
    """Spend across the run, in US dollars."""
    timeout_s: NonNeg | None = None
    """Wall-clock seconds for the whole run."""
    turn_timeout_s: NonNeg | None = None
    """Seconds one turn of one agent may take."""


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


class GraphSpec(_Strict):
    """A whole graph file: agents, edges, who gets the task, who answers, budgets.

    Build it from Python and dump it back to YAML:

    >>> spec = GraphSpec(
    ...     name="pair",
    ...     agents={"a": AgentDef(kind="python", python="m.py:A"), "b": AgentDef(use="critic")},
    ...     edges=["a <-> b"],
    ...     entry=["a"],
    ... )
    >>> print(spec.to_yaml(), end="")
    name: pair
    agents:
      a:
        kind: python
        python: m.py:A
      b:
        use: critic
    edges:
    - a <-> b
    entry: a
    >>> from coral_graph.config import parse_spec
    >>> parse_spec(spec.to_yaml()) == spec
    True
    """

    name: str = "graph"
    """The graph's name."""
    description: str = ""
    """What the graph is for."""
    defaults: ModelSettings = Field(default_factory=ModelSettings)
    """Model and sampling settings every LLM agent inherits."""
    agents: Annotated[dict[str, AgentDef], Field(min_length=1)]
    """The agents by name (^[a-z][a-z0-9_-]{0,63}$, "user" is reserved)."""
    edges: list[Edge] = Field(default_factory=list)
    """Who may address whom."""
    entry: Names | None = None
    """The agents that receive the task (default: the first agent)."""
    answer_by: Names | None = None
    """The agents that may mention user to answer (default: the entry agents)."""
    budgets: BudgetsSpec = Field(default_factory=BudgetsSpec)
    """Limits of each run."""
    task: str | None = None
    """A default task, used when the command line gives none."""

    _env_refs: dict[tuple[str | int, ...], str] = PrivateAttr(default_factory=dict)

    def to_data(self, *, reveal: bool = False) -> dict[str, Any]:
        """Plain data with only the fields set away from their defaults.

        Values that came from ``${ENV_VAR}`` are written back as the reference
        unless ``reveal`` is true, so a dump never leaks a secret.
        """
        data: dict[str, Any] = self.model_dump(mode="json", exclude_defaults=True, by_alias=True)
        if not reveal:
            for loc, raw in self._env_refs.items():
                _set_in(data, loc, raw)
        # Read like a hand-written file: what an agent is before how it samples,
        # and one name instead of a one-item list.
        agents = data.get("agents", {})
        for name, fields in agents.items():
            agents[name] = dict(sorted(fields.items(), key=lambda kv: _AGENT_ORDER.get(kv[0], 99)))
        for key in ("entry", "answer_by"):
            if isinstance(data.get(key), list) and len(data[key]) == 1:
                data[key] = data[key][0]
        for edge in data.get("edges", []):
            if isinstance(edge, dict):
                for key in ("from", "to"):
                    if isinstance(edge.get(key), list) and len(edge[key]) == 1:
                        edge[key] = edge[key][0]
        return data

    def to_yaml(self, *, reveal: bool = False) -> str:
        """This spec as YAML text (``${ENV_VAR}`` references kept, see :meth:`to_data`)."""
        return yaml.dump(
            self.to_data(reveal=reveal),
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
        )


_AGENT_ORDER = {
    k: i
    for i, k in enumerate(
        (
            "use",
            "kind",
            "description",
            "python",
            "args",
            "prompt",
            "system_prompt",
            *ModelSettings.model_fields,
            "command",
            "env",
            "cwd",
            "connect_timeout_s",
            "tools",
            "max_tool_calls",
            "on_error",
            "turn_timeout_s",
            "max_restarts",
            "metadata",
        )
    )
}


def _set_in(data: Any, loc: tuple[str | int, ...], value: Any) -> None:
    cur = data
    for part in loc[:-1]:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        if (isinstance(cur, dict) and loc[-1] in cur) or isinstance(cur, list):
            cur[loc[-1]] = value  # type: ignore[index]
    except (IndexError, TypeError):
        return
