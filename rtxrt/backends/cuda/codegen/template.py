"""The one way generated CUDA is templated: ``render(template, name=value, ...)`` fills each
``${name}`` of the template and refuses a placeholder left unfilled or a value with no
placeholder, so a template and its caller cannot drift apart silently. ``$`` never occurs in
CUDA C++, so templates keep their braces as they are.

Values are text (code) or integers: a float or a bool would be written as Python prints it
(``1e-05``, ``True``), which CUDA reads otherwise or not at all, so those go through
``ctypes_map.literal`` or ``int()`` first. A kernel's function is named ``${kernel}``,
filled with ``KERNEL_NAME`` until ``KernelSource.named`` names it after its source's hash.
"""
from __future__ import annotations

import numbers
import re

from . import CodegenError
from .dynamic import plan_memo

PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_STRAY = re.compile(r"\$(?!\{\w+\})")  # a $ that does not open a placeholder


def placeholders(template: str) -> set[str]:
    """The names of ``template``'s placeholders."""
    return set(PLACEHOLDER.findall(template))


def render(template: str, **values: str | int) -> str:
    """``template`` with every ``${name}`` replaced by ``values[name]``. CodegenError (a bug
    in a generator, named in the message) if a placeholder has no value, a value has no
    placeholder, the template holds a ``$`` that opens no placeholder, or a value is neither
    text nor an integer, or is text holding a ``$`` (a template passed on unrendered)."""
    literals, names, wanted = _parts(template)
    missing, unknown = wanted - values.keys(), values.keys() - wanted
    if missing or unknown:
        raise CodegenError(f"template: placeholders without values {sorted(missing)}, "
                           f"values without placeholders {sorted(unknown)}")
    for name, value in values.items():
        _check_value(name, value)
    text = [literals[0]]
    for name, literal in zip(names, literals[1:]):
        text += (str(values[name]), literal)
    return "".join(text)


@plan_memo(maxsize=512)
def _parts(template: str) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]:
    """``template`` split at its placeholders: the text around them, their names in order and
    the set of names (generators render the same templates at every shape)."""
    stray = _STRAY.search(template)
    if stray:
        raise CodegenError(f"template: a '$' that opens no placeholder at {template[stray.start():][:40]!r}")
    pieces = PLACEHOLDER.split(template)
    return tuple(pieces[0::2]), tuple(pieces[1::2]), frozenset(pieces[1::2])


def _check_value(name: str, value: object) -> None:
    kind = type(value)
    if kind is str:
        if "$" in value:
            raise CodegenError(f"template: the value of {name} holds a '$' (an unrendered template?)")
    elif kind is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise CodegenError(f"template: the value of {name} is a {type(value).__name__} ({value!r}); "
                           "values are code (str) or integers")
