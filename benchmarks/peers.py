"""rtxrt against the peers a user would pick instead, in one run on one GPU.

Models (tests/models/zoo.py, seeded random weights, exported to ONNX in this run): ResNet-50 at
224x224, BERT-base at sequence 128 (hidden 768, 12 layers), the zoo UNet at 256x256 and
ViT-B/16 at 224x224. ResNet-50 and BERT-base run at every requested batch; UNet and ViT-B/16
only at batches up to 8. Image models are exported once per batch (static shapes); BERT's ONNX
has dynamic batch and sequence axes and serves every batch.

Peers, each on the same fresh random inputs (never zeros):
- PyTorch eager fp16 (``model.half().cuda()`` under ``torch.inference_mode()``) and fp32 (torch's
  default math: TF32 convolutions). BERT runs with transformers' default SDPA attention (the
  ONNX export has eager MatMul/Softmax attention).
- ``torch.compile`` (fp16) in the default mode and ``mode="reduce-overhead"`` (CUDA graphs);
  the compile column is the first call. Dynamo is reset before each, so no peer inherits another's
  graphs, but Inductor's on-disk cache stays on.
- onnxruntime with every provider it offers (CPU, CUDA, TensorRT); the compile column is session
  creation plus the first run. With a GPU in the run the CPU provider is timed at batch 1 only.
- rtxrt: ``build_rtxir`` (AOT, fp16; fp32 as an extra row), then ``rtxrt.Session`` and its first
  run on an empty cache folder (cold JIT) and again on the same folder (warm load), fed CuPy
  arrays. Every compile column is the time to the first result: a model with symbolic dims
  (BERT) is specialized at its first run, a static one in the constructor.

Timing: every iteration is a CUDA event on the current stream, the call, a device-wide
synchronize (so work on any stream a peer uses is counted) and a second event; the few
microseconds of the synchronize are in every peer's number alike. Warm-up first, then the median
and p90 of N iterations (``--iterations`` at batch 1, 40% of it, at least 5, at larger batches),
stopping early after ``--max-seconds`` per peer. The CPU provider is timed by the wall clock.

Memory: peak ``torch.cuda.max_memory_allocated`` above what was allocated before the peer
(model, inputs, outputs, workspace), reset before each peer; for rtxrt its ``device_bytes``
(arena + weights). Correctness: relative L2 error of each output against PyTorch fp32 eager run
with TF32 off, the largest over the outputs.

Run from the repository root (a CUDA GPU, torch, CuPy, onnxruntime, transformers):
    python benchmarks/peers.py --models resnet50,bert_base,unet,vit_b16 --batches 1,32 \\
        --out peers.json [--iterations 50] [--skip-torch-compile] [--quick]
torch.compile runs last: every case's default mode, then reduce-overhead, small batches first. A
peer not yet started when ``--time-limit`` seconds (default 360) have passed is listed as skipped,
so a slow compile costs its own rows, not the run; the JSON file is rewritten after every peer.
``--quick``: 10 iterations, no rtxrt fp32 or reduce-overhead rows.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # rtxrt and tests.models.zoo from this checkout

import torch

from tests.models import zoo

EAGER_FP16 = "PyTorch eager fp16"  # the baseline of the speedup column
ORT_CPU = "onnxruntime CPU fp32"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


# ---------------------------------------------------------------------------------------------
# What is run
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model at the size it is benchmarked at."""

    name: str
    image_size: int | None = None  # image models; None: the zoo's default
    seq: int = 128  # text models
    max_batch: int | None = None

    @property
    def is_text(self) -> bool:
        return self.name in zoo.TEXT_MODELS

    @property
    def label(self) -> str:
        if self.is_text:
            return f"{self.name} seq {self.seq}"
        size = self.image_size or zoo.IMAGE_MODELS[self.name][1][-1]
        return f"{self.name} {size}x{size}"

    def batches(self, requested: list[int]) -> list[int]:
        return [b for b in requested if self.max_batch is None or b <= self.max_batch]


