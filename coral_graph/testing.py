"""Helpers for testing graphs without a real model: scripted replies and tool calls.

:class:`ScriptedModel` is a :class:`~coral_graph.llm.ModelClient` that answers from a
script, one step per model call. Give it to an agent directly, or register it under
a name and use the model string ``scripted/<name>`` (handy in YAML configs):

>>> import coral_graph as cg
>>> from coral_graph.testing import ScriptedModel, call
>>> model = ScriptedModel([call("send_message", content="4", mentions=["user"])])
>>> graph = cg.AgentGraph()
>>> graph.add_agent("solver", cg.LLMAgent(client=model))
>>> cg.run(graph, "2 + 2?", entry=["solver"]).answer
'4'
>>> len(model.requests)
1

A step is one of:

* a string: the model replies with that text;
* :func:`call` (or a list of them): the model calls tools;
* a :class:`~coral_graph.llm.ModelResponse`: returned as is;
* an exception instance: raised (e.g. ``LLMRateLimitError("slow down")`` to test
  retries);
* a function ``(request) -> step``: computed from the request.

Steps are consumed in call order; pass a mapping ``{agent name: steps}`` to give
each agent its own script (deterministic however the agents interleave).
"""

from __future__ import annotations

import itertools
import json
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from coral_graph._errors import LLMError
from coral_graph.llm._types import ModelRequest, ModelResponse, ToolCall, approx_tokens

__all__ = ["NoisyModel", "ScriptedModel", "Step", "call", "raw_call", "scripted_model"]

Step: TypeAlias = (
    "str | ToolCall | Sequence[ToolCall] | ModelResponse | BaseException"
    " | Callable[[ModelRequest], Step]"
)

_ids = itertools.count(1)
_registry: dict[str, ScriptedModel | NoisyModel] = {}
_registry_lock = threading.Lock()


def call(name: str, /, **arguments: Any) -> ToolCall:
    """A tool call step: ``call("send_message", content="hi", mentions=["planner"])``."""
    return ToolCall(f"call_{next(_ids)}", name, json.dumps(arguments))


def raw_call(name: str, arguments: str) -> ToolCall:
    """A tool call whose arguments are sent verbatim (e.g. malformed JSON)."""
    return ToolCall(f"call_{next(_ids)}", name, arguments)


def scripted_model(name: str) -> ScriptedModel | NoisyModel:
    """The model registered under ``name`` (model string ``scripted/<name>``)."""
    with _registry_lock:
        model = _registry.get(name)
        known = sorted(_registry)
    if model is None:
        raise LLMError(
            f"no ScriptedModel is registered as {name!r} (known: {', '.join(known) or 'none'});"
            f" create one with ScriptedModel([...], name={name!r})",
            model=f"scripted/{name}",
        )
    return model


