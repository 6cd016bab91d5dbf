"""Shared fixtures. coral-graph runs on anyio's asyncio backend."""

from __future__ import annotations

import pytest
from conftest_llm import _stub_server, litellm_cleanup, openai_stub  # noqa: F401


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