FULL_SIZE = {
    "resnet50": ModelSpec("resnet50", image_size=224),
    "bert_base": ModelSpec("bert_base", seq=128),
    "unet": ModelSpec("unet", image_size=256, max_batch=8),
    "vit_b16": ModelSpec("vit_b16", image_size=224, max_batch=8),
}


def model_spec(name: str) -> ModelSpec:
    """The benchmark size of ``name``; other zoo models at the zoo's own size."""
    if name not in FULL_SIZE and name not in zoo.IMAGE_MODELS and name not in zoo.TEXT_MODELS:
        raise SystemExit(f"unknown model {name!r}; zoo models: {', '.join([*zoo.IMAGE_MODELS, *zoo.TEXT_MODELS])}")
    return FULL_SIZE.get(name, ModelSpec(name))


@dataclass
class Settings:
    iterations: int = 50  # at batch 1
    seed: int = 1  # inputs; the weights use zoo.EXPORT_SEED
    max_seconds: float = 5.0  # timing per peer stops early after this
    time_limit: float = 360.0  # no peer starts after this many seconds of the run
    quick: bool = False  # fewer iterations, no extra rows (rtxrt fp32, reduce-overhead)
    torch_compile: bool = True

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
    """Warm up, then time ``iterations`` calls (at least 3, fewer than asked once ``max_seconds``
    have passed)."""
    for _ in range(warmup):
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
    torch_model: Any  # the fp32 model on the CPU; peers copy it
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


def build_torch_model(spec: ModelSpec):
    """The zoo's fp32 model on the CPU, as a user would run it: BERT with transformers' default
    SDPA attention (the zoo builds it with eager attention for the ONNX export)."""
    model = zoo.build_torch(spec.name, spec.image_size)
    if spec.is_text and hasattr(model, "bert"):
        model.bert.set_attn_implementation("sdpa")
    return model


def export_image_batch(spec: ModelSpec, torch_model, batch: int, workdir: Path) -> Path:
    """A static ONNX export of an image model at ``batch`` (the zoo exports batch 1; a constant-
    folded export bakes its batch into the graph)."""
    size = spec.image_size or zoo.IMAGE_MODELS[spec.name][1][-1]
    path = workdir / f"{spec.name}-b{batch}.onnx"
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(zoo.EXPORT_SEED))
    with torch.no_grad():
        torch.onnx.export(torch_model, (x,), str(path), dynamo=False, opset_version=zoo.OPSET,
                          do_constant_folding=True, input_names=["input"], output_names=["output"])
    return path


def make_case(spec: ModelSpec, batch: int, exported: zoo.ExportedModel, torch_model, workdir: Path,
              settings: Settings, device: str) -> Case:
    """The case of ``spec`` at ``batch``: the zoo's ONNX file (text models have dynamic axes,
    image models are batch 1) or a static export at ``batch``, and fresh inputs from the zoo
    (images from a standard normal; token ids over the vocabulary, with padded rows)."""
    if spec.is_text or batch == 1:
        onnx_path = Path(exported.onnx_path)
    else:
        onnx_path = export_image_batch(spec, torch_model, batch, workdir)
    sizes = {"batch": batch, "seq": spec.seq} if spec.is_text else {"batch": batch}
    inputs = exported.make_inputs(settings.seed, **sizes)
    return Case(spec, batch, onnx_path, list(exported.input_names), inputs, torch_model, settings, device)


# ---------------------------------------------------------------------------------------------
# Peers: each returns what it measured; run_peer turns that (or its error) into a row
# ---------------------------------------------------------------------------------------------


@dataclass
class Measured:
    timing: Timing
    outputs: list[np.ndarray]
    compile_s: float | None = None  # compile, cold JIT or session creation
    warm_s: float | None = None  # rtxrt: the second Session's construction
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
def exact_fp32() -> Iterator[None]:
    """TF32 off for convolutions and matmuls (torch turns it on for cuDNN convolutions)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def reference_outputs(case: Case) -> list[np.ndarray]:
    """PyTorch fp32 eager with TF32 off: what every peer's error is measured against."""
    model = case.torch_model_on_device(torch.float32)
    with torch.inference_mode(), exact_fp32():
        return to_numpy(model(*case.torch_args(torch.float32)))


