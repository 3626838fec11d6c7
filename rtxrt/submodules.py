"""Importing every module of a package once: op schemas and kernels register themselves on import."""
from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def import_submodules(package: str) -> None:
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{info.name}")
