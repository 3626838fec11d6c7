"""A generic engine's new shape re-evaluates each node's launch geometry instead of lowering it.

In a generic plan a lowering computes with DimInts (codegen/dynamic.py): its kernels' sources
are the same at every shape of the profile, and the numbers it gives the runtime (grids, dim
arguments, GEMM sizes, scratch and copy sizes, output shapes) are expressions over the node's
dim arguments. A template keeps a node's programs with those expressions in them, and the
guards its lowering noted: every comparison it made on a dim (a tile choice, a bounds check)
with its outcome, and every bare read of a dim's value. At a shape where every guard comes out
the same, the programs are the template's expressions evaluated there, which takes
microseconds where lowering takes a millisecond.

A lowering can still read a value where no guard sees it (numpy on a dim, say). So a template
serves only once it has been checked: at a second shape where its guards hold, the node is
lowered as usual and the result compared with the template's; a mismatch retires the node's
template for good (it is then lowered at every shape, as before). The generic engine checks
its templates at shapes between the profile's min, opt and max when it is built (generic.py).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import CodeType
from typing import Any

import numpy as np

from ..codegen import CodegenError
from ..codegen.dynamic import DimInt, Guard, current_bindings, plan_memo, recording_guards
from ..ops.context import LowerContext
from .lowering_memo import read_values
from .program import NodeProgram

Lowering = Callable[[LowerContext], tuple[list[NodeProgram], set]]
MAX_TEMPLATES_PER_NODE = 16  # guard classes kept per node (the oldest goes first)


def plain(value: Any) -> Any:
    """``value`` (programs, forms, steps) with a plain int for each DimInt in it."""
    return _map_dims(value, int.__int__)


class LoweringTemplates:
    """The templates of one profile's nodes, kept from plan to plan of its generic engine."""

    def __init__(self) -> None:
        self._entries: dict[tuple, list[_Entry]] = {}
        self._retired: set[tuple] = set()
        self.replayed = self.lowered = 0  # nodes whose programs came from a template / a lowering

    def programs(self, ctx: LowerContext, key: tuple | None, lower: Lowering) -> tuple[list[NodeProgram], set]:
        """The node's programs (plain ints) and the constants its lowering read: from a
        checked template whose guards hold at these dims, else from ``lower(ctx)``. ``key``:
        ``lowering_key(ctx, symbolic=True)``."""
        env = current_bindings()
        if key is None or key in self._retired:
            self.lowered += 1
            programs, reads = lower(ctx)
            return plain(programs), reads
        entry = self._find(key, ctx, env)
        if entry is not None and entry.template.checked:
            self.replayed += 1
            return _result(entry.template.evaluate(env), entry.reads)
        self.lowered += 1
        with recording_guards() as guards:
            try:
                raw, reads = lower(ctx)
            except CodegenError as exc:  # (Unsupported, WrongForm, NeedsValue: the builder tries again)
                raw, reads = _bare(exc), set(ctx.reads)
        outcome = plain(raw)
        if entry is not None:  # a template whose guards hold here, not checked yet
            if entry.template.made_at != env:
                if same(entry.template.evaluate(env), outcome):
                    entry.template.checked = True
                else:
                    self._retire(key)
            return _result(outcome, reads)
        template = Template.make(raw, guards, env)
        if template is None:
            self._retire(key)
        else:
            order = sorted(reads, key=str)
            entries = self._entries.setdefault(key, [])
            entries.append(_Entry(read_values(ctx, order), set(reads), template))
            if len(entries) > MAX_TEMPLATES_PER_NODE:  # (a lowering that reads a value makes one per value)
                entries.pop(0)
        return _result(outcome, reads)

    def _find(self, key: tuple, ctx: LowerContext, env: Mapping[str, int]) -> _Entry | None:
        for entry in self._entries.get(key, ()):
            if entry.read_values == read_values(ctx, [r[0] for r in entry.read_values]) and entry.template.holds(env):
                return entry
        return None

    def _retire(self, key: tuple) -> None:
        self._entries.pop(key, None)
        self._retired.add(key)


def _result(outcome: list[NodeProgram] | CodegenError, reads: set) -> tuple[list[NodeProgram], set]:
    if isinstance(outcome, CodegenError):
        raise _bare(outcome)  # a copy: raising the kept one again would chain every replay's frames onto it
    return outcome, reads


def _bare(error: CodegenError, fields: Mapping[str, Any] | None = None) -> CodegenError:
    """A copy of ``error`` (its message, its fields or ``fields``) without the traceback and
    context that would keep the lowering's frames, and the plan they saw, alive with it."""
    kind = type(error)
    copy = kind.__new__(kind, *error.args)  # (not __init__: a subclass's takes other arguments)
    copy.args = error.args
    vars(copy).update(vars(error) if fields is None else fields)
    return copy


@dataclasses.dataclass
class _Entry:
    read_values: tuple  # what the lowering read beyond its key (lowering_memo.read_values)
    reads: set
    template: Template


