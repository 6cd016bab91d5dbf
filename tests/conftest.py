"""Shared fixtures. coral-graph runs on anyio's asyncio backend."""

from __future__ import annotations

import pytest
from browser_fixtures import browser  # noqa: F401  (one Chromium for every browser test)
from conftest_llm import _stub_server, litellm_cleanup, openai_stub  # noqa: F401

# The error corpus holds broken graph files (and the Python files they point at):
# data for tests/test_config*.py, never collected or imported as tests.
collect_ignore = ["broken_configs"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
