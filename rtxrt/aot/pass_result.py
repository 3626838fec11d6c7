"""What a pass reports: how many changes of each kind it made."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PassResult:
    # Change kind -> count, e.g. {"Conv+bias+Relu": 33}. Kinds read as what was made.
    changes: Counter = field(default_factory=Counter)

    def add(self, kind: str, count: int = 1) -> None:
        self.changes[kind] += count

    @property
    def changed(self) -> bool:
        return sum(self.changes.values()) > 0
