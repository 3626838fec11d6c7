"""rtxrt::Elementwise: runs the body graph (see rtxrt/ir/ops/elementwise_chain.py)."""
from __future__ import annotations

import numpy as np

from ..kernel import OpRun


class Elementwise(OpRun):
    domain = "rtxrt"

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        body = self.attr("body")
        # The body reads nothing from the enclosing graph: run it in an empty scope.
        return tuple(self.run_subgraph(body, dict(zip(body.inputs, inputs)), {}))
