"""If, Loop and Scan: run their body subgraphs, which may read values of the enclosing scope
(``run_subgraph`` passes the node's scope along)."""
from __future__ import annotations

import numpy as np

from ....ir.graph import Graph
from ..kernel import OpRun


def _flag(value: np.ndarray) -> bool:
    value = np.asarray(value)
    if value.size != 1:
        raise ValueError(f"a condition must have one element, got shape {value.shape}")
    return bool(value.reshape(-1)[0])


def _stack(values: list[np.ndarray], body: Graph, name: str) -> np.ndarray:
    """Stack per-iteration scan outputs on a new leading axis. With no iteration the element
    type comes from the body's output type (its unknown dims taken as 0)."""
    if values:
        return np.stack(values)
    t = body.types.get(name)
    if t is None:
        raise ValueError(f"no iteration ran and the type of scan output {name!r} is unknown")
    inner = tuple(d if isinstance(d, int) else 0 for d in t.shape) if t.shape is not None else ()
    return np.empty((0, *inner), dtype=t.dtype.numpy)


class If(OpRun):
    def run(self, cond):
        branch = self.attr("then_branch") if _flag(cond) else self.attr("else_branch")
        return tuple(self.run_subgraph(branch, {}))


class Loop(OpRun):
    def run(self, trip_count, cond, *initial):
        body: Graph = self.attr("body")
        trips = None if trip_count is None else int(np.asarray(trip_count).reshape(-1)[0])
        going = True if cond is None else _flag(cond)
        n = len(initial)  # body outputs: condition, n carried values, then scan outputs
        carried = list(initial)
        scanned: list[list[np.ndarray]] = [[] for _ in body.outputs[1 + n:]]
        scanned_bytes = 0
        i = 0
        while going and (trips is None or i < trips):
            feeds = dict(zip(body.inputs, [np.array(i, np.int64), np.array(going), *carried]))
            results = self.run_subgraph(body, feeds)
            going, carried = _flag(results[0]), results[1 : 1 + n]
            for acc, value in zip(scanned, results[1 + n:]):
                acc.append(value)
                scanned_bytes += np.asarray(value).nbytes
            self.check_bytes(scanned_bytes, f"its scan outputs after {i + 1} iterations")  # trips may be 2**63
            i += 1
        return (*carried, *(_stack(acc, body, name) for acc, name in zip(scanned, body.outputs[1 + n:])))


class Scan(OpRun):
    def run(self, *inputs):
        body: Graph = self.attr("body")
        scans = int(self.attr("num_scan_inputs"))
        states, sequences = list(inputs[: len(inputs) - scans]), inputs[len(inputs) - scans:]
        sequences = [
            _to_front(x, axis, direction)
            for x, axis, direction in zip(sequences, _padded(self.attr("scan_input_axes"), scans),
                                          _padded(self.attr("scan_input_directions"), scans))
        ]
        lengths = {x.shape[0] for x in sequences}
        if len(lengths) != 1:
            raise ValueError(f"scan inputs have different lengths along their scan axes: {sorted(lengths)}")
        names = body.outputs[len(states):]
        scanned: list[list[np.ndarray]] = [[] for _ in names]
        for t in range(lengths.pop()):
            feeds = dict(zip(body.inputs, [*states, *(x[t] for x in sequences)]))
            results = self.run_subgraph(body, feeds)
            states = results[: len(states)]
            for acc, value in zip(scanned, results[len(states):]):
                acc.append(value)
        outputs = []
        for acc, name, axis, direction in zip(scanned, names, _padded(self.attr("scan_output_axes"), len(names)),
                                              _padded(self.attr("scan_output_directions"), len(names))):
            stacked = _stack(acc, body, name)
            if direction:
                stacked = stacked[::-1]
            outputs.append(np.ascontiguousarray(np.moveaxis(stacked, 0, axis % stacked.ndim)))
        return (*states, *outputs)


def _padded(values: list[int] | None, count: int) -> list[int]:
    values = list(values or [])
    return values + [0] * (count - len(values))


def _to_front(x: np.ndarray, axis: int, reverse: int) -> np.ndarray:
    """View of ``x`` with its scan axis first, in the order the scan visits it."""
    x = np.moveaxis(x, axis % x.ndim, 0)
    return x[::-1] if reverse else x
