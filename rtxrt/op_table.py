"""The one mechanism by which every layer finds what it holds for an operator: op schemas
(rtxrt.ir.ops), reference kernels (rtxrt.backends.reference.ops) and GPU lowerings
(rtxrt.backends.cuda.ops) each live in an ``OpTable``.

A table belongs to a package. Each module of that package adds its entries when it is
imported (``table.add(...)``, or ``@table.register("Relu", ...)`` on a function or class),
and the first read of the table imports every module of the package, so adding an operator
never means editing a list of modules. Keys are (domain, op type); "ai.onnx" is the default
domain, spelled "".
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def canonical_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def op_key(op_type: str, domain: str = "") -> str:
    """An operator as tables and options spell it: "Conv", "rtxrt::FusedConv"."""
    domain = canonical_domain(domain)
    return f"{domain}::{op_type}" if domain else op_type


class OpTable(Generic[T]):
    """What one layer holds per operator (``what`` names it in errors), filled by the modules
    of ``package`` as they import."""

    def __init__(self, what: str, package: str):
        self.what, self.package = what, package
        self._entries: dict[tuple[str, str], T] = {}
        self._loaded = self._loading = False

    def add(self, op_type: str, entry: T, domain: str = "") -> T:
        key = (canonical_domain(domain), op_type)
        if key in self._entries:
            raise RuntimeError(f"two {self.what}s for {op_key(op_type, domain)}: "
                               f"{self._entries[key]!r} and {entry!r}")
        self._entries[key] = entry
        return entry

    def register(self, *op_types: str, domain: str = "") -> Callable[[T], T]:
        """A decorator adding the decorated function or class under each of ``op_types``."""
        def add_all(entry: T) -> T:
            for op_type in op_types:
                self.add(op_type, entry, domain)
            return entry
        return add_all

    def get(self, op_type: str, domain: str = "") -> T | None:
        return self.entries().get((canonical_domain(domain), op_type))

    def entries(self) -> dict[tuple[str, str], T]:
        """Every entry by (domain, op type), once every module of the package is imported."""
        if not (self._loaded or self._loading):  # a module being imported may read the table
            self._loading = True
            try:
                for info in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
                    importlib.import_module(f"{self.package}.{info.name}")
            finally:
                self._loading = False
            self._loaded = True
        return self._entries

    def __contains__(self, key: tuple[str, str]) -> bool:
        return (canonical_domain(key[0]), key[1]) in self.entries()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(dict(self.entries()))
