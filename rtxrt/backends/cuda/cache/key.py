"""What a runtime-cache entry depends on, and the stable digest that names its directory.

Everything that can change the JIT's output is in the key: the model (its IR hash and AOT
options), the GPU and its software (name, compute capability, driver, NVRTC), the rtxrt version
and the runtime options (precision override, specialization strategy, shape profiles, ...).
Change any of them and the digest changes, so a stale entry is never found, only left for LRU
eviction.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from ....version import __version__

KEY_SCHEMA = 1  # bump when the key's fields or their meaning change


def canonical_json(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, no NaN, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _plain(options: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """A JSON round trip of ``options`` (tuples become lists), without None values: leaving an
    option out and passing None must give the same key."""
    try:
        text = canonical_json({str(k): v for k, v in (options or {}).items() if v is not None})
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cache key {what} must be JSON values (str, int, float, bool, list, dict): {exc}") from None
    return json.loads(text)


class DeviceLike(Protocol):
    """What the key needs of a GPU; ``rtxrt.backends.cuda.device.DeviceInfo`` has it."""

    name: str
    compute_capability: tuple[int, int]
    driver_version: str
    nvrtc_version: str


@dataclass(frozen=True)
class CacheKey:
    """Identifies one JIT result. Driver and NVRTC versions are strings as the device probe
    reports them; options are plain JSON values (treat them as read-only)."""

    ir_hash: str
    gpu_name: str
    compute_capability: tuple[int, int]
    driver_version: str
    nvrtc_version: str
    aot_options: Mapping[str, Any] = field(default_factory=dict)
    runtime_options: Mapping[str, Any] = field(default_factory=dict)
    rtxrt_version: str = __version__

    def __post_init__(self) -> None:
        major, minor = self.compute_capability
        object.__setattr__(self, "compute_capability", (int(major), int(minor)))
        for name in ("ir_hash", "gpu_name", "driver_version", "nvrtc_version", "rtxrt_version"):
            object.__setattr__(self, name, str(getattr(self, name)))
        object.__setattr__(self, "aot_options", _plain(self.aot_options, "aot_options"))
        object.__setattr__(self, "runtime_options", _plain(self.runtime_options, "runtime_options"))

    def __hash__(self) -> int:  # the option dicts are not hashable; the digest covers them
        return hash(self.digest)

    @classmethod
    def for_model(cls, model: str | os.PathLike | bytes, device: DeviceLike,
                  runtime_options: Mapping[str, Any] | None = None) -> CacheKey:
        """The key of a .rtxir (path or bytes) on ``device``: IR hash and AOT options come from
        the file's header (cheap: no graph is parsed)."""
        from ....format import read_header

        info = read_header(model)
        return cls(info.ir_hash, device.name, device.compute_capability, device.driver_version,
                   device.nvrtc_version, info.options, runtime_options or {})

    @property
    def arch(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": KEY_SCHEMA, "ir_hash": self.ir_hash, "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability), "driver_version": self.driver_version,
            "nvrtc_version": self.nvrtc_version, "aot_options": self.aot_options,
            "runtime_options": self.runtime_options, "rtxrt_version": self.rtxrt_version,
        }

    @classmethod
    def from_json(cls, obj: Any) -> CacheKey:
        """Inverse of to_json; ValueError for anything else (a damaged or foreign key file)."""
        if not isinstance(obj, dict) or obj.get("schema") != KEY_SCHEMA:
            raise ValueError("not a cache key of this rtxrt (schema differs)")
        try:
            cc = obj["compute_capability"]
            if not (isinstance(cc, list) and len(cc) == 2 and all(type(v) is int for v in cc)):
                raise ValueError("compute_capability must be two integers")
            strings = [obj[k] for k in ("ir_hash", "gpu_name", "driver_version", "nvrtc_version", "rtxrt_version")]
            if not all(isinstance(s, str) for s in strings) or not all(
                    isinstance(obj[k], dict) for k in ("aot_options", "runtime_options")):
                raise ValueError("wrong field types")
            return cls(obj["ir_hash"], obj["gpu_name"], tuple(cc), obj["driver_version"], obj["nvrtc_version"],
                       obj["aot_options"], obj["runtime_options"], obj["rtxrt_version"])
        except KeyError as exc:
            raise ValueError(f"malformed cache key: it lacks {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"malformed cache key: {exc}") from None

    @cached_property
    def digest(self) -> str:
        """64 hex digits: the entry's directory name. Stable across processes and machines."""
        return hashlib.sha256(b"rtxrt-cache-key\0" + canonical_json(self.to_json())).hexdigest()

    def describe(self) -> str:
        """Short and human: for warnings and `rtxrt cache ls`."""
        return f"model {self.ir_hash[:12]} on {self.gpu_name} ({self.arch})"