@dataclasses.dataclass
class Template:
    """A node's programs as made at ``made_at`` (dim argument -> value), DimInts kept, or the
    error its lowering raised there (a lowering that refuses these forms refuses them again)."""

    outcome: list[NodeProgram] | CodegenError
    tests: str  # every guard, as one Python boolean expression over the dim arguments ("" for none)
    leaves: str  # the tuple of every DimInt in ``outcome``, in the order _map_dims meets them
    holders: set[int]  # ids of the parts of ``outcome`` holding a DimInt (the rest is shared as it is)
    made_at: dict[str, int]
    checked: bool = False

    @classmethod
    def make(cls, outcome: list[NodeProgram] | CodegenError, guards: list[Guard],
             env: Mapping[str, int]) -> Template | None:
        """None where a guard or a number has no expression to evaluate (no C form)."""
        try:
            tests = " and ".join(dict.fromkeys(_guard_text(g) for g in guards))
            leaves: list[str] = []
            _map_dims(outcome, lambda d: leaves.append(_python(d.expr)) or d)
        except ValueError:
            return None
        holders: set[int] = set()
        _holds_dims(outcome, holders)
        return cls(outcome, tests, f"({''.join(f'{leaf},' for leaf in leaves)})", holders, dict(env))

    def holds(self, env: Mapping[str, int]) -> bool:
        try:
            return not self.tests or bool(eval(_code(self.tests), {"__builtins__": {}}, dict(env)))  # noqa: S307
        except (NameError, ZeroDivisionError):  # (our own arithmetic on the dim arguments)
            return False

    def evaluate(self, env: Mapping[str, int]) -> list[NodeProgram] | CodegenError:
        values = iter(eval(_code(self.leaves), {"__builtins__": {}}, dict(env)))  # noqa: S307
        return _map_dims(self.outcome, lambda _: next(values), self.holders)


@plan_memo(maxsize=4096)
def _code(text: str) -> CodeType:
    return compile(text, "<dims>", "eval")


def _guard_text(guard: Guard) -> str:
    left, op, right, outcome = guard
    test = f"({_operand(left)} {op} {_operand(right)})"
    return test if outcome else f"(not {test})"


def _operand(value: Any) -> str:
    if type(value) is DimInt:
        return _python(value.expr)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise ValueError(f"a guard compares a dim with {type(value).__name__}")


def _python(expr: str) -> str:
    """A dim expression's C text as Python (its divisions are of values that are never
    negative, where C's and Python's agree; one that may be has no C form)."""
    return expr.replace("(long long)", "").replace("/", "//")


_FIELDS: dict[type, tuple[str, ...]] = {}


def _map_dims(value: Any, fn: Callable[[DimInt], Any], holders: set[int] | None = None) -> Any:
    """``value`` with ``fn(d)`` for each DimInt ``d`` in it (through dataclasses, tuples,
    lists and dict values); parts without one are the same objects. ``holders``: the ids of
    the parts that hold one (``_holds_dims``), where known: the walk skips the others."""
    kind = type(value)
    if kind is DimInt:
        return fn(value)
    if holders is not None and id(value) not in holders:
        return value
    if kind is tuple or kind is list:
        items = [_map_dims(v, fn, holders) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else kind(items)
    if kind is dict:
        items = {k: _map_dims(v, fn, holders) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if isinstance(value, CodegenError):  # its fields (WrongForm's wanted forms), its message as it is
        fields = _map_dims(vars(value), fn, holders)
        return value if fields is vars(value) else _bare(value, fields)
    changes = {}
    for name in _fields(value):
        old = getattr(value, name)
        new = _map_dims(old, fn, holders)
        if new is not old:
            changes[name] = new
    if not changes:
        return value
    made = object.__new__(kind)  # the fields as they are: a dataclass's checks passed when it was made
    vars(made).update(vars(value), **changes)
    return made


def _holds_dims(value: Any, holders: set[int]) -> bool:
    """Whether ``value`` holds a DimInt; adds the ids of the parts that do to ``holders``."""
    kind = type(value)
    if kind is DimInt:
        return True
    if kind is tuple or kind is list:
        parts = list(value)
    elif kind is dict:
        parts = list(value.values())
    elif isinstance(value, CodegenError):
        parts = [vars(value)]
    else:
        parts = [getattr(value, name) for name in _fields(value)]
    found = [_holds_dims(part, holders) for part in parts]  # (every part: each one's ids are needed)
    if any(found):
        holders.add(id(value))
        return True
    return False


def _fields(value: Any) -> tuple[str, ...]:
    """The init fields of a dataclass instance (none for anything else: ints, str, arrays)."""
    kind = type(value)
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value) if f.init) \
            if dataclasses.is_dataclass(value) and not isinstance(value, type) else ()
    return names


def same(a: Any, b: Any) -> bool:
    """Whether two plain-int program structures are equal (arrays by dtype, shape and bytes)."""
    if type(a) is not type(b):
        return isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and a == b
    if isinstance(a, CodegenError):
        return a.args == b.args and same(vars(a), vars(b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b
