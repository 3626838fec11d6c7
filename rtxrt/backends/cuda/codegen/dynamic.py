"""Shape-generic kernels: a dim that varies over a profile is a kernel argument, not a literal.

The plan builder hands a lowering ``DimInt``s for the dims that vary (batch, sequence, image
size). A ``DimInt`` is an ``int`` of its value at the shapes being planned, so everything the
generators compute from it on the host (grids, tile counts, scratch sizes, arena offsets) is
right for those shapes; formatted into kernel source it is a C expression over the kernel's
dim arguments (``rtxd_i0_1``: input 0, axis 1 of the node), so the source text, and with it
the kernel's name and cubin, is the same at every shape of the profile. ``KernelSource.named``
turns the dim names a source uses into ``int`` parameters and records their values for the
launch.

A generator stays generic by formatting dims into the source (never ``int(d)`` or numpy on
them) and by deciding what its source looks like from ``upper(d)`` (the largest value over the
profile), not from ``d`` itself. A decision made on the value shows as a different source at
another shape: a compile there, never a wrong result (tests/backends/cuda/test_generic_*.py
plan the zoo at several shapes and hold every source to being the same).
"""
from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from contextvars import ContextVar
from typing import Any

INT_MAX = 2**31 - 1
DIM_NAME = re.compile(r"\brtxd_[io]\d+_\d+\b")

_bindings: ContextVar[Mapping[str, int] | None] = ContextVar("rtxrt_dim_bindings", default=None)


class DimInt(int):
    """An int (its value at the planned shapes) that formats as a C expression; ``lo``/``hi``
    bound it over the profile."""

    lo: int
    hi: int
    negated: DimInt | None  # this is -negated (so that ceil division -(-a // b) stays exact)

    def __new__(cls, value: int, expr: str | None, lo: int, hi: int, negated: DimInt | None = None) -> DimInt:
        self = super().__new__(cls, value)
        self._expr, self.lo, self.hi, self.negated = expr, lo, hi, negated
        return self

    @property
    def expr(self) -> str:
        if self._expr is None:  # C's division truncates where Python's floors
            raise ValueError(f"{int(self)}: a dim expression dividing a value that may be negative has no C form")
        return self._expr

    def __format__(self, spec: str) -> str:
        return self.expr if not spec else format(int(self), spec)

    def __str__(self) -> str:
        return self.expr

    def __repr__(self) -> str:
        return f"DimInt({int(self)}, {self.expr!r}, {self.lo}..{self.hi})"

    def __neg__(self) -> Any:
        if self.negated is not None:
            return self.negated
        return DimInt(-int(self), f"(0-{self._expr})" if self._expr is not None else None, -self.hi, -self.lo, self)

    def __pos__(self) -> DimInt:
        return self

    def __reduce__(self) -> Any:  # pickles (and deep-copies) as its value
        return int, (int(self),)


def _operator(op: str, reflected: bool) -> Any:
    def method(self: DimInt, other: Any) -> Any:
        return _combine(other, self, op) if reflected else _combine(self, other, op)

    return method


# Arithmetic keeps the expression (a result that may pass 2**31 computes in 64 bits).
for _name, _op in (("add", "+"), ("sub", "-"), ("mul", "*"), ("floordiv", "/"), ("mod", "%")):
    setattr(DimInt, f"__{_name}__", _operator(_op, False))
    setattr(DimInt, f"__r{_name}__", _operator(_op, True))


def upper(value: int) -> int:
    """The largest value ``value`` takes over the profile (itself when it is fixed)."""
    return value.hi if isinstance(value, DimInt) else int(value)


def lower(value: int) -> int:
    """The smallest value ``value`` takes over the profile."""
    return value.lo if isinstance(value, DimInt) else int(value)


def is_dynamic(value: int) -> bool:
    return isinstance(value, DimInt)


def c_int(value: int, suffix: str = "", static_suffix: str | None = None) -> str:
    """``value`` as a C operand of the unsigned type a literal ``suffix`` ("u", "ull") gives
    (a plain int takes ``static_suffix`` instead where one is given)."""
    if not isinstance(value, DimInt):
        return f"{int(value)}{suffix if static_suffix is None else static_suffix}"
    ctype = {"": "", "u": "unsigned int", "ull": "unsigned long long"}[suffix]
    return f"(({ctype})({value.expr}))" if ctype else f"({value.expr})"


def dim_key(value: int) -> int | tuple[int, str | None, int, int]:
    """A hashable identity of a dim: a plain int, or a DimInt's value with its expression and
    range (a DimInt equals any int of its value, so it cannot stand for itself in a key)."""
    return (int(value), value._expr, value.lo, value.hi) if isinstance(value, DimInt) else int(value)


def dim(value: int, name: str, lo: int, hi: int) -> int:
    """The dim argument ``name``: a DimInt where it varies (lo < hi), else the plain value."""
    return DimInt(value, name, lo, hi) if lo < hi else int(value)


# Decisions that shape a kernel's source compare dims by what they are over the whole profile
# (their expressions), never by their values at the shapes being planned.

def dims_text(shape: Sequence[int]) -> str:
    """``shape`` as a list in a source comment: ``str(list(shape))`` for plain ints, the
    expressions for dims of a generic plan (a list's str would print their reprs)."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _names(value: int) -> list[str]:
    if not is_dynamic(value):
        return []
    try:
        return list(dim_names(str(value)))
    except ValueError:  # no C form
        return []


def _evaluate(value: int, env: dict[str, int]) -> int | None:
    """A dim expression's value with its dim arguments ``env`` (None if it has no C form)."""
    if not is_dynamic(value):
        return int(value)
    try:
        code = str(value)
    except ValueError:
        return None
    return _evaluate_text(code, tuple(sorted(env.items())))


