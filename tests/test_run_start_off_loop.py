"""A run's readiness check (``check_ready``: an LLM agent's key and model) runs in a
worker thread, not on the event loop: the first check imports litellm, seconds during
which every other run and agent of the runtime would stand still.

Each scenario runs in a fresh interpreter (litellm is imported once per process). A
spy on the import system records, when ``litellm`` is first imported, whether the
importing thread runs an event loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, importlib.abc, json, sys

where = []


class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "litellm" and not where:
            try:
                asyncio.get_running_loop()
                where.append("loop")
            except RuntimeError:
                where.append("thread")
        return None


sys.meta_path.insert(0, Spy())

import coral_graph as cg
from coral_graph.config import load_graph

lg = load_graph(sys.argv[1])
mode = sys.argv[2]


async def main():
    async with cg.open_runtime(lg.graph, budgets=cg.Budgets(timeout_s=5)) as rt:
        if mode == "start":
            h = rt.start("hi", entry=["a"])
            return (await h.wait()).stop_reason
        return (await rt.run("hi", entry=["a"])).stop_reason


stop = asyncio.run(main())
print(json.dumps({"where": where, "stop": stop}))
"""


@pytest.mark.parametrize("mode", ["run", "start"])
def test_the_first_readiness_check_imports_litellm_off_the_loop(tmp_path: Path, mode: str) -> None:
    g = tmp_path / "g.yaml"
    # A model server that is not there: the run fails its call, which is not the point.
    g.write_text(
        'name: offloop\nagents:\n  a: {kind: llm, model: "openai/offloop", '
        'api_base: "http://127.0.0.1:9/v1", description: asks}\nentry: a\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OPENAI_API_KEY": "sk-test",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    env.pop("CORAL_DB", None)
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(g), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["where"] == ["thread"], out
    assert out["stop"] in ("error", "idle"), out
