"""rtxrt against the peers a user would pick instead, in one run on one GPU: the benchmark
matrix of issue 15.

One command, from the repository root of a GPU machine (torch, CuPy, onnxruntime; transformers
and torchvision for the models that need them):

    python benchmarks/peers.py --matrix --out matrix.json --markdown matrix.md --time-limit 420

Subsets: ``--models resnet50,vit_b16`` (``--list`` prints the matrix), ``--batches 1`` (by
default each model's own: 1 and 16 or 32). The whole matrix takes longer than one 10-minute
command (every case's first pass alone is an export, a cold JIT of 5-19 s and a warm process;
torch.compile takes 0.5-2 min a case): run it in parts, each with its own JSON, and write one
table from them all:

    python benchmarks/peers.py --matrix --part 1/4 --out part1.json --time-limit 420   # ... 4/4
    python benchmarks/peers.py --from-json part1.json part2.json part3.json part4.json \
        --out matrix.json --markdown matrix.md

``--tiny`` runs every model at its tiny test size (a smoke test of the harness; seconds a model).

Models (benchmarks/matrix_models.py, seeded random weights that keep every output alive,
exported to ONNX in this run, never committed): CNNs — ResNet-50, ConvNeXt-T, a UNet (base 64,
256x256), a YOLOv8-style detector (640x640), EfficientNet-B0, MobileNetV3-small, RegNetY-1.6GF;
transformers — BERT-base (seq 128), DistilBERT (seq 128), ViT-B/16, GPT-2 small prefill (seq
512), a Whisper-base encoder (80 mel x 3000 frames); audio — a VAD (STFT conv + LSTM, 1 s at 16
kHz). All in fp16 at batch 1 and 16 or 32; ResNet-50 and BERT-base also in fp32 and TF32. A model
whose library is missing is a skipped row that says so. Text models are exported once with
dynamic batch and sequence axes; the others once per batch (static shapes).

Peers, each on the same fresh random inputs (never zeros):
- PyTorch eager (``model.half().cuda()`` under ``torch.inference_mode()``; fp32 with TF32 off;
  TF32 with it on for matmuls and convolutions). Attention as users run it: transformers'
  default SDPA, and SDPA in the plain-torch ViT and Whisper blocks (the ONNX export keeps
  MatMul/Softmax).
- ``torch.compile`` in the default mode and ``mode="reduce-overhead"`` (CUDA graphs); the
  compile column is the first call. Dynamo is reset before each, so no peer inherits another's
  graphs, but Inductor's on-disk cache stays on.
- onnxruntime with every provider it offers: CPU (fp32; beside a GPU at batch 1 only), CUDA and
  TensorRT (fp16 rows: the model converted by onnxruntime's float16 tool, or TensorRT's fp16
  flag; fp32 rows: TF32 off); the compile column is session creation plus the first run.
- rtxrt: ``build_rtxir`` (AOT) at the row's precision, then ``rtxrt.Session`` and its first run on
  an empty cache folder (cold JIT), again on the same folder (warm load), fed CuPy arrays; and a
  fresh process on that cache (warm process: ``import cupy, rtxrt`` + Session + first run).

Timing: every iteration is a CUDA event on the current stream, the call, a device-wide
synchronize (so work on any stream a peer uses is counted) and a second event; the few
microseconds of the synchronize are in every peer's number alike. Warm-up first, then the median
and p90 of N iterations (``--iterations`` at batch 1, 40% of it, at least 5, at larger batches),
stopping early after ``--max-seconds`` per peer. The CPU provider is timed by the wall clock.

Memory: peak ``torch.cuda.max_memory_allocated`` above what was allocated before the peer
(model, inputs, outputs, workspace), reset before each peer; for rtxrt its ``device_bytes``
(arena + weights). Correctness: relative L2 error of each output against PyTorch fp32 eager with
TF32 off, the largest over the outputs.

Order and the time limit: the headline first (PyTorch eager fp16 and rtxrt fp16 for every
case), then torch.compile reduce-overhead, the default torch.compile, onnxruntime, and last
the fp32 and TF32 rows, small batches first within each. A peer not yet started when
``--time-limit`` seconds (default 360) have passed is listed as skipped, so a slow compile costs
its own rows, not the run; the JSON and Markdown files are rewritten after every peer, every
row not run yet already in them as skipped (so a run killed at its budget still says what it
did not reach). For a 10-minute command leave room for the last peer (a torch.compile of a large
model can take two minutes): ``--time-limit 420``.

Output: ``--out`` JSON (card, driver, versions, settings, every row, the summary) and
``--markdown`` a section for benchmarks/RESULTS.md: the matrix (latency of each peer, the
fastest in **bold**, rtxrt's cold JIT, warm process, memory and error), the geometric-mean
speedup of rtxrt against each peer, and every cell's numbers. ``--quick``: 10 iterations, no
reduce-overhead, rtxrt fp32 or TF32 rows.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
for _path in (REPO, BENCHMARKS):  # rtxrt and tests.models from this checkout; matrix_models beside
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch

import matrix_models
from matrix_models import MATRIX, MissingLibrary, ModelSpec

EAGER_FP16 = "PyTorch eager fp16"  # the baseline of the details table's speedup column
ORT_CPU = "onnxruntime CPU fp32"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
DEFAULT_MODELS = ("resnet50", "bert_base", "unet", "vit_b16")  # without --matrix or --models
PRECISIONS = matrix_models.PRECISIONS


def model_spec(name: str) -> ModelSpec:
    """The matrix's model ``name`` at its benchmark size, or a zoo model at the zoo's size."""
    return matrix_models.model_spec(name)


@dataclass
class Settings:
    iterations: int = 50  # at batch 1
    seed: int = 1  # inputs; the weights use zoo.EXPORT_SEED
    max_seconds: float = 5.0  # timing per peer stops early after this
    time_limit: float = 360.0  # no peer starts after this many seconds of the run
    quick: bool = False  # fewer iterations, no extra rows (reduce-overhead, rtxrt fp32/tf32)
    torch_compile: bool = True
    warm_process: bool = True  # rtxrt: time a fresh process on the warm cache

    def iterations_for(self, batch: int) -> int:
        return self.iterations if batch == 1 else min(self.iterations, max(5, round(0.4 * self.iterations)))

    def warmup_for(self, batch: int) -> int:
        return max(2, self.iterations_for(batch) // 5)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    iterations: int


def summarize(samples_ms: list[float]) -> Timing:
    return Timing(float(np.median(samples_ms)), float(np.percentile(samples_ms, 90)), len(samples_ms))


def cuda_timer(call: Callable[[], Any]) -> float:
    """Milliseconds between two CUDA events around ``call`` and a device-wide synchronize."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    call()
    torch.cuda.synchronize()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def wall_timer(call: Callable[[], Any]) -> float:
    """Milliseconds of wall clock around ``call`` (host-side peers)."""
    start = time.perf_counter()
    call()
    return 1e3 * (time.perf_counter() - start)