@lru_cache(maxsize=8192)
def _evaluate_text(code: str, env: tuple[tuple[str, int], ...]) -> int:
    code = code.replace("(long long)", "").replace("/", "//")
    return eval(code, {"__builtins__": {}}, dict(env))  # noqa: S307 - our own arithmetic on names


@lru_cache(maxsize=1024)
def _sample(names: tuple[str, ...], k: int) -> dict[str, int]:
    """Fixed, unrelated test values for the dim arguments ``names`` (the k-th assignment)."""
    return {n: 1000 + int(hashlib.sha256(f"{n}:{k}".encode()).hexdigest()[:8], 16) % 100003 for n in names}


def same_dim(a: int, b: int) -> bool:
    """Whether ``a`` and ``b`` are the same size at every shape of the profile: equal plain
    ints, or dim expressions that agree as functions of the dim arguments (``768*s`` and
    ``s*768``; ``0*s`` and 0). Decided from the expressions alone, so the answer is the same
    at every shape."""
    if not is_dynamic(a) and not is_dynamic(b):
        return int(a) == int(b)
    names = tuple(sorted(set(_names(a)) | set(_names(b))))
    for k in range(3):
        env = _sample(names, k)
        x, y = _evaluate(a, env), _evaluate(b, env)
        if x is None or x != y:
            return False
    return int(a) == int(b)  # always, for expressions that agree


def divisible(value: int, by: int) -> bool:
    """Whether ``value`` is a multiple of ``by`` at every shape of the profile: a plain int
    that is, or a dim expression of sums and products that is for every integer value of its
    dim arguments (it then depends only on their residues mod ``by``). False where unsure."""
    if not is_dynamic(value):
        return int(value) % by == 0
    try:
        text = str(value)
    except ValueError:
        return False
    if "/" in text or "%" in text:
        return False
    names = _names(value)
    if by ** len(names) > 4096:
        return False
    return all(_evaluate(value, dict(zip(names, residues))) % by == 0
               for residues in itertools.product(range(by), repeat=len(names)))


@contextmanager
def dim_bindings(values: Mapping[str, int]) -> Iterator[None]:
    """While lowering one node: the values of its dim arguments (name -> int)."""
    token = _bindings.set(dict(values))
    try:
        yield
    finally:
        _bindings.reset(token)


@lru_cache(maxsize=8192)
def dim_names(text: str) -> tuple[str, ...]:
    """The dim arguments ``text`` names, sorted (memoized: a generic plan's sources and
    expressions are the same text at every shape, and planning a new shape asks again)."""
    return tuple(sorted(set(DIM_NAME.findall(text)))) if "rtxd_" in text else ()


def dim_arguments(source: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The dim arguments ``source`` uses (sorted names) and their values while lowering."""
    names = dim_names(source)
    if not names:
        return (), ()
    bound = _bindings.get() or {}
    missing = [n for n in names if n not in bound]
    if missing:
        raise ValueError(f"kernel source uses dim argument(s) {missing} that no node being lowered binds")
    return names, tuple(int(bound[n]) for n in names)


_INT_OPS = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": int.__floordiv__, "%": int.__mod__}


def _combine(a: Any, b: Any, op: str) -> Any:
    if not isinstance(a, int) or not isinstance(b, int) or isinstance(a, bool) or isinstance(b, bool):
        return NotImplemented
    value = _INT_OPS[op](int(a), int(b))
    if not isinstance(a, DimInt) and not isinstance(b, DimInt):
        return value
    if op == "*" and (_is(a, 1) or _is(b, 1)):
        return b if _is(a, 1) else a
    if op in "+-" and _is(b, 0):
        return a
    if op == "/" and _is(b, 1):
        return a
    lo, hi = _bounds(a, b, op)
    if op in "/%" and lower(a) < 0:  # C truncates where Python floors
        if op == "/" and isinstance(a, DimInt) and a.negated is not None and lower(b) > 0:
            return -_combine(_combine(a.negated, b, "+") - 1, b, "/")  # -(-x // b) is ceil(x / b)
        return DimInt(value, None, lo, hi)
    if (isinstance(a, DimInt) and a._expr is None) or (isinstance(b, DimInt) and b._expr is None):
        return DimInt(value, None, lo, hi)
    left, right = _operand(a), _operand(b)
    if max(abs(lo), abs(hi), abs(lower(a)), abs(upper(a)), abs(lower(b)), abs(upper(b))) > INT_MAX:
        left = f"(long long){left}"
    return DimInt(value, f"({left}{op}{right})", lo, hi)


def _is(value: int, literal: int) -> bool:
    return not isinstance(value, DimInt) and int(value) == literal


def _operand(value: int) -> str:
    return value.expr if isinstance(value, DimInt) else str(int(value))


def _bounds(a: int, b: int, op: str) -> tuple[int, int]:
    a_lo, a_hi, b_lo, b_hi = lower(a), upper(a), lower(b), upper(b)
    if op == "+":
        return a_lo + b_lo, a_hi + b_hi
    if op == "-":
        return a_lo - b_hi, a_hi - b_lo
    if op == "*":
        ends = (a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi)
        return min(ends), max(ends)
    if b_lo <= 0:
        raise ValueError(f"a dim expression divides by a value that may be zero or negative: {b!r}")
    if op == "/":
        return a_lo // b_hi, a_hi // b_lo
    return (a_lo, a_hi) if a_hi < b_lo else (0, b_hi - 1)  # %
