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
profile), not from ``d`` itself. Decisions it makes on the value (a tile by size, a bounds
check) are comparisons, which a lowering template notes as guards (``recording_guards``;
plan/lowering_templates.py); ``int(d)`` notes that the value itself was read. A decision made on the value shows as a different source at
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

from . import CodegenError

INT_MAX = 2**31 - 1
DIM_NAME = re.compile(r"\brtxd_[io]\d+_\d+\b")

_bindings: ContextVar[Mapping[str, int] | None] = ContextVar("rtxrt_dim_bindings", default=None)
_guards: ContextVar[list | None] = ContextVar("rtxrt_dim_guards", default=None)
_memos: list[Any] = []


def plan_memo(maxsize: int) -> Any:
    """``lru_cache`` for a pure function that planning a generic engine's new shape calls
    again with the same arguments; ``clear_plan_memos`` empties every one of them (a test
    compares plans made with them warm to plans made cold)."""
    def wrap(function: Any) -> Any:
        cached = lru_cache(maxsize=maxsize)(function)
        _memos.append(cached)
        return cached

    return wrap


def clear_plan_memos() -> None:
    for memo in _memos:
        memo.cache_clear()


class NoCForm(CodegenError, ValueError):
    """A dim expression that divides a value that may be negative (C's division truncates
    where Python's floors): no kernel can compute it, so no lowering can use it."""


class DimInt(int):
    """An int (its value at the planned shapes) that formats as a C expression; ``lo``/``hi``
    bound it over the profile."""

    lo: int
    hi: int
    negated: DimInt | None  # this is -negated (so that ceil division -(-a // b) stays exact)

    def __new__(cls, value: int, expr: str | _Parts | None, lo: int, hi: int, negated: DimInt | None = None) -> DimInt:
        self = int.__new__(cls, value)
        self._expr, self.lo, self.hi, self.negated = expr, lo, hi, negated
        return self

    @property
    def expr(self) -> str:
        if self._expr is None:  # C's division truncates where Python's floors
            raise NoCForm(f"{int.__int__(self)}: a dim expression dividing a value that may be negative has no C form")
        if type(self._expr) is tuple:
            _write(self)
        return self._expr

    def __format__(self, spec: str) -> str:
        return self.expr if not spec else format(int(self), spec)  # (int() notes the read)

    def __str__(self) -> str:
        return self.expr

    def __repr__(self) -> str:
        return f"DimInt({int(self)}, {self.expr!r}, {self.lo}..{self.hi})"

    def __neg__(self) -> Any:
        if self.negated is not None:
            return self.negated
        return DimInt(int.__neg__(self), (0, "-", self, False) if self._expr is not None else None, -self.hi, -self.lo, self)

    def __pos__(self) -> DimInt:
        return self

    def __reduce__(self) -> Any:  # pickles (and deep-copies) as its value
        return int, (int(self),)


# Most DimInts a lowering computes (grids, sizes, bounds checks) are never formatted: a result
# of arithmetic keeps its operands, (left, op, right, whether left is cast to 64 bits), and
# writes its C text when first asked.
_Parts = tuple[int, str, int, bool]


def _write(root: DimInt) -> None:
    """Writes the C text of ``root`` and of every unwritten expression under it (without
    recursion: a long sum nests deeply)."""
    stack = [root]
    while stack:
        value = stack[-1]
        if type(value._expr) is not tuple:  # written already (an operand met twice: d * d)
            stack.pop()
            continue
        left, op, right, wide = value._expr
        pending = [d for d in (left, right) if type(d) is DimInt and type(d._expr) is tuple]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        left = left._expr if type(left) is DimInt else str(left)
        right = right._expr if type(right) is DimInt else str(right)
        value._expr = f"({'(long long)' if wide else ''}{left}{op}{right})"


def _operator(op: str, reflected: bool) -> Any:
    def method(self: DimInt, other: Any) -> Any:
        return _combine(other, self, op) if reflected else _combine(self, other, op)

    return method


# Arithmetic keeps the expression (a result that may pass 2**31 computes in 64 bits).
for _name, _op in (("add", "+"), ("sub", "-"), ("mul", "*"), ("floordiv", "/"), ("mod", "%")):
    setattr(DimInt, f"__{_name}__", _operator(_op, False))
    setattr(DimInt, f"__r{_name}__", _operator(_op, True))


# What a lowering decided from a dim's value. While ``recording_guards`` is on, each comparison
# of a DimInt notes (left, op, right, outcome), and each use of its bare value (int(), a hash,
# true division, ...) notes that the value itself was read: a lowering's programs are the same
# function of the dim arguments at every shape where its guards come out the same
# (plan/lowering_templates.py).
Guard = tuple[int, str, int, bool]


@contextmanager
def recording_guards() -> Iterator[list[Guard]]:
    """The guards noted while lowering one node (a fresh list; an outer recording resumes after)."""
    token = _guards.set([])
    try:
        yield _guards.get()
    finally:
        _guards.reset(token)


def _comparison(op: str, compare: Any) -> Any:
    def method(self: DimInt, other: Any) -> Any:
        outcome = compare(self, other)
        guards = _guards.get()
        if guards is not None:
            if outcome is not NotImplemented:
                guards.append((self, op, other, outcome))
            elif isinstance(other, float):  # (the float then compares the bare value)
                guards.append((self, "==", int.__int__(self), True))
        return outcome

    return method


for _name, _op in (("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="), ("eq", "=="), ("ne", "!=")):
    setattr(DimInt, f"__{_name}__", _comparison(_op, getattr(int, f"__{_name}__")))