def torch_eager(dtype: torch.dtype) -> Callable[[Case], Measured]:
    def run(case: Case) -> Measured:
        model, args = case.torch_model_on_device(dtype), case.torch_args(dtype)
        with torch.inference_mode():
            timing = case.measure(lambda: model(*args))
            outputs = to_numpy(model(*args))
        if case.device != "cuda":
            note = "on the CPU (no GPU)"
        else:
            note = "torch defaults: TF32 convolutions" if dtype == torch.float32 else ""
        return Measured(timing, outputs, note=note)

    return run


def torch_compiled(mode: str | None) -> Callable[[Case], Measured]:
    def run(case: Case) -> Measured:
        torch._dynamo.reset()
        model, args = case.torch_model_on_device(torch.float16), case.torch_args(torch.float16)
        compiled = torch.compile(model, mode=mode)
        with torch.inference_mode():
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


def onnxruntime_gpu(provider: str) -> Callable[[Case], Measured]:
    """A GPU provider with inputs and outputs bound on the device (I/O binding), as an application
    that cares about speed binds them."""

    def run(case: Case) -> Measured:
        import onnxruntime as ort

        started = time.perf_counter()
        session = ort.InferenceSession(str(case.onnx_path), providers=[provider, "CPUExecutionProvider"])
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


def rtxrt_peer(precision: str) -> Callable[[Case], Measured]:
    """AOT-compile (once per ONNX file and precision); open a Session on an empty cache folder and
    run it once (cold: a model with symbolic dims is specialized at its first run, a static one
    in the constructor), again on the same folder (warm), then time the warm one on CuPy inputs."""

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
        note = (f"cold: {cold_stats.get('kernels_compiled')} kernels compiled; warm from cache: "
                f"{stats.get('from_cache')}" + (f"; AOT {aot_s:.1f} s" if aot_s is not None else ""))
        extra = {"cold_stats": cold_stats, "warm_stats": stats, "aot_s": aot_s}
        return Measured(timing, outputs, compile_s=cold_s, warm_s=warm_s,
                        peak_bytes=int(stats["device_bytes"]), note=note, extra=_jsonable(extra))

    return run


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class Peer:
    label: str
    run: Callable[[Case], Measured]
    needs_gpu: bool = True
    torch_memory: bool = True  # its peak shows in torch.cuda.max_memory_allocated


def first_pass_peers(settings: Settings, providers: list[str]) -> list[Peer]:
    """The peers run for every case before any torch.compile (which may hit the time limit)."""
    peers = [
        Peer("PyTorch eager fp32", torch_eager(torch.float32), needs_gpu=False),
        Peer(EAGER_FP16, torch_eager(torch.float16)),
        Peer("rtxrt fp16", rtxrt_peer("fp16"), torch_memory=False),
    ]
    if not settings.quick:
        peers.append(Peer("rtxrt fp32", rtxrt_peer("fp32"), torch_memory=False))
    for provider in providers:
        if provider == "CPUExecutionProvider":
            peers.append(Peer(ORT_CPU, onnxruntime_cpu, needs_gpu=False, torch_memory=False))
        elif provider in GPU_PROVIDERS:
            short = provider.removesuffix("ExecutionProvider")
            peers.append(Peer(f"onnxruntime {short} fp32", onnxruntime_gpu(provider), torch_memory=False))
    return peers


