"""Plain-text formatting shared by reports and the CLI: sizes, tables, array summaries."""
from __future__ import annotations

import numpy as np


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


_CHUNK = 1 << 20  # elements summarized at a time: a few MiB of float64, whatever the array's size


def summarize_array(array: np.ndarray) -> str:
    """One line describing an output: dtype, shape and value statistics (computed in float64
    chunk by chunk, so a large array needs no float64 copy of itself)."""
    head = f"{array.dtype}{list(array.shape)}"
    if array.size == 0 or array.dtype == object:
        return head
    flat = array.reshape(-1)
    chunks = lambda: (flat[i:i + _CHUNK].astype(np.float64) for i in range(0, flat.size, _CHUNK))  # noqa: E731
    low, high, total = np.inf, -np.inf, 0.0
    for chunk in chunks():
        low, high, total = np.minimum(low, chunk.min()), np.maximum(high, chunk.max()), total + chunk.sum()
    mean = total / flat.size
    std = np.sqrt(sum(np.square(chunk - mean).sum() for chunk in chunks()) / flat.size)
    return f"{head} min {low:.6g} max {high:.6g} mean {mean:.6g} std {std:.6g}"


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
