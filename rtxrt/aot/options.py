"""Options of the AOT stage; they are recorded in the .rtxir file and are part of its identity."""
from __future__ import annotations

from dataclasses import asdict, dataclass

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "best")


@dataclass(frozen=True)
class AotOptions:
    # Target precision: fp32 | tf32 | fp16 | bf16 | best (fastest the ops allow, per node).
    precision: str = "fp32"
    # Node names or op types pinned to fp32 whatever ``precision`` says.
    keep_fp32: tuple[str, ...] = ()
    # Run the optimization passes (off: import and check only).
    optimize: bool = True
    # Constant folding never creates a tensor larger than this.
    fold_max_bytes: int = 64 << 20
    # Write the graph without its weights (attach them later with refit).
    weightless: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["keep_fp32"] = list(self.keep_fp32)
        return data
