"""Plain-text formatting shared by reports and the CLI: sizes, tables, array summaries."""
from __future__ import annotations

import numpy as np


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def summarize_array(array: np.ndarray) -> str:
    """One line describing an output: dtype, shape and value statistics."""
    head = f"{array.dtype}{list(array.shape)}"
    if array.size == 0 or array.dtype == object:
        return head
    values = array.astype(np.float64) if array.dtype != np.bool_ else array.astype(np.int8)
    return (f"{head} min {values.min():.6g} max {values.max():.6g} "
            f"mean {values.mean():.6g} std {values.std():.6g}")


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
