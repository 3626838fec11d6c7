"""The summary ``rtxrt aot`` ends with (and writes as JSON with --report)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..display import format_bytes, table
from ..ir.graph import Model, TensorType
from .pass_result import PassResult


@dataclass
class PassRecord:
    name: str
    seconds: float = 0.0
    changes: Counter = field(default_factory=Counter)


@dataclass
class AotReport:
    nodes_before: int = 0
    nodes_after: int = 0
    passes: list[PassRecord] = field(default_factory=list)
    # Element type name -> bytes, of the weights as the file stores them and as the device will.
    weight_bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    device_weight_bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)
    # Import (ONNX → checked IR) and import plus passes.
    import_seconds: float = 0.0
    seconds: float = 0.0
    # A weightless build writes no weight bytes; refit attaches them later.
    weightless: bool = False

    def record(self, name: str, seconds: float, result: PassResult) -> None:
        for record in self.passes:  # passes that run twice (cleanup) are summed
            if record.name == name:
                record.seconds += seconds
                record.changes.update(result.changes)
                return
        self.passes.append(PassRecord(name, seconds, Counter(result.changes)))

    def finish(self, model: Model) -> None:
        graph = model.graph
        self.nodes_after = len(graph.nodes)
        stored: Counter = Counter()
        device: Counter = Counter()
        for name, array in graph.initializers.items():
            dtype = TensorType.of(array).dtype
            stored[dtype.short] += int(array.nbytes)
            target = graph.storage[name].dtype if name in graph.storage else dtype
            device[target.short] += int(array.size * target.itemsize)
        self.weight_bytes_by_dtype = dict(sorted(stored.items()))
        self.device_weight_bytes_by_dtype = dict(sorted(device.items()))
        ops = Counter(n.op_type if not n.domain else f"{n.domain}::{n.op_type}" for n in graph.nodes)
        self.op_counts = dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def fusions(self) -> Counter:
        """Changes of the fusion passes, by kind."""
        total: Counter = Counter()
        for record in self.passes:
            if record.name.startswith(("fuse_", "fold_batchnorm")):
                total.update(record.changes)
        return total

    def to_dict(self) -> dict:
        return {
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "import_seconds": round(self.import_seconds, 4),
            "seconds": round(self.seconds, 4),
            "weightless": self.weightless,
            "fusions": dict(sorted(self.fusions.items())),
            "weight_bytes_by_dtype": self.weight_bytes_by_dtype,
            "device_weight_bytes_by_dtype": self.device_weight_bytes_by_dtype,
            "op_counts": self.op_counts,
            "passes": [
                {"name": r.name, "seconds": round(r.seconds, 4), "changes": dict(sorted(r.changes.items()))}
                for r in self.passes
            ],
        }

    def summary(self) -> str:
        lines = [f"nodes: {self.nodes_before} -> {self.nodes_after}",
                 f"time: import {self.import_seconds:.2f} s, passes {self.seconds - self.import_seconds:.2f} s"]
        if self.fusions:
            lines.append("fusions: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.fusions.items())))
        weights = ", ".join(f"{k} {format_bytes(v)}" for k, v in self.weight_bytes_by_dtype.items()) or "none"
        where = "left out of the file (weightless: attach them with rtxrt refit)" if self.weightless else "in the file"
        lines.append(f"weights: {weights} {where}; on the device: "
                     + (", ".join(f"{k} {format_bytes(v)}" for k, v in self.device_weight_bytes_by_dtype.items()) or "none"))
        rows = [(r.name, f"{1000 * r.seconds:.1f} ms", ", ".join(f"{k} {v}" for k, v in sorted(r.changes.items())) or "-")
                for r in self.passes]
        lines.append(table(rows, ("pass", "time", "changes")))
        return "\n".join(lines)
