"""The one way generated CUDA is templated: ``render(template, name=value, ...)`` fills each
``${name}`` of the template and refuses a placeholder left unfilled or a value with no
placeholder, so a template and its caller cannot drift apart silently. ``$`` never occurs in
CUDA C++, so templates keep their braces as they are."""
from __future__ import annotations

import re

from . import CodegenError

PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def placeholders(template: str) -> set[str]:
    return set(PLACEHOLDER.findall(template))


def render(template: str, **subs: object) -> str:
    """``template`` with every ``${name}`` replaced by ``str(subs[name])``. CodegenError (a
    bug in a generator, named in the message) if a placeholder has no value, a value has no
    placeholder, or a ``$`` is left that is not a placeholder."""
    wanted = placeholders(template)
    missing, unknown = wanted - subs.keys(), subs.keys() - wanted
    if missing or unknown:
        raise CodegenError(f"template: placeholders without values {sorted(missing)}, "
                           f"values without placeholders {sorted(unknown)}")
    filled = PLACEHOLDER.sub(lambda m: str(subs[m[1]]), template)
    return filled
