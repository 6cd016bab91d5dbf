"""The calculator agent: exact arithmetic that small models can trust.

Expressions are parsed with :mod:`ast` and evaluated over :class:`fractions.Fraction`
(never ``eval``): ``+ - * / // % **``, unary signs, parentheses, integers and
decimals. ``^`` means power, the multiplication and division signs are accepted,
and ``1,000`` is a thousand.
Sizes are bounded so ``9 ** 9 ** 9`` is refused instead of hanging the run.

>>> evaluate("12 * (3 + 4) / 5")
'84/5 = 16.8'
>>> evaluate("2 ^ 100")
'1267650600228229401496703205376'
>>> evaluate("1 / 3")
'1/3 ≈ 0.33333333333333333333'
>>> evaluate("0.1 + 0.2")
'3/10 = 0.3'
"""

from __future__ import annotations

import ast
import re
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import coral_graph as cg

__all__ = ["Calculator", "CalculationError", "evaluate", "extract_expression"]

MAX_BITS = 100_000
"""Largest numerator or denominator, in bits."""
MAX_EXPONENT = 10_000

_CANDIDATE = re.compile("[0-9.+\\-*/%^()\\s\u00d7\u00f7,_]+")
_MENTION = re.compile(r"@[a-z][a-z0-9_-]*")


class CalculationError(ValueError):
    """The expression is not arithmetic the calculator can do; the message says why."""


def _check(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise CalculationError("the result is too large to compute exactly")
    return value


def _pow(base: Fraction, exp: Fraction) -> Fraction:
    if exp.denominator != 1:
        raise CalculationError("only whole-number exponents give exact results")
    e = exp.numerator
    if abs(e) > MAX_EXPONENT:
        raise CalculationError(f"exponents are limited to ±{MAX_EXPONENT}")
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if size * abs(e) > MAX_BITS:
        raise CalculationError("the result is too large to compute exactly")
    if base == 0 and e < 0:
        raise CalculationError("division by zero")
    return Fraction(base) ** e  # type: ignore[return-value]


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # Parse the literal from its text so 0.1 is exactly one tenth.
        return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        v = _eval(node.operand)
        return v if isinstance(node.op, ast.UAdd) else -v
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return _check(left + right)
        if isinstance(op, ast.Sub):
            return _check(left - right)
        if isinstance(op, ast.Mult):
            return _check(left * right)
        if isinstance(op, ast.Pow):
            return _pow(left, right)
        if right == 0 and isinstance(op, ast.Div | ast.FloorDiv | ast.Mod):
            raise CalculationError("division by zero")
        if isinstance(op, ast.Div):
            return _check(left / right)
        if isinstance(op, ast.FloorDiv):
            return Fraction(left // right)
        if isinstance(op, ast.Mod):
            return _check(left % right)
    raise CalculationError("only numbers, + - * / // % ** and parentheses are allowed")


def _normalise(text: str) -> str:
    text = text.replace("\u00d7", "*").replace("\u00f7", "/").replace("^", "**").replace("_", "")
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).strip()


def extract_expression(text: str) -> str | None:
    """The arithmetic in a message such as "@calculator what is 2+2?" (or None).

    >>> extract_expression("@calculator what is 17 * 23?")
    '17 * 23'
    """
    text = _MENTION.sub(" ", text)
    best: str | None = None
    for m in _CANDIDATE.finditer(text):
        chunk = m.group(0).strip().strip(",.")
        if not any(c.isdigit() for c in chunk):
            continue
        if best is None or len(chunk) > len(best):
            best = chunk
    return best


def _format(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    with localcontext() as c:
        c.prec = 20 if d != 1 else max(28, len(str(value.denominator)) + len(str(value.numerator)))
        dec = Decimal(value.numerator) / Decimal(value.denominator)
    if d == 1:
        return f"{value} = {dec.normalize():f}"
    return f"{value} ≈ {dec}"


def evaluate(expression: str) -> str:
    """Evaluate ``expression`` exactly and format the result.

    Raises:
        CalculationError: the text is not supported arithmetic.
    """
    text = _normalise(expression)
    if not text:
        raise CalculationError("there is no expression to compute")
    if len(text) > 2_000:
        raise CalculationError("the expression is longer than 2000 characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculationError(f'"{expression}" is not a valid expression') from None
    return _format(_eval(tree))


class Calculator:
    """Replies to each mention with the exact result of the arithmetic in it."""

    description = "Exact arithmetic: send an expression, get the exact result."

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        expr = extract_expression(message.content)
        if expr is None:
            reply = 'send an expression such as "12 * (3 + 4)"'
        else:
            try:
                reply = f"{_normalise(expr)} = {evaluate(expr)}"
            except CalculationError as exc:
                reply = f"cannot compute {expr!r}: {exc}"
        mentions = [message.sender] if ctx.can_address(message.sender) else []
        await ctx.send_message(message.thread_id, reply, mentions, reply_to=message.id)