def compile_peers(settings: Settings) -> list[Peer]:
    if not settings.torch_compile:
        return []
    peers = [Peer("torch.compile fp16", torch_compiled(None))]
    if not settings.quick:
        peers.append(Peer("torch.compile reduce-overhead fp16", torch_compiled("reduce-overhead")))
    return peers


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

    @property
    def items_per_s(self) -> float | None:
        return None if not self.median_ms else 1e3 * self.batch / self.median_ms


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
    row = Row(case.spec.label, case.batch, peer.label)
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
    row.compile_s, row.warm_s, row.note, row.extra = measured.compile_s, measured.warm_s, measured.note, measured.extra
    row.peak_bytes = measured.peak_bytes if measured.peak_bytes is not None else (peak if peer.torch_memory else None)
    if case.reference is not None:
        try:
            row.rel_err = relative_error(measured.outputs, case.reference)
        except ValueError as exc:
            row.error = f"outputs do not match the reference: {exc}"
    return row


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

HEADERS = ("model", "batch", "peer", "median ms", "p90 ms", "items/s", "compile/JIT s (cold / warm)",
           "peak MiB", "rel err vs fp32", "speedup vs eager fp16", "notes")


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
    ratio = speedups(rows)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for i, r in enumerate(rows):
        notes = f"ERROR {r.error}" if r.error else r.note
        cells = (
            r.model, str(r.batch), r.peer, _ms(r.median_ms), _ms(r.p90_ms),
            "-" if r.items_per_s is None else f"{r.items_per_s:,.1f}" if r.items_per_s < 100 else f"{r.items_per_s:,.0f}",
            _seconds(r.compile_s, r.warm_s),
            "-" if r.peak_bytes is None else f"{r.peak_bytes / 2**20:,.0f}",
            "-" if r.rel_err is None else f"{r.rel_err:.1e}",
            f"{ratio[i]:.2f}x" if i in ratio else "-",
            _truncate(notes.replace("|", "/"), 160),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "cupy", "onnxruntime", "transformers", "onnx", "rtxrt"):
        try:
            found[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001  (a broken install is reported, not fatal)
            found[name] = "not importable"
    return found


def card_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU (CPU only)"


def report(rows: list[Row], settings: Settings, started: float) -> dict:
    ratio = speedups(rows)
    return {
        "card": card_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.monotonic() - started, 1),
        "versions": versions(),
        "settings": dataclasses.asdict(settings),
        "rows": [dataclasses.asdict(r) | {"items_per_s": r.items_per_s, "speedup_vs_eager_fp16": ratio.get(i)}
                 for i, r in enumerate(rows)],
    }


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def plan(specs: list[ModelSpec], batches: list[int], settings: Settings, cuda: bool,
         providers: list[str]) -> list[tuple[ModelSpec, int, list[Peer], list[Peer]]]:
    """(model, batch, first-pass peers, torch.compile peers) in table order. With a GPU the CPU
    provider runs at batch 1 only (it would take minutes at 32 and is not the peer there)."""
    first = first_pass_peers(settings, providers)
    later = compile_peers(settings)
    cases = []
    for spec in specs:
        for batch in spec.batches(batches):
            here = [p for p in first if not (cuda and batch > 1 and p.label == ORT_CPU)]
            cases.append((spec, batch, here, later))
    return cases


