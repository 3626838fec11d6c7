"""Per-run cost of RtxrtExecutionProvider's plugin library around an rtxrt partition.

Times the same small model (x[1, 16] -> Relu -> Mul(w) -> y: one input, one output, one rtxrt
partition) two ways and prints the medians and their difference:
- ``rtxrt.Session.run`` called directly (the partition's own time);
- ``onnxruntime.InferenceSession.run`` through the plugin provider after ``rtxrt_ep.register()``
  (onnxruntime's run, the fused node's Compute, and the partition).
The difference is what the provider adds per run (issue 16 asks for at most 50 us). For
scale, it also times onnxruntime alone running the model on its CPU provider: onnxruntime's
own cost per ``run`` call, which is part of that difference.

Without a GPU, set RTXRT_EP_CPU_DEVICE=1 (done here unless already set): the partition then
runs on rtxrt's CPU reference backend in both, so the difference is still the provider's.

    python benchmarks/ep_overhead.py [--runs 2000] [--repeats 15]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parents[1]
PROVIDERS = ["RtxrtExecutionProvider", "CPUExecutionProvider"]


def small_model() -> onnx.ModelProto:
    weight = onnx.numpy_helper.from_array(np.linspace(-1, 1, 16, dtype=np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mul", ["a", "w"], ["y"])]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def per_run_us(calls: list[Callable[[], object]], runs: int, repeats: int) -> list[float]:
    """For each call, the median over ``repeats`` of the mean time of ``runs`` calls, in
    microseconds. The calls take turns in every repeat, so a busy spell on the machine
    slows them alike rather than one of them."""
    times: list[list[float]] = [[] for _ in calls]
    for call in calls:  # warm up
        for _ in range(min(runs, 200)):
            call()
    for _ in range(repeats):
        for call, samples in zip(calls, times):
            start = time.perf_counter()
            for _ in range(runs):
                call()
            samples.append((time.perf_counter() - start) / runs * 1e6)
    return [statistics.median(samples) for samples in times]


def measure(runs: int, repeats: int) -> tuple[float, float, float]:
    """Microseconds per run: rtxrt.Session, onnxruntime through the plugin provider (registered
    here), onnxruntime alone on its CPU provider."""
    import onnxruntime
    import rtxrt
    import rtxrt_ep

    rtxrt_ep.register()
    model = small_model()
    feed = {"x": np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)}
    reference = os.environ.get("RTXRT_EP_CPU_DEVICE") == "1"
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "no GPU: CPU reference backend"
        path = str(Path(folder) / "small.onnx")
        onnx.save(model, path)
        direct = rtxrt.Session(model.SerializeToString(), fallback="cpu" if reference else None, progress=False)
        plugin = onnxruntime.InferenceSession(path, providers=PROVIDERS)
        cpu = onnxruntime.InferenceSession(path, providers=PROVIDERS[1:])
        np.testing.assert_allclose(plugin.run(None, feed)[0], direct.run(None, feed)[0], rtol=1e-6)
        session_us, plugin_us, cpu_us = per_run_us(
            [lambda: direct.run(None, feed), lambda: plugin.run(None, feed), lambda: cpu.run(None, feed)],
            runs, repeats)
    return session_us, plugin_us, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "ep")]  # rtxrt and rtxrt_ep from this checkout
    os.environ.setdefault("RTXRT_EP_CPU_DEVICE", "1")

    import onnxruntime
    from rtxrt_ep.registration import plugin_problem

    problem = plugin_problem()
    if problem:
        sys.exit(f"the plugin provider cannot be used here: {problem}")
    session_us, plugin_us, cpu_us = measure(args.runs, args.repeats)
    backend = "reference backend (CPU)" if os.environ["RTXRT_EP_CPU_DEVICE"] == "1" else "GPU"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; partition on {backend}")
    print(f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}")
    print(f"rtxrt.Session.run:                  {session_us:8.1f} us")
    print(f"InferenceSession.run (plugin):      {plugin_us:8.1f} us")
    print(f"provider overhead per run:          {plugin_us - session_us:8.1f} us")
    print(f"(onnxruntime alone, CPU provider:   {cpu_us:8.1f} us)")


if __name__ == "__main__":
    main()
