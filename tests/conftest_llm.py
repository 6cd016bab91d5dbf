"""Fixtures for the LLM tests: the OpenAI-compatible stub server and litellm cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from openai_stub import OpenAIStub, serve


@pytest.fixture(scope="session")
def _stub_server() -> Iterator[OpenAIStub]:
    with serve() as stub:
        yield stub


@pytest.fixture
def openai_stub(_stub_server: OpenAIStub) -> Iterator[OpenAIStub]:
    """A scripted OpenAI-compatible server on 127.0.0.1 (reset for each test)."""
    _stub_server.reset()
    yield _stub_server
    _stub_server.reset()


@pytest.fixture
async def litellm_cleanup() -> AsyncIterator[None]:
    """Close the HTTP clients litellm cached for this test's event loop."""
    yield
    from coral_graph.llm import aclose_clients

    await aclose_clients()