def run(specs: list[ModelSpec], batches: list[int], settings: Settings, workdir: Path,
        out: Path | None = None, log: Callable[[str], None] = print, device: str | None = None) -> list[Row]:
    """Every peer on every case, the torch.compile peers in a second pass (so the time limit
    cuts those first); returns the rows in table order and rewrites ``out`` after each peer.
    ``device``: "cuda" or "cpu" (GPU peers skipped); by default "cuda" where there is one."""
    import onnxruntime

    started = time.monotonic()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cases_plan = plan(specs, batches, settings, device == "cuda", onnxruntime.get_available_providers())
    order = {p.label: i for _, _, first, later in cases_plan for i, p in enumerate([*first, *later])}
    slots: list[list[Row]] = [[] for _ in cases_plan]
    prepared: dict[str, tuple[Any, zoo.ExportedModel]] = {}
    cases: list[Case | None] = []

    def ordered() -> list[Row]:
        return [r for rows in slots for r in sorted(rows, key=lambda r: order.get(r.peer, -1))]

    def record(i: int, row: Row) -> None:
        slots[i].append(row)
        status = f"ERROR {row.error}" if row.error else f"{_ms(row.median_ms)} ms {row.note}"
        log(f"[{time.monotonic() - started:5.0f} s] {row.model} b{row.batch} {row.peer}: {status}")
        if out is not None:
            out.write_text(json.dumps(report(ordered(), settings, started), indent=1))

    def out_of_time() -> bool:
        return time.monotonic() - started > settings.time_limit

    def attempt(i: int, case: Case | None, peer: Peer) -> None:
        spec, batch = cases_plan[i][:2]
        if out_of_time():
            record(i, Row(spec.label, batch, peer.label, note=f"skipped: --time-limit {settings.time_limit:g} s reached"))
        elif case is None:
            record(i, Row(spec.label, batch, peer.label, note="skipped: the case could not be set up"))
        else:
            record(i, run_peer(case, peer))

    for i, (spec, batch, first, _) in enumerate(cases_plan):
        case = None
        if not out_of_time():
            try:
                case = setup_case(spec, batch, prepared, workdir, settings, device)
            except Exception as exc:  # noqa: BLE001  (the other cases and models still run)
                record(i, Row(spec.label, batch, "(setup)", error=f"{type(exc).__name__}: {exc}"))
        cases.append(case)
        for peer in first:
            attempt(i, case, peer)
    # torch.compile last: every case's default mode before any reduce-overhead, small batches
    # first, so that what the time limit cuts is the least telling.
    later = [(i, peer) for i, (_, _, _, compiled) in enumerate(cases_plan) for peer in compiled]
    later.sort(key=lambda work: (cases_plan[work[0]][3].index(work[1]), cases_plan[work[0]][1]))
    for i, peer in later:
        attempt(i, cases[i], peer)
    return ordered()


def setup_case(spec: ModelSpec, batch: int, prepared: dict[str, tuple[Any, zoo.ExportedModel]],
               workdir: Path, settings: Settings, device: str) -> Case:
    """The case with its reference outputs; the torch model and the zoo export are made once
    per model and kept in ``prepared``."""
    if spec.name not in prepared:
        exported = zoo.export(spec.name, workdir / f"{spec.name}.onnx", spec.image_size)
        prepared[spec.name] = (build_torch_model(spec), exported)
    model, exported = prepared[spec.name]
    case = make_case(spec, batch, exported, model, workdir, settings, device)
    case.reference = reference_outputs(case)
    return case


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,bert_base,unet,vit_b16",
                        help="comma-separated zoo names (default: %(default)s)")
    parser.add_argument("--batches", default="1,32", help="comma-separated (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--iterations", type=int, help="timed iterations at batch 1 (default 50; 10 with --quick)")
    parser.add_argument("--max-seconds", type=float, help="timing per peer stops early after this (default 5; 2 with --quick)")
    parser.add_argument("--time-limit", type=float, default=360.0,
                        help="start no peer after this many seconds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="input seed (default: %(default)s)")
    parser.add_argument("--skip-torch-compile", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="10 iterations; no rtxrt fp32 or reduce-overhead rows")
    parser.add_argument("--workdir", type=Path, help="keep the ONNX and .rtxir files here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        iterations=args.iterations or (10 if args.quick else 50),
        seed=args.seed,
        max_seconds=args.max_seconds or (2.0 if args.quick else 5.0),
        time_limit=args.time_limit,
        quick=args.quick,
        torch_compile=not args.skip_torch_compile,
    )
    specs = [model_spec(n.strip()) for n in args.models.split(",") if n.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    print(f"card: {card_name()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = run(specs, batches, settings, workdir, args.out)
    print(f"\ncard: {card_name()}; median and p90 of up to {settings.iterations} iterations at batch 1, "
          f"{settings.iterations_for(2)} at larger batches (CUDA events around call + synchronize)\n")
    print(markdown_table(rows))
    if args.out:
        print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