def measure(call: Callable[[], Any], timer: Callable[[Callable[[], Any]], float], warmup: int,
            iterations: int, max_seconds: float) -> Timing:
    """Warm up (at least one call; no more once ``max_seconds`` have passed: a slow host peer
    must not spend its budget warming up), then time ``iterations`` calls (at least 3, fewer than
    asked once ``max_seconds`` have passed)."""
    started = time.monotonic()
    for i in range(warmup):
        if i and time.monotonic() - started > max_seconds:
            break
        timer(call)
    samples: list[float] = []
    started = time.monotonic()
    while len(samples) < iterations and (len(samples) < 3 or time.monotonic() - started < max_seconds):
        samples.append(timer(call))
    return summarize(samples)


# ---------------------------------------------------------------------------------------------
# One model at one batch
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One model at one batch: the ONNX file, the inputs every peer gets, the fp32 reference."""

    spec: ModelSpec
    batch: int
    onnx_path: Path
    input_names: list[str]
    inputs: dict[str, np.ndarray]
    torch_model: Any  # the fp32 model the PyTorch peers copy, on the CPU
    settings: Settings
    device: str  # "cuda", or "cpu" where there is no GPU
    reference: list[np.ndarray] | None = None

    def torch_args(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The inputs as tensors on the device, float ones in ``dtype``, in forward's order."""
        tensors = (torch.from_numpy(self.inputs[n]).to(self.device) for n in self.input_names)
        return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)

    def torch_model_on_device(self, dtype: torch.dtype):
        return copy.deepcopy(self.torch_model).to(self.device, dtype)

    def measure(self, call: Callable[[], Any], timer: Callable[[Callable[[], Any]], float] | None = None) -> Timing:
        timer = timer or (cuda_timer if self.device == "cuda" else wall_timer)
        s = self.settings
        return measure(call, timer, s.warmup_for(self.batch), s.iterations_for(self.batch), s.max_seconds)


@dataclass
class Prepared:
    """A model built once per run: what is exported, what the PyTorch peers run, and the
    dynamic-axes ONNX file (text models) or None (one static export per batch)."""

    export_model: Any
    torch_model: Any
    onnx_path: Path | None = None


def export_onnx(spec: ModelSpec, model, batch: int, path: Path, dynamic: bool) -> Path:
    """The TorchScript exporter (``dynamo=False``, opset 17, constant folding), as the zoo exports:
    at ``batch`` with static shapes, or with ``spec.dynamic_axes``."""
    import warnings

    sample = spec.make_inputs(matrix_models.SEED, batch)
    args = tuple(torch.from_numpy(a) for a in sample.values())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, do_constant_folding=True,
                          input_names=list(sample), output_names=list(spec.outputs),
                          dynamic_axes=spec.dynamic_axes if dynamic else None)
    return path


def prepare(spec: ModelSpec, workdir: Path) -> Prepared:
    """Build ``spec`` (MissingLibrary where its library is not installed), export the dynamic
    file of a text model, and derive the PyTorch peers' model."""
    model = spec.build_model()
    path = None
    if spec.dynamic_axes:
        path = export_onnx(spec, model, 2, workdir / f"{spec.name}.onnx", dynamic=True)
    return Prepared(model, spec.peer_model(model), path)


def make_case(spec: ModelSpec, batch: int, prepared: Prepared, workdir: Path, settings: Settings,
              device: str) -> Case:
    """The case of ``spec`` at ``batch``: the dynamic file or a static export at ``batch``, and
    fresh inputs (images from a standard normal; token ids over the vocabulary, padded rows)."""
    onnx_path = prepared.onnx_path or export_onnx(spec, prepared.export_model, batch,
                                                  workdir / f"{spec.name}-b{batch}.onnx", dynamic=False)
    inputs = spec.make_inputs(settings.seed, batch)
    return Case(spec, batch, onnx_path, list(inputs), inputs, prepared.torch_model, settings, device)


def liveness_problem(outputs: list[np.ndarray]) -> str | None:
    """Why these outputs could not show a wrong kernel (non-finite, all zeros, constant), or
    None."""
    for i, y in enumerate(outputs):
        y = np.asarray(y, np.float64)
        if not np.isfinite(y).all():
            return f"output {i} has non-finite values"
        scale = np.abs(y).max() if y.size else 0.0
        if scale == 0:
            return f"output {i} is all zeros"
        if y.std() <= 1e-6 * scale:
            return f"output {i} is constant ({y.flat[0]:.3g})"
    return None


# ---------------------------------------------------------------------------------------------
# Peers: each returns what it measured; run_peer turns that (or its error) into a row
# ---------------------------------------------------------------------------------------------


@dataclass
class Measured:
    timing: Timing
    outputs: list[np.ndarray]
    compile_s: float | None = None  # compile, cold JIT or session creation
    warm_s: float | None = None  # rtxrt: the second Session's construction and first run
    warm_process_s: float | None = None  # rtxrt: a fresh process's imports, Session and first run
    peak_bytes: int | None = None  # set by peers whose memory torch does not see
    note: str = ""
    extra: dict = field(default_factory=dict)


def to_numpy(outputs: Any) -> list[np.ndarray]:
    """A model's output (a tensor, a tuple of tensors, or CuPy/numpy arrays) as float/int numpy."""
    items = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    result = []
    for item in items:
        if isinstance(item, torch.Tensor):
            item = item.float() if item.is_floating_point() else item
            result.append(item.detach().cpu().numpy())
        elif hasattr(item, "get"):  # CuPy
            result.append(item.get())
        else:
            result.append(np.asarray(item))
    return result