class ScriptedModel:
    """A model that answers from a script (see the module docs).

    Args:
        steps: the replies, in call order, or ``{agent name: replies}``.
        name: register the model as ``scripted/<name>`` for :class:`LLMAgent`.
        default: the reply once the script is used up (default: raise LLMError).
        tools: whether ``mode="auto"`` treats the model as able to call tools.
        cost_per_token: US dollars per prompt or completion token (to test budgets).

    Attributes:
        requests: every request received, in order.
    """

    def __init__(
        self,
        steps: Iterable[Step] | Mapping[str, Iterable[Step]] = (),
        *,
        name: str | None = None,
        default: str | None = None,
        tools: bool = True,
        cost_per_token: float = 0.0,
    ) -> None:
        self._shared: deque[Step] = deque()
        self._per_agent: dict[str, deque[Step]] = {}
        if isinstance(steps, Mapping):
            self._per_agent = {k: deque(v) for k, v in steps.items()}
        else:
            self._shared.extend(steps)
        self.default = default
        self.tools = tools
        self.cost_per_token = cost_per_token
        self.requests: list[ModelRequest] = []
        self.name = name
        if name is not None:
            with _registry_lock:
                _registry[name] = self

    def __repr__(self) -> str:
        return f"ScriptedModel({self.name or ''!r}, {len(self.requests)} calls)"

    def add(self, *steps: Step, agent: str | None = None) -> None:
        """Append steps (to one agent's script when ``agent`` is given)."""
        if agent is None:
            self._shared.extend(steps)
        else:
            self._per_agent.setdefault(agent, deque()).extend(steps)

    def close(self) -> None:
        """Unregister the model's name."""
        if self.name is not None:
            with _registry_lock:
                if _registry.get(self.name) is self:
                    del _registry[self.name]

    @property
    def remaining(self) -> int:
        """Steps not yet used."""
        return len(self._shared) + sum(len(q) for q in self._per_agent.values())

    def _next(self, request: ModelRequest) -> Step:
        queue = self._per_agent.get(request.agent) if self._per_agent else self._shared
        if queue:
            return queue.popleft()
        if self.default is not None:
            return self.default
        raise LLMError(
            f"ScriptedModel ran out of replies (agent {request.agent!r}, call "
            f"{len(self.requests)}); add steps or pass default=...",
            model=request.model,
        )

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request`` with the next step of the script."""
        self.requests.append(request)
        step = self._next(request)
        while callable(step) and not isinstance(step, ToolCall | BaseException):
            step = step(request)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, ModelResponse):
            return step
        prompt = approx_tokens(request.messages, request.tools)
        if isinstance(step, str):
            content: str | None = step
            calls: tuple[ToolCall, ...] = ()
        elif isinstance(step, ToolCall):
            content, calls = None, (step,)
        else:
            content, calls = None, tuple(step)
        completion = approx_tokens(
            [{"content": content or "", "tool_calls": [c.to_openai() for c in calls]}]
        )
        return ModelResponse(
            content=content,
            tool_calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=(prompt + completion) * self.cost_per_token,
            model=request.model,
            finish_reason="tool_calls" if calls else "stop",
        )

    def supports_tools(self, model: str) -> bool:
        """Whether ``mode="auto"`` should use tools (the ``tools`` argument)."""
        return self.tools

    def count_tokens(
        self, model: str, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None
    ) -> int:
        """A characters/4 estimate (no tokenizer needed)."""
        return approx_tokens([dict(m) for m in messages], tools)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """``cost_per_token`` times the tokens."""
        return (prompt_tokens + completion_tokens) * self.cost_per_token


def _last_user_text(request: ModelRequest) -> str:
    for m in reversed(request.messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return ""


class NoisyModel:
    """A model of known accuracy and price, for measuring patterns without a real model.

    Each call finds the question in the prompt (the first key of ``answers`` that the
    last user message contains), then answers it right with probability ``accuracy``
    (or ``accuracy[kind]`` for the question's ``kinds`` entry), else with one of the
    ``wrong`` answers drawn uniformly. Draws are seeded by the request's seed (per run
    and agent: see :func:`coral_graph.run_seed`) and the question, so voters are
    independent and a run is reproducible. A prompt without a known question gets
    ``default``.

    Args:
        answers: question -> right answer.
        accuracy: the probability of a right answer, or ``{kind: probability}``.
        wrong: the wrong answers to draw from (the right one is never drawn).
        kinds: question -> kind (for per-kind accuracy); default kind ``""``.
        cost_per_call: US dollars per call (the price of the model).
        name: register as ``scripted/<name>``.
        default: the reply when no question is found.

    >>> m = NoisyModel({"2+2?": "4"}, accuracy=1.0, wrong=["5"], cost_per_call=0.01)
    >>> import anyio
    >>> r = anyio.run(m.complete, ModelRequest("x", [{"role": "user", "content": "2+2?"}]))
    >>> r.content, r.cost_usd
    ('4', 0.01)
    """

    def __init__(
        self,
        answers: Mapping[str, str],
        accuracy: float | Mapping[str, float],
        *,
        wrong: Sequence[str],
        kinds: Mapping[str, str] | None = None,
        cost_per_call: float = 0.0,
        name: str | None = None,
        default: str = "I do not know.",
    ) -> None:
        if not wrong:
            raise ValueError("wrong must list at least one wrong answer")
        self.answers = dict(answers)
        self.accuracy = accuracy
        self.wrong = list(wrong)
        self.kinds = dict(kinds or {})
        self.cost_per_call = cost_per_call
        self.default = default
        self.requests: list[ModelRequest] = []
        self.right = 0
        self.name = name
        self._fallback = random.Random(0)
        if name is not None:
            with _registry_lock:
                _registry[name] = self

    def close(self) -> None:
        """Unregister the model's name."""
        if self.name is not None:
            with _registry_lock:
                if _registry.get(self.name) is self:
                    del _registry[self.name]

    def _p(self, question: str) -> float:
        if isinstance(self.accuracy, Mapping):
            return float(self.accuracy.get(self.kinds.get(question, ""), 0.0))
        return float(self.accuracy)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer right with the model's accuracy, else wrongly."""
        self.requests.append(request)
        text = _last_user_text(request)
        question = next((q for q in self.answers if q in text), None)
        if question is None:
            content = self.default
        else:
            rng = (
                random.Random(f"{request.seed}|{request.agent}|{question}")
                if request.seed is not None
                else self._fallback
            )
            right = self.answers[question]
            if rng.random() < self._p(question):
                content = right
                self.right += 1
            else:
                content = rng.choice([w for w in self.wrong if w != right] or self.wrong)
        prompt = approx_tokens(request.messages)
        completion = approx_tokens([{"content": content}])
        return ModelResponse(
            content=content,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=self.cost_per_call,
            model=request.model,
            finish_reason="stop",
        )

    def supports_tools(self, model: str) -> bool:
        """It answers in text only."""
        return False

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of one call (``cost_per_call``)."""
        return self.cost_per_call