def _value_read(name: str) -> Any:
    plain = getattr(int, name)

    def method(self: DimInt, *args: Any) -> Any:
        guards = _guards.get()
        if guards is not None:
            guards.append((self, "==", int.__int__(self), True))
        return plain(self, *args)

    return method


_not_zero = _comparison("!=", int.__ne__)
DimInt.__bool__ = lambda self: _not_zero(self, 0)  # type: ignore[method-assign]
for _name in ("__hash__", "__int__", "__index__", "__float__", "__truediv__", "__rtruediv__",
              "__pow__", "__rpow__", "__lshift__", "__rlshift__", "__rshift__", "__rrshift__", "__and__",
              "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__divmod__", "__rdivmod__", "__abs__",
              "__invert__", "__round__", "__trunc__", "__floor__", "__ceil__", "bit_length", "to_bytes"):
    setattr(DimInt, _name, _value_read(_name))


def upper(value: int) -> int:
    """The largest value ``value`` takes over the profile (itself when it is fixed)."""
    return value.hi if isinstance(value, DimInt) else int(value)


def lower(value: int) -> int:
    """The smallest value ``value`` takes over the profile."""
    return value.lo if isinstance(value, DimInt) else int(value)


def peek(value: int) -> int:
    """``value`` as a plain int, noting no guard: only for a check the caller makes of a
    value it has derived as an expression too (a decision made on it must use a comparison)."""
    return int.__int__(value)


def is_dynamic(value: int) -> bool:
    return isinstance(value, DimInt)


def fixed_as_ints(dims: Sequence[int]) -> tuple[int, ...]:
    """``dims`` with a plain int for each DimInt of a fixed size (a shape-agnostic node's:
    ops/lowering.py), for a generator that keeps such sizes in its source; those that vary
    over a profile stay DimInts."""
    return tuple(int.__int__(d) if isinstance(d, DimInt) and d.lo == d.hi else d for d in dims)


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
    if not isinstance(value, DimInt):
        return int(value)
    return (int(value), *symbol_key(value))


def symbol_key(value: DimInt) -> tuple[str | None, int, int]:
    """A DimInt's expression and range without its value (reading nothing a guard would note)."""
    return None if value._expr is None else value.expr, value.lo, value.hi


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


@plan_memo(maxsize=8192)
def _evaluate_text(code: str, env: tuple[tuple[str, int], ...]) -> int:
    code = code.replace("(long long)", "").replace("/", "//")
    return eval(code, {"__builtins__": {}}, dict(env))  # noqa: S307 - our own arithmetic on names


@plan_memo(maxsize=1024)
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
    return int.__eq__(a, b)  # always, for expressions that agree (compared as plain ints: no guard)


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


def current_bindings() -> dict[str, int]:
    """The dim arguments of the node being lowered (name -> value)."""
    return dict(_bindings.get() or {})


@plan_memo(maxsize=8192)
def dim_names(text: str) -> tuple[str, ...]:
    """The dim arguments ``text`` names, sorted (memoized: a generic plan's sources and
    expressions are the same text at every shape, and planning a new shape asks again)."""
    return tuple(sorted(set(DIM_NAME.findall(text)))) if "rtxd_" in text else ()


def dim_arguments(source: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The dim arguments ``source`` uses (sorted names) and their values while lowering (each
    a DimInt that is its own name: a launch's dim values follow the shapes like its grid)."""
    names = dim_names(source)
    if not names:
        return (), ()
    bound = _bindings.get() or {}
    missing = [n for n in names if n not in bound]
    if missing:
        raise ValueError(f"kernel source uses dim argument(s) {missing} that no node being lowered binds")
    return names, tuple(DimInt(bound[n], n, bound[n], bound[n]) for n in names)


_INT_OPS = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": int.__floordiv__, "%": int.__mod__}


def _combine(a: Any, b: Any, op: str) -> Any:
    # (planning a new shape does this thousands of times: each operand's kind is found once)
    a_dim, b_dim = type(a) is DimInt, type(b) is DimInt
    if not (a_dim or isinstance(a, int)) or not (b_dim or isinstance(b, int)) or a is True or a is False \
            or b is True or b is False:
        return NotImplemented
    value = _INT_OPS[op](a, b)
    if not a_dim and not b_dim:
        return value
    if not a_dim:
        a = a_lo = a_hi = int(a)
        if op == "*" and a == 1:
            return b
    else:
        a_lo, a_hi = a.lo, a.hi
    if not b_dim:
        b = b_lo = b_hi = int(b)
        if (op == "*" or op == "/") and b == 1 or (op == "+" or op == "-") and b == 0:
            return a
    else:
        b_lo, b_hi = b.lo, b.hi
    lo, hi = _bounds(a_lo, a_hi, b_lo, b_hi, b, op)
    if (op == "/" or op == "%") and a_lo < 0:  # C truncates where Python floors
        if op == "/" and a_dim and a.negated is not None and b_lo > 0:
            return -_combine(_combine(a.negated, b, "+") - 1, b, "/")  # -(-x // b) is ceil(x / b)
        return DimInt(value, None, lo, hi)
    if (a_dim and a._expr is None) or (b_dim and b._expr is None):
        return DimInt(value, None, lo, hi)
    wide = max(lo, hi, a_lo, a_hi, b_lo, b_hi) > INT_MAX or min(lo, hi, a_lo, a_hi, b_lo, b_hi) < -INT_MAX
    return DimInt(value, (a, op, b, wide), lo, hi)


def _bounds(a_lo: int, a_hi: int, b_lo: int, b_hi: int, b: int, op: str) -> tuple[int, int]:
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
