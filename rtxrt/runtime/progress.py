"""JIT progress: a tqdm bar (with ETA) on a terminal, a callback for GUIs, or nothing."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

# callback(stage, done, total): stage is "compile" or "tune"
ProgressCallback = Callable[[str, int, int], None]
ProgressOption = bool | ProgressCallback | None


class Progress:
    """Reports the stages of one JIT. ``option``: True (a bar on stderr when it is a
    terminal), False/None (silent) or a callback."""

    def __init__(self, option: ProgressOption, title: str):
        self.callback = option if callable(option) else None
        self.show_bar = option is True and sys.stderr.isatty()
        self.title = title
        self._bar: Any = None
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.callback is not None:
            self.callback(stage, done, total)
        if not self.show_bar:
            return
        if stage != self._stage:
            self.close()
            from tqdm import tqdm

            self._stage = stage
            self._bar = tqdm(total=total, desc=f"{self.title}: {stage}", unit="kernel" if stage == "compile" else "node",
                             file=sys.stderr, leave=False)
        self._bar.n = done
        self._bar.refresh()

    def stage(self, stage: str) -> Callable[[int, int], None]:
        return lambda done, total: self(stage, done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
