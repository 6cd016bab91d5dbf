"""Shared fixtures. coral-graph runs on anyio's asyncio backend."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_fixtures import browser  # noqa: F401  (one Chromium for every browser test)
from conftest_llm import _stub_server, litellm_cleanup, openai_stub  # noqa: F401

# The error corpus holds broken graph files (and the Python files they point at):
# data for tests/test_config*.py, never collected or imported as tests.
collect_ignore = ["broken_configs"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


_CHECKOUT_STORE = Path(__file__).resolve().parent.parent / ".coral"


@pytest.fixture(scope="session", autouse=True)
def _no_store_left_in_the_checkout() -> Iterator[None]:
    """A test that runs a graph with the default store location (``.coral/`` in the
    working directory) must use a temporary one: else it leaves a file in the
    checkout that the README's first command then opens. (The auction's memory did.)"""
    existed = _CHECKOUT_STORE.exists()
    yield
    if not existed and _CHECKOUT_STORE.exists():
        made = sorted(p.name for p in _CHECKOUT_STORE.iterdir())
        shutil.rmtree(_CHECKOUT_STORE, ignore_errors=True)
        pytest.fail(f"a test wrote {made} into the checkout's .coral/: give it a tmp_path")
