"""The entry points of the pipeline: YAML -> plain data with positions
(``_source``) -> ``--set`` overrides (``_overrides``) -> GraphSpec (``_validate``)
-> resolved agents (``_resolve``) -> AgentGraph (``_build``), collecting every
problem before raising one ConfigError (``_problems``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from coral_graph.config._build import LoadedGraph, build_loaded
from coral_graph.config._overrides import apply_overrides
from coral_graph.config._problems import raise_problems
from coral_graph.config._resolve import ResolvedAgent
from coral_graph.config._source import Source, parse_yaml, read_source
from coral_graph.config._spec import GraphSpec
from coral_graph.config._validate import validate_spec

__all__ = ["LoadedGraph", "ResolvedAgent", "build_graph", "check_graph", "load_graph", "parse_spec"]


def parse_spec(
    text: str, file: str = "<string>", env: Mapping[str, str] | None = None
) -> GraphSpec:
    """Parse and validate YAML text into a :class:`GraphSpec` (no registry lookups)."""
    src, problems = parse_yaml(text, file, os.environ if env is None else env)
    if not problems:
        spec, problems = validate_spec(src)
        if spec is not None and not problems:
            return spec
    raise_problems(problems, file, secrets=src.secrets)
    raise AssertionError("unreachable")


def load_graph(
    path: str | os.PathLike[str],
    *,
    overrides: Iterable[str] = (),
    model: str | None = None,
    env: Mapping[str, str] | None = None,
    llm_client: Any = None,
    _build_llm: bool = True,
) -> LoadedGraph:
    """Load a graph file.

    Args:
        path: the YAML file.
        overrides: ``path=value`` settings applied before validation, e.g.
            ``"agents.solver.temperature=0.2"`` (the value is read as YAML).
        model: run every LLM agent on this model.
        env: the variables ``${NAME}`` reads (default: ``os.environ``).
        llm_client: passed as ``client=`` to every :class:`~coral_graph.LLMAgent`
            (a scripted model in tests).

    Raises:
        ConfigError: with every problem found in ``.problems``; each names the file,
            line, column and field.
    """
    p = Path(path)
    environ = os.environ if env is None else env
    src, problems = read_source(p, environ)
    if src.data is None:  # unreadable, not YAML, or empty: nothing else to check
        if not problems:
            _, problems = validate_spec(src)
        raise_problems(problems, src.file, secrets=src.secrets)
    # From here every check runs, whatever the others found, so that one pass
    # reports every problem of the file.
    problems += apply_overrides(src, overrides)
    spec, more = validate_spec(src)
    problems += more
    return build_loaded(
        src,
        spec,
        graph_dir=p.parent,
        env=environ,
        model=model,
        llm_client=llm_client,
        build_llm=_build_llm,
        path=p,
        problems=problems,
    )


def check_graph(path: str | os.PathLike[str], **options: Any) -> LoadedGraph:
    """Like :func:`load_graph`, but LLM agents are only checked, not created (no model
    library is imported). The graph of the result lacks them."""
    return load_graph(path, _build_llm=False, **options)


def build_graph(
    spec: GraphSpec,
    *,
    base_dir: str | os.PathLike[str] = ".",
    model: str | None = None,
    llm_client: Any = None,
) -> LoadedGraph:
    """Build a :class:`LoadedGraph` from a spec made in Python (``python:`` references
    and ``use:`` paths resolve against ``base_dir``)."""
    src = Source("<spec>", spec.to_data(reveal=True))
    return build_loaded(
        src,
        spec,
        graph_dir=Path(base_dir),
        env=os.environ,
        model=model,
        llm_client=llm_client,
        build_llm=True,
        path=None,
    )
