"""Reference kernels, one family of operators per module; each registers on import."""
from __future__ import annotations

from ....submodules import import_submodules


def load_all() -> None:
    import_submodules(__name__)
