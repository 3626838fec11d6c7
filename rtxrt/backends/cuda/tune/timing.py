"""GPU time of a list of launches, measured the way the engine runs them: captured once as a
CUDA graph and replayed back to back between two CUDA events. Launching from Python costs
5-20 us of host time per call; timing calls one by one would charge that to every candidate
(most to the ones with several launches, such as cuBLAS followed by an epilogue kernel) and
hide which is faster on the GPU."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TARGET_MS = 0.3  # GPU time per sample: enough replays to keep the GPU busy
MAX_REPLAYS = 32
SAMPLES = 3


def gpu_milliseconds(calls: Sequence[Callable[[], None]], stream: Any) -> float:
    """Median GPU milliseconds of one run of ``calls`` on ``stream``. The calls run once
    eagerly first (a launch this GPU refuses raises here, outside any capture)."""
    import cupy

    for call in calls:
        call()
    stream.begin_capture()
    try:
        for call in calls:
            call()
    finally:
        graph = stream.end_capture()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()

    def replayed(times: int) -> float:
        start.record(stream)
        for _ in range(times):
            graph.launch(stream)
        end.record(stream)
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / times

    once = replayed(1)
    replays = int(np.clip(TARGET_MS / max(once, 1e-4), 1, MAX_REPLAYS))
    return float(np.median([replayed(replays) for _ in range(SAMPLES)]))