@contextlib.contextmanager
def tf32_mode(enabled: bool | None) -> Iterator[None]:
    """TF32 on or off for both cuDNN convolutions and cuBLAS matmuls (torch's defaults: on for
    convolutions, off for matmuls); None leaves them as they are."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if enabled is not None:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def exact_fp32() -> contextlib.AbstractContextManager:
    return tf32_mode(False)


def reference_outputs(case: Case) -> list[np.ndarray]:
    """PyTorch fp32 eager with TF32 off: what every peer's error is measured against."""
    model = case.torch_model_on_device(torch.float32)
    with torch.inference_mode(), exact_fp32():
        return to_numpy(model(*case.torch_args(torch.float32)))


def torch_eager(dtype: torch.dtype, tf32: bool | None = None) -> Callable[[Case], Measured]:
    def run(case: Case) -> Measured:
        model, args = case.torch_model_on_device(dtype), case.torch_args(dtype)
        with torch.inference_mode(), tf32_mode(tf32):
            timing = case.measure(lambda: model(*args))
            outputs = to_numpy(model(*args))
        return Measured(timing, outputs, note="on the CPU (no GPU)" if case.device != "cuda" else "")

    return run


def torch_compiled(mode: str | None, dtype: torch.dtype = torch.float16, tf32: bool | None = None
                   ) -> Callable[[Case], Measured]:
    def run(case: Case) -> Measured:
        torch._dynamo.reset()
        model, args = case.torch_model_on_device(dtype), case.torch_args(dtype)
        compiled = torch.compile(model, mode=mode)
        with torch.inference_mode(), tf32_mode(tf32):
            started = time.perf_counter()
            compiled(*args)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - started
            timing = case.measure(lambda: compiled(*args))
            outputs = to_numpy(compiled(*args))  # copied out before a replay could overwrite it
        return Measured(timing, outputs, compile_s=compile_s)

    return run


def onnxruntime_cpu(case: Case) -> Measured:
    """The CPU provider on host arrays, by the wall clock."""
    import onnxruntime as ort

    started = time.perf_counter()
    session = ort.InferenceSession(str(case.onnx_path), providers=["CPUExecutionProvider"])

    def call() -> list[np.ndarray]:
        return session.run(None, case.inputs)

    call()
    compile_s = time.perf_counter() - started
    timing = case.measure(call, wall_timer)
    note = "host arrays, wall clock" + ("; batch 1 only" if case.device == "cuda" else "")
    return Measured(timing, call(), compile_s=compile_s, note=note)


def float16_onnx(path: Path) -> Path:
    """``path`` converted to float16 by onnxruntime's tool (inputs and outputs kept float32),
    once per file."""
    out = path.with_suffix(".fp16.onnx")
    if not out.exists() or out.stat().st_mtime < path.stat().st_mtime:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        converted = OnnxModel(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True))
        converted.topological_sort()  # (the tool appends its input casts at the end)
        onnx.save(converted.model, str(out))
    return out


def onnxruntime_gpu(provider: str, precision: str) -> Callable[[Case], Measured]:
    """A GPU provider with inputs and outputs bound on the device (I/O binding), as an application
    that cares about speed binds them. fp16: CUDA runs the float16 conversion, TensorRT its fp16
    flag; fp32: CUDA with TF32 off."""

    def run(case: Case) -> Measured:
        import onnxruntime as ort

        options: dict[str, str] = {}
        path = case.onnx_path
        if provider == "CUDAExecutionProvider":
            if precision == "fp16":
                path = float16_onnx(path)
            else:
                options["use_tf32"] = "0"
        elif provider == "TensorrtExecutionProvider" and precision == "fp16":
            options["trt_fp16_enable"] = "True"
        started = time.perf_counter()
        session = ort.InferenceSession(str(path), providers=[(provider, options), "CPUExecutionProvider"])
        binding = session.io_binding()
        for name, array in case.inputs.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda", 0)

        def call() -> None:
            session.run_with_iobinding(binding)

        call()  # TensorRT builds its engines here
        compile_s = time.perf_counter() - started
        timing = case.measure(call, cuda_timer)
        return Measured(timing, binding.copy_outputs_to_cpu(), compile_s=compile_s,
                        note="GPU memory not measured (onnxruntime's own allocator)")

    return run


WARM_PROCESS = """
import json, sys, time
import numpy as np
feeds = dict(np.load(sys.argv[2]))
started = time.perf_counter()
import cupy
import rtxrt
session = rtxrt.Session(sys.argv[1], device=0, cache_dir=sys.argv[3], progress=False)
session.run(None, {name: cupy.asarray(array) for name, array in feeds.items()})
cupy.cuda.Device().synchronize()
print(json.dumps({"seconds": time.perf_counter() - started, "from_cache": session.stats.get("from_cache")}))
"""


def warm_process(rtxir: Path, inputs: dict[str, np.ndarray], cache_dir: str) -> tuple[float | None, str]:
    """A fresh Python process on the warm cache: seconds from ``import cupy, rtxrt`` to the first
    result (Session and one run; the interpreter's own start and numpy are not counted), and a
    note (empty, or why it has no number)."""
    feeds = Path(f"{cache_dir}-feeds.npz")  # beside the cache folder, not in it
    np.savez(feeds, **inputs)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run([sys.executable, "-c", WARM_PROCESS, str(rtxir), str(feeds), cache_dir],
                              capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        return None, "warm process timed out (300 s)"
    printed = done.stdout.strip().splitlines()
    if done.returncode != 0 or not printed:  # the row keeps its other numbers
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return None, f"warm process failed: {last}"
    result = json.loads(printed[-1])
    note = "" if result.get("from_cache") else "warm process did not load from the cache"
    return float(result["seconds"]), note


def rtxrt_peer(precision: str) -> Callable[[Case], Measured]:
    """AOT-compile (once per ONNX file and precision); open a Session on an empty cache folder and
    run it once (cold: a model with symbolic dims is specialized at its first run, a static one
    in the constructor), again on the same folder (warm), then time the warm one on CuPy inputs;
    last, a fresh process on the same cache (warm process)."""

    def run(case: Case) -> Measured:
        import cupy

        import rtxrt
        from rtxrt.aot import build_rtxir
        from rtxrt.aot.options import AotOptions

        rtxir = case.onnx_path.with_suffix(f".{precision}.rtxir")
        aot_s = None
        if not rtxir.exists() or rtxir.stat().st_mtime < case.onnx_path.stat().st_mtime:  # once per export
            started = time.perf_counter()
            build_rtxir(str(case.onnx_path), rtxir, AotOptions(precision=precision))
            aot_s = time.perf_counter() - started
        cache_dir = tempfile.mkdtemp(prefix=f"cache-{precision}-", dir=case.onnx_path.parent)
        feeds = {name: cupy.asarray(array) for name, array in case.inputs.items()}

        def open_and_run_once() -> tuple[Any, float]:
            started = time.perf_counter()
            session = rtxrt.Session(str(rtxir), device=0, cache_dir=cache_dir, progress=False)
            session.run(None, feeds)
            cupy.cuda.Device().synchronize()
            return session, time.perf_counter() - started

        session, cold_s = open_and_run_once()
        cold_stats = dict(session.stats)
        del session
        cupy.get_default_memory_pool().free_all_blocks()
        session, warm_s = open_and_run_once()
        timing = case.measure(lambda: session.run(None, feeds), cuda_timer)
        outputs = to_numpy(session.run(None, feeds))
        stats = dict(session.stats)
        notes = [f"cold: {cold_stats.get('kernels_compiled')} kernels compiled; warm from cache: "
                 f"{stats.get('from_cache')}" + (f"; AOT {aot_s:.1f} s" if aot_s is not None else "")]
        warm_process_s = None
        if case.settings.warm_process:
            warm_process_s, why = warm_process(rtxir, case.inputs, cache_dir)
            notes += [why] if why else []
        extra = {"cold_stats": cold_stats, "warm_stats": stats, "aot_s": aot_s}
        return Measured(timing, outputs, compile_s=cold_s, warm_s=warm_s, warm_process_s=warm_process_s,
                        peak_bytes=int(stats["device_bytes"]), note="; ".join(notes), extra=_jsonable(extra))

    return run


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# Phases: what the time limit cuts last comes first.
HEADLINE, REDUCE_OVERHEAD, COMPILE, ONNXRUNTIME, OTHER_PRECISIONS, OTHER_PRECISIONS_COMPILE = range(1, 7)


@dataclass(frozen=True)
class Peer:
    label: str  # "<column> <precision>", e.g. "torch.compile reduce-overhead fp16"
    run: Callable[[Case], Measured]
    needs_gpu: bool = True
    torch_memory: bool = True  # its peak shows in torch.cuda.max_memory_allocated
    phase: int = HEADLINE


def peers_for(precision: str, settings: Settings, providers: list[str], cuda: bool, batch: int) -> list[Peer]:
    """The peers of one precision's row, in table order. With a GPU the CPU provider runs at
    batch 1 only (it would take minutes at 32 and is not the peer there); it stands in the fp16
    row."""
    fp16, quick, compile_ = precision == "fp16", settings.quick, settings.torch_compile
    dtype = torch.float16 if fp16 else torch.float32
    tf32 = None if fp16 else precision == "tf32"
    first = HEADLINE if fp16 else OTHER_PRECISIONS
    peers = [Peer(f"PyTorch eager {precision}", torch_eager(dtype, tf32), needs_gpu=fp16 or precision == "tf32",
                  phase=first)]
    if fp16 or not quick:
        peers.append(Peer(f"rtxrt {precision}", rtxrt_peer(precision), torch_memory=False, phase=first))
    if compile_ and fp16:
        peers.append(Peer("torch.compile fp16", torch_compiled(None), phase=COMPILE))
    if compile_ and not quick:
        peers.append(Peer(f"torch.compile reduce-overhead {precision}", torch_compiled("reduce-overhead", dtype, tf32),
                          phase=REDUCE_OVERHEAD if fp16 else OTHER_PRECISIONS_COMPILE))
    for provider in providers:
        if provider in GPU_PROVIDERS and precision != "tf32":
            short = provider.removesuffix("ExecutionProvider")
            peers.append(Peer(f"onnxruntime {short} {precision}", onnxruntime_gpu(provider, precision),
                              torch_memory=False, phase=ONNXRUNTIME if fp16 else OTHER_PRECISIONS))
    if fp16 and "CPUExecutionProvider" in providers and not (cuda and batch > 1):
        peers.append(Peer(ORT_CPU, onnxruntime_cpu, needs_gpu=False, torch_memory=False, phase=ONNXRUNTIME))
    return peers


@dataclass
class CasePlan:
    spec: ModelSpec
    batch: int
    peers: list[Peer]  # table order: fp16's peers, then fp32's, then TF32's


def plan(specs: list[ModelSpec], batches: list[int] | None, settings: Settings, cuda: bool,
         providers: list[str]) -> list[CasePlan]:
    """Every model at each of its batches (``batches``, or by default the model's own), with the
    peers of each of its precisions."""
    cases = []
    for spec in specs:
        for batch in spec.batches(batches):
            peers = [p for precision in spec.precisions for p in peers_for(precision, settings, providers, cuda, batch)]
            cases.append(CasePlan(spec, batch, peers))
    return cases


def schedule(cases: list[CasePlan]) -> list[tuple[int, Peer]]:
    """(case index, peer) in the order they run: phase by phase; the headline case by case (each
    model's batches together, so a model is set up once), later phases small batches first."""
    work = [(i, j, p) for i, c in enumerate(cases) for j, p in enumerate(c.peers)]
    work.sort(key=lambda w: (w[2].phase, 0 if w[2].phase == HEADLINE else cases[w[0]].batch, w[0], w[1]))
    return [(i, p) for i, _, p in work]


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    batch: int
    peer: str
    median_ms: float | None = None
    p90_ms: float | None = None
    iterations: int = 0
    compile_s: float | None = None
    warm_s: float | None = None
    peak_bytes: int | None = None
    rel_err: float | None = None
    note: str = ""
    error: str | None = None
    extra: dict = field(default_factory=dict)
    warm_process_s: float | None = None
    family: str = ""
    name: str = ""  # the model's name in the matrix (``model`` is its label)

    @property
    def items_per_s(self) -> float | None:
        return None if not self.median_ms else 1e3 * self.batch / self.median_ms

    @property
    def skipped(self) -> bool:
        return self.median_ms is None and self.error is None


def new_row(spec: ModelSpec, batch: int, peer: str, **numbers: Any) -> Row:
    return Row(spec.label, batch, peer, family=spec.family, name=spec.name, **numbers)


def row_from_json(data: dict) -> Row:
    names = {f.name for f in dataclasses.fields(Row)}
    return Row(**{k: v for k, v in data.items() if k in names})


def relative_error(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The largest over the outputs of ||y - ref||2 / ||ref||2, in float64."""
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs, the reference has {len(reference)}")
    worst = 0.0
    for y, ref in zip(outputs, reference):
        y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
        if y.shape != ref.shape:
            raise ValueError(f"output shape {y.shape}, the reference's {ref.shape}")
        worst = max(worst, float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30)))
    return worst


def _free_device_memory() -> None:
    """Give back what the last peer left in torch's and CuPy's pools."""
    gc.collect()
    if not torch.cuda.is_available():
        return
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    if "cupy" in sys.modules:
        sys.modules["cupy"].get_default_memory_pool().free_all_blocks()


def run_peer(case: Case, peer: Peer) -> Row:
    """Run one peer on one case; its failure becomes the row's error, never the run's."""
    row = new_row(case.spec, case.batch, peer.label)
    if peer.needs_gpu and case.device != "cuda":
        row.note = "skipped: needs a CUDA GPU"
        return row
    _free_device_memory()
    base = 0
    if case.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    try:
        measured = peer.run(case)
    except Exception as exc:  # noqa: BLE001  (one failing peer must not end the run)
        row.error = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
        return row
    finally:
        peak = torch.cuda.max_memory_allocated() - base if case.device == "cuda" else None
        _free_device_memory()
    t = measured.timing
    row.median_ms, row.p90_ms, row.iterations = t.median_ms, t.p90_ms, t.iterations
    row.compile_s, row.warm_s, row.warm_process_s = measured.compile_s, measured.warm_s, measured.warm_process_s
    row.note, row.extra = measured.note, measured.extra
    row.peak_bytes = measured.peak_bytes if measured.peak_bytes is not None else (peak if peer.torch_memory else None)
    if case.reference is not None:
        try:
            row.rel_err = relative_error(measured.outputs, case.reference)
        except ValueError as exc:
            row.error = f"outputs do not match the reference: {exc}"
    return row


# ---------------------------------------------------------------------------------------------
# Report: every cell
# ---------------------------------------------------------------------------------------------

HEADERS = ("model", "batch", "peer", "median ms", "p90 ms", "items/s", "compile/JIT s (cold / warm)",
           "warm process s", "peak MiB", "rel err vs fp32", "speedup vs eager fp16", "notes")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _seconds(cold: float | None, warm: float | None) -> str:
    if cold is None:
        return "-"
    return f"{cold:.2f}" if warm is None else f"{cold:.2f} / {warm:.2f}"


def speedups(rows: list[Row]) -> dict[int, float]:
    """Row index -> the PyTorch eager fp16 median of its model and batch over the row's median."""
    baseline = {(r.model, r.batch): r.median_ms for r in rows if r.peer == EAGER_FP16 and r.median_ms}
    return {i: baseline[(r.model, r.batch)] / r.median_ms for i, r in enumerate(rows)
            if r.median_ms and (r.model, r.batch) in baseline}


def markdown_table(rows: list[Row]) -> str:
    """Every row (model, batch, peer) with all its numbers."""
    ratio = speedups(rows)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for i, r in enumerate(rows):
        notes = f"ERROR {r.error}" if r.error else r.note
        cells = (
            r.model, str(r.batch), r.peer, _ms(r.median_ms), _ms(r.p90_ms),
            _items(r.items_per_s),
            _seconds(r.compile_s, r.warm_s),
            "-" if r.warm_process_s is None else f"{r.warm_process_s:.2f}",
            "-" if r.peak_bytes is None else f"{r.peak_bytes / 2**20:,.0f}",
            "-" if r.rel_err is None else f"{r.rel_err:.1e}",
            f"{ratio[i]:.2f}x" if i in ratio else "-",
            _truncate(notes.replace("|", "/"), 160),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _items(per_s: float | None) -> str:
    return "-" if per_s is None else f"{per_s:,.1f}" if per_s < 100 else f"{per_s:,.0f}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Report: the matrix (one line per model, batch and precision; one column per peer)
# ---------------------------------------------------------------------------------------------

RTXRT = "rtxrt"
RO = "torch.compile reduce-overhead"
# column -> its heading in the matrix
COLUMNS = {
    RTXRT: "rtxrt",
    "PyTorch eager": "eager",
    "torch.compile": "compile",
    RO: "compile RO",
    "onnxruntime Tensorrt": "ORT TensorRT",
    "onnxruntime CUDA": "ORT CUDA",
    "onnxruntime CPU": "ORT CPU (fp32)",
}
HOST_COLUMNS = ("onnxruntime CPU",)  # fp32 on the host, shown in the fp16 line


def split_label(peer: str) -> tuple[str, str]:
    """A peer's label -> (its column, the precision of the matrix line it stands in)."""
    column, _, precision = peer.rpartition(" ")
    if precision not in PRECISIONS:
        return peer, ""
    return column, "fp16" if column in HOST_COLUMNS else precision


@dataclass
class Line:
    model: str
    family: str
    batch: int
    precision: str
    cells: dict[str, Row] = field(default_factory=dict)  # column -> row

    def ms(self, column: str) -> float | None:
        row = self.cells.get(column)
        return row.median_ms if row is not None else None

    def fastest(self) -> set[str]:
        """The column(s) with the lowest median, rtxrt among them."""
        timed = {c: r.median_ms for c, r in self.cells.items() if r.median_ms}
        best = min(timed.values(), default=None)
        return {c for c, ms in timed.items() if ms == best}


def matrix_lines(rows: list[Row]) -> list[Line]:
    """The rows grouped into lines: models in the matrix's order (others after them, in the
    order they first appear), then precision (fp16, fp32, tf32), then batch. Setup rows and
    unknown peers stay out."""
    lines: dict[tuple[str, str, int], Line] = {}
    model_order: dict[str, int] = {}
    matrix_order = list(MATRIX)
    for r in rows:
        column, precision = split_label(r.peer)
        if column not in COLUMNS or not precision:
            continue
        in_matrix = r.name in MATRIX and r.model in (MATRIX[r.name].label, MATRIX[r.name].at_tiny_size().label)
        model_order.setdefault(r.model, matrix_order.index(r.name) if in_matrix else len(MATRIX) + len(model_order))
        line = lines.setdefault((r.model, precision, r.batch), Line(r.model, r.family, r.batch, precision))
        line.cells[column] = r
        line.family = line.family or r.family
    return sorted(lines.values(), key=lambda ln: (model_order[ln.model], PRECISIONS.index(ln.precision), ln.batch))


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def speedup_groups(lines: list[Line]) -> dict[str, dict[str, dict[str, float]]]:
    """Group -> peer column -> {"speedup": geometric mean of peer ms / rtxrt ms, "cells": n},
    over the lines where both were timed. Groups: "fp16 batch 1", "fp16 batch > 1", "fp16 all",
    "fp32/tf32 all" (only those with cells)."""
    groups: dict[str, list[Line]] = {
        "fp16 batch 1": [ln for ln in lines if ln.precision == "fp16" and ln.batch == 1],
        "fp16 batch > 1": [ln for ln in lines if ln.precision == "fp16" and ln.batch > 1],
        "fp16 all": [ln for ln in lines if ln.precision == "fp16"],
        "fp32/tf32 all": [ln for ln in lines if ln.precision != "fp16"],
    }
    result: dict[str, dict[str, dict[str, float]]] = {}
    for name, members in groups.items():
        per_peer = {}
        for column in COLUMNS:
            if column == RTXRT:
                continue
            ratios = [ln.ms(column) / ln.ms(RTXRT) for ln in members if ln.ms(column) and ln.ms(RTXRT)]
            if ratios:
                per_peer[column] = {"speedup": geometric_mean(ratios), "cells": len(ratios)}
        if per_peer:
            result[name] = per_peer
    return result


def issue_checks(lines: list[Line]) -> dict[str, list[str]]:
    """The cells that miss issue 15's bars: rtxrt below 0.8x of reduce-overhead, or slower than
    eager (same line)."""
    below, slower = [], []
    for ln in lines:
        rtxrt, ro, eager = ln.ms(RTXRT), ln.ms(RO), ln.ms("PyTorch eager")
        name = f"{ln.model} b{ln.batch} {ln.precision}"
        if rtxrt and ro and ro / rtxrt < 0.8:
            below.append(f"{name} ({ro / rtxrt:.2f}x)")
        if rtxrt and eager and eager < rtxrt:
            slower.append(f"{name} ({eager / rtxrt:.2f}x)")
    return {"below_0.8x_of_reduce_overhead": below, "slower_than_eager": slower}


def summary_text(lines: list[Line]) -> str:
    """The summary line(s): geometric-mean speedup of rtxrt against each peer, and the cells
    that miss the issue's bars."""
    groups = speedup_groups(lines)
    if not groups:
        return "Geometric-mean speedup of rtxrt: no line has rtxrt and a peer both timed."
    out = []
    fp16 = [g for g in ("fp16 batch 1", "fp16 batch > 1", "fp16 all") if g in groups]
    if fp16:
        parts = []
        for column in COLUMNS:
            cells = [groups[g].get(column) for g in fp16]
            if any(cells):
                values = " / ".join(f"{c['speedup']:.2f}x" if c else "-" for c in cells)
                counts = " / ".join(str(c["cells"]) if c else "0" for c in cells)
                parts.append(f"vs {COLUMNS[column]} {values} ({counts} cells)")
        out.append(f"**Geometric-mean speedup of rtxrt fp16** ({' / '.join(fp16)}): " + "; ".join(parts) + ".")
    if "fp32/tf32 all" in groups:
        parts = [f"vs {COLUMNS[c]} {v['speedup']:.2f}x ({v['cells']} cells)"
                 for c, v in groups["fp32/tf32 all"].items()]
        out.append("**fp32 and TF32 lines** (rtxrt at the line's precision): " + "; ".join(parts) + ".")
    checks = issue_checks(lines)
    below, slower = checks["below_0.8x_of_reduce_overhead"], checks["slower_than_eager"]
    out.append(f"Cells below 0.8x of compile RO: {len(below)}" + (f" ({', '.join(below)})" if below else "")
               + f"; cells where rtxrt is slower than eager: {len(slower)}"
               + (f" ({', '.join(slower)})" if slower else "") + ".")
    return "\n\n".join(out)


def _cell(row: Row | None, bold: bool) -> str:
    if row is None:
        return "-"
    if row.error:
        return "error"
    if row.median_ms is None:
        return "skipped" if row.note.startswith("skipped") else "-"
    text = _ms(row.median_ms)
    return f"**{text}**" if bold else text


def matrix_table(rows: list[Row]) -> str:
    """One line per model, batch and precision; the median ms of each peer, the fastest in bold
    (whichever it is); rtxrt's speedup vs reduce-overhead, cold JIT / warm process, memory and
    error. Columns that no line has are left out."""
    lines = matrix_lines(rows)
    columns = [c for c in COLUMNS if any(c in ln.cells for ln in lines)]
    head = (["model", "family", "batch", "precision"] + [f"{COLUMNS[c]} ms" for c in columns]
            + ["rtxrt vs compile RO", "rtxrt cold JIT / warm process s", "rtxrt peak MiB", "rtxrt rel err"])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ln in lines:
        fastest = ln.fastest()
        rtxrt = ln.cells.get(RTXRT)
        ratio = "-"
        if ln.ms(RTXRT) and ln.ms(RO):
            ratio = f"{ln.ms(RO) / ln.ms(RTXRT):.2f}x"
        jit = "-"
        if rtxrt is not None and rtxrt.compile_s is not None:
            warm = "-" if rtxrt.warm_process_s is None else f"{rtxrt.warm_process_s:.2f}"
            jit = f"{rtxrt.compile_s:.1f} / {warm}"
        cells = ([ln.model, ln.family or "-", str(ln.batch), ln.precision]
                 + [_cell(ln.cells.get(c), c in fastest) for c in columns]
                 + [ratio, jit,
                    "-" if rtxrt is None or rtxrt.peak_bytes is None else f"{rtxrt.peak_bytes / 2**20:,.0f}",
                    "-" if rtxrt is None or rtxrt.rel_err is None else f"{rtxrt.rel_err:.1e}"])
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def markdown_document(report_data: dict) -> str:
    """The section for benchmarks/RESULTS.md: where it ran, the summary, the matrix, every cell."""
    rows = [row_from_json(r) for r in report_data["rows"]]
    v = report_data.get("versions", {})
    lines = matrix_lines(rows)
    versions_text = ", ".join(f"{k} {val}" for k, val in v.items())
    problems = [r for r in rows if r.peer == "(setup)"]
    parts = [
        f"## Benchmark matrix: {report_data.get('card', '?')}, driver {report_data.get('driver', '?')}, "
        f"{report_data.get('date', '?')}",
        f"`{report_data.get('command', 'python benchmarks/peers.py')}` ({report_data.get('seconds', '?')} s); "
        f"CUDA {report_data.get('cuda', '?')}; {versions_text}.",
        summary_text(lines),
        matrix_table(rows),
        "Latency: median ms of one call plus a device synchronize (CUDA events; the CPU provider by "
        "the wall clock, at batch 1 only). **Bold**: the fastest in the line, whichever it is. "
        "fp16 lines: every GPU peer in fp16 (the CPU provider in fp32); fp32: TF32 off; tf32: "
        "TF32 on. rtxrt cold JIT: first Session and run on an empty cache; warm process: a fresh "
        "process's `import cupy, rtxrt`, Session and first run on that cache. rel err: relative "
        "L2 error against PyTorch fp32 (TF32 off), the worst output.",
    ]
    if problems:
        parts.append("Models not run or with a warning: " + "; ".join(
            f"{r.model}: {r.error or r.note}" for r in problems) + ".")
    parts += ["### Every cell", markdown_table(rows)]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Where it ran
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "timm", "transformers", "triton", "cupy", "onnxruntime", "onnx", "rtxrt"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = "not installed"
        except Exception:  # noqa: BLE001  (a broken install is reported, not fatal)
            found[name] = "not importable"
    return found


def card_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU (CPU only)"


@functools.lru_cache(maxsize=None)
def driver_version() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown (no nvidia-smi)"


def report(rows: list[Row], settings: Settings, seconds: float, command: str | None = None) -> dict:
    ratio = speedups(rows)
    lines = matrix_lines(rows)
    return {
        "card": card_name(),
        "driver": driver_version() if torch.cuda.is_available() else "none",
        "cuda": torch.version.cuda or "none",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command or "python benchmarks/peers.py",
        "seconds": round(seconds, 1),
        "versions": dict(versions()),
        "settings": dataclasses.asdict(settings),
        "summary": {"geometric_mean_speedup_of_rtxrt": speedup_groups(lines), **issue_checks(lines)},
        "rows": [dataclasses.asdict(r) | {"items_per_s": r.items_per_s, "speedup_vs_eager_fp16": ratio.get(i)}
                 for i, r in enumerate(rows)],
    }


def merge_reports(reports: list[dict]) -> dict:
    """One report from several runs (parts of the matrix): rows keyed by (model, batch, peer),
    a measured or failed row beating a skipped one and a later file beating an earlier; the
    run's facts from the first file, other cards or drivers named."""
    merged = dict(reports[0])
    rows: dict[tuple, dict] = {}
    for rep in reports:
        for r in rep["rows"]:
            key = (r["model"], r["batch"], r["peer"])
            old = rows.get(key)
            if old is None or not (r.get("median_ms") is None and r.get("error") is None and
                                   (old.get("median_ms") is not None or old.get("error") is not None)):
                rows[key] = r
    merged["rows"] = list(rows.values())
    for key in ("card", "driver"):
        seen = list(dict.fromkeys(str(rep.get(key)) for rep in reports))
        merged[key] = " + ".join(seen)
    merged["seconds"] = round(sum(float(rep.get("seconds") or 0) for rep in reports), 1)
    commands = list(dict.fromkeys(rep.get("command", "") for rep in reports))
    merged["command"] = "`; `".join(commands)
    lines = matrix_lines([row_from_json(r) for r in merged["rows"]])
    merged["summary"] = {"geometric_mean_speedup_of_rtxrt": speedup_groups(lines), **issue_checks(lines)}
    return merged


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run(specs: list[ModelSpec], batches: list[int] | None, settings: Settings, workdir: Path,
        out: Path | None = None, log: Callable[[str], None] = print, device: str | None = None, *,
        markdown: Path | None = None, providers: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic, command: str | None = None) -> list[Row]:
    """Every peer on every case in ``schedule``'s order; returns the rows in table order (case
    by case, each case's peers in plan order) and rewrites ``out`` and ``markdown`` after each
    peer. ``device``: "cuda" or "cpu" (GPU peers skipped); by default "cuda" where there is one.
    ``providers``: onnxruntime's, by default those it offers. A case is set up (model built and
    exported, reference computed) when its first peer runs; a model whose library is missing
    gives a skipped row that says so, one that fails to build an error row."""
    started = clock()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if providers is None:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    cases_plan = plan(specs, batches, settings, device == "cuda", providers)
    not_reached = "skipped: not reached (the run was stopped before it)"
    slots: list[dict[str, Row]] = [{p.label: new_row(c.spec, c.batch, p.label, note=not_reached) for p in c.peers}
                                   for c in cases_plan]
    prepared: dict[str, Prepared | Row] = {}  # model name -> Prepared, or the row saying why not
    cases: dict[int, Case | str] = {}  # case index -> Case, or the note of its peers' rows

    def ordered() -> list[Row]:
        rows = []
        for plan_case, slot in zip(cases_plan, slots):
            order = ["(setup)", *(p.label for p in plan_case.peers)]
            rows += sorted(slot.values(), key=lambda r: order.index(r.peer) if r.peer in order else len(order))
        return rows

    def record(i: int, row: Row) -> None:
        slots[i][row.peer] = row
        status = f"ERROR {row.error}" if row.error else f"{_ms(row.median_ms)} ms {row.note}"
        log(f"[{clock() - started:5.0f} s] {row.model} b{row.batch} {row.peer}: {status}")
        if out is not None or markdown is not None:
            data = report(ordered(), settings, clock() - started, command)
            if out is not None:
                out.write_text(json.dumps(data, indent=1))
            if markdown is not None:
                markdown.write_text(markdown_document(data))

    def out_of_time() -> bool:
        return clock() - started > settings.time_limit

    def setup(i: int) -> Case | str:
        if i in cases:
            return cases[i]
        spec, batch = cases_plan[i].spec, cases_plan[i].batch
        if spec.name not in prepared:
            failed = new_row(spec, 0, "(setup)")
            try:
                prepared[spec.name] = prepare(spec, workdir)
            except MissingLibrary as exc:
                failed.note = f"skipped: {exc}"
            except ModuleNotFoundError as exc:
                failed.note = f"skipped: needs {exc.name}, which is not installed"
            except Exception as exc:  # noqa: BLE001  (the other models still run)
                failed.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            prepared.setdefault(spec.name, failed)
        model = prepared[spec.name]
        if isinstance(model, Row):  # the model could not be built: every case of it says why
            cases[i] = model.note if model.note else "skipped: the model could not be built"
            record(i, dataclasses.replace(model, batch=batch))
            return cases[i]
        try:
            case = make_case(spec, batch, model, workdir, settings, device)
            case.reference = reference_outputs(case)
            problem = liveness_problem(case.reference)
            if problem:
                record(i, new_row(spec, batch, "(setup)", note=f"warning: the reference's {problem}"))
            cases[i] = case
        except Exception as exc:  # noqa: BLE001  (the other cases and models still run)
            cases[i] = "skipped: the case could not be set up"
            record(i, new_row(spec, batch, "(setup)", error=f"{type(exc).__name__}: {exc}".replace("\n", " ")))
        return cases[i]

    for i, peer in schedule(cases_plan):
        spec, batch = cases_plan[i].spec, cases_plan[i].batch
        if out_of_time():
            note = f"skipped: --time-limit {settings.time_limit:g} s reached"
            record(i, new_row(spec, batch, peer.label, note=note))
            continue
        case = setup(i)
        if isinstance(case, str):
            record(i, new_row(spec, batch, peer.label, note=case))
        else:
            record(i, run_peer(case, peer))
    return ordered()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matrix", action="store_true", help="every model of the matrix (--list shows them)")
    parser.add_argument("--models", help="comma-separated matrix or zoo names "
                                         f"(default: {','.join(DEFAULT_MODELS)}; with --matrix: all)")
    parser.add_argument("--batches", help="comma-separated; default: each model's own (1 and 16 or 32)")
    parser.add_argument("--part", help="K/N: only the K-th of N parts of the chosen models (every N-th model "
                                       "from the K-th), to run a matrix in several sittings")
    parser.add_argument("--tiny", action="store_true", help="every model at its tiny test size (a smoke test)")
    parser.add_argument("--list", action="store_true", help="print the matrix's models and exit")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the section for benchmarks/RESULTS.md here")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                        help="run nothing: write --markdown (and --out) from these results, merged")
    parser.add_argument("--iterations", type=int, help="timed iterations at batch 1 (default 50; 10 with --quick)")
    parser.add_argument("--max-seconds", type=float,
                        help="timing per peer stops early after this (default 5; 2 with --quick)")
    parser.add_argument("--time-limit", type=float, default=360.0,
                        help="start no peer after this many seconds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="input seed (default: %(default)s)")
    parser.add_argument("--skip-torch-compile", action="store_true")
    parser.add_argument("--no-warm-process", action="store_true", help="do not time a fresh rtxrt process")
    parser.add_argument("--quick", action="store_true",
                        help="10 iterations; no reduce-overhead, rtxrt fp32 or TF32 rows")
    parser.add_argument("--workdir", type=Path, help="keep the ONNX and .rtxir files here")
    return parser.parse_args(argv)


def selected_specs(args: argparse.Namespace) -> list[ModelSpec]:
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    else:
        names = list(MATRIX) if args.matrix else list(DEFAULT_MODELS)
    specs = [model_spec(n) for n in names]
    if args.part:
        k, _, n = args.part.partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise SystemExit(f"--part wants K/N with 1 <= K <= N, got {args.part!r}")
        specs = specs[int(k) - 1::int(n)]
    return [s.at_tiny_size() for s in specs] if args.tiny else specs


def models_table() -> str:
    lines = ["| name | model | family | batches | precisions | source | here |", "|---|---|---|---|---|---|---|"]
    for spec in MATRIX.values():
        lines.append(f"| {spec.name} | {spec.label} | {spec.family} | {', '.join(map(str, spec.default_batches))} | "
                     f"{', '.join(spec.precisions)} | {spec.source} | {spec.missing_library() or 'ok'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print(models_table())
        return 0
    if args.from_json:
        data = merge_reports([json.loads(p.read_text()) for p in args.from_json])
        if args.out:
            args.out.write_text(json.dumps(data, indent=1))
        text = markdown_document(data)
        if args.markdown:
            args.markdown.write_text(text)
        print(text)
        return 0
    settings = Settings(
        iterations=args.iterations or (10 if args.quick else 50),
        seed=args.seed,
        max_seconds=args.max_seconds or (2.0 if args.quick else 5.0),
        time_limit=args.time_limit,
        quick=args.quick,
        torch_compile=not args.skip_torch_compile,
        warm_process=not args.no_warm_process,
    )
    specs = selected_specs(args)
    batches = [int(b) for b in args.batches.split(",") if b.strip()] if args.batches else None
    command = "python benchmarks/peers.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print(f"card: {card_name()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = run(specs, batches, settings, workdir, args.out, markdown=args.markdown, command=command.strip())
    data = report(rows, settings, time.monotonic() - started, command.strip())
    print(f"\ncard: {card_name()}; median and p90 of up to {settings.iterations} iterations at batch 1, "
          f"{settings.iterations_for(2)} at larger batches (CUDA events around call + synchronize)\n")
    print(matrix_table(rows))
    print()
    print(summary_text(matrix_lines(rows)))
    print()
    print(markdown_table(rows))
    if args.out:
        args.out.write_text(json.dumps(data, indent=1))
        print(f"\nJSON: {args.out}")
    if args.markdown:
        args.markdown.write_text(markdown_document(data))
        print(f"Markdown: {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
