"""Generated attention kernels on the GPU agree with the reference backend's Attention.

Runs the compile test's catalogues (tests/backends/cuda/test_attention_codegen.py: CASES and
TACTIC_CASES): each kernel is compiled for the probed GPU's arch, launched on fresh random
inputs (seeded per case, never zeros; Q and K in [-2, 2] so that the softmax is far from
uniform, V in [-1, 1]) into an output poisoned with NaN, and compared with the reference
backend's Attention run in float64 on the same (stored) values.

Masks: "bool" keeps 70 % of the keys; "float" is uniform in [-2, 2] with 10 % -inf;
"padding" (BERT's [B, 1, 1, S]) is 0 for the first S - 23 (b + 1) keys of batch b and the
stored type's most negative finite value after them, as transformers builds it. Cases with
``dead_rows`` give query row 3 no allowed key: its output must be exactly zero.

Tolerances, as the relative norm ||Y - ref|| / ||ref|| and per element |Y - ref| <= tol *
(|ref| + rms(ref)) (tests/backends/cuda/helpers.check_close):
- float32 1e-4: fp32 arithmetic throughout; the errors are exp2's (2 ulp) and the summation
  order, about 1e-6;
- float16 5e-3: the probabilities are rounded to fp16 for the tensor-core P V product (as
  the reference rounds them to T) and Y once at the store: one fp16 ulp is 9.8e-4 relative;
- bfloat16 2e-2: the same roundings to bf16, whose ulp is 7.8e-3 relative.

The feature catalogue (FEATURE_CASES: KV cache, nonpad_kv_seqlen, softcap, sliding windows,
qk_matmul_output) runs as whole node programs, every tactic the lowering offers: the cache
copies, the attention kernel and the scores kernel launched in order on the node's inputs,
into outputs and scratch poisoned with NaN bytes, every output compared with the reference
backend's (float64 on the stored values). nonpad_kv_seqlen is int64, past_key/past_value
random like K and V. Bounds: Y as above; present_key and present_value bit-exact (copies);
qk_matmul_output with Y's tolerance per dtype (the scores are computed in fp32 and rounded
once to the storage type), its infinities (mode 2's masked scores) exactly where the
reference has them, and mode 3's rows without an allowed key exactly zero.
"""
from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.plan.program import BufferRole, Launch
from rtxrt.backends.cuda.compile.nvrtc import compile_many

from .helpers import check_close, random, storage, to_device
from .test_attention_codegen import CASES, FEATURE_CASES, OPSET, TACTIC_CASES, Case, lower_case

pytestmark = pytest.mark.gpu

TOLERANCE = {DType.FLOAT32: 1e-4, DType.FLOAT16: 5e-3, DType.BFLOAT16: 2e-2}
NAN_BITS = {DType.FLOAT16: 0x7E00, DType.BFLOAT16: 0x7FC0}
DEAD_ROW = 3


@pytest.fixture(scope="module")
def functions(tmp_path_factory):
    """Every kernel of both catalogues, compiled for this GPU and loaded."""
    import cupy

    from rtxrt.backends.cuda.device import probe

    kernels = {k.name: k.source for k in (c.kernel() for c in CASES + TACTIC_CASES)}
    folder = tmp_path_factory.mktemp("attention_cubins")
    loaded = {}
    for name, cubin in compile_many(kernels.items(), probe().arch).items():
        path = folder / f"{name}.cubin"
        path.write_bytes(cubin)
        loaded[name] = cupy.RawModule(path=str(path)).get_function(name)
    return loaded


@pytest.mark.parametrize("case", CASES + TACTIC_CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_attention(case, functions):
    kernel = case.kernel()
    arrays = make_inputs(case)
    got = launch(functions[kernel.name], kernel, [to_device(a) for a in arrays], arrays)
    compare(case, got, reference(case, arrays))


@pytest.fixture(scope="module")
def program_functions():
    """Every kernel of every tactic's program of the feature catalogue, compiled for this GPU."""
    import cupy

    from rtxrt.backends.cuda.device import probe

    kernels = {name: source for c in FEATURE_CASES for p in lower_case(c) for name, source in p.kernels.items()}
    functions = {}
    for name, cubin in compile_many(kernels.items(), probe().arch).items():
        module = cupy.cuda.function.Module()
        module.load(cubin)
        functions[name] = module.get_function(name)
    return functions


@pytest.mark.parametrize("case", FEATURE_CASES, ids=lambda c: c.id)
def test_every_tactic_of_a_decoder_attention_matches_the_reference(case, program_functions):
    arrays = make_inputs(case)
    want = reference_outputs(case, arrays)
    programs = lower_case(case)
    assert {p.label for p in programs} and not any(p.on_host for p in programs)
    for program in programs:
        got = run_program(program_functions, program, arrays)
        compare_outputs(case, program.label, got, want)


def test_a_kv_cache_copy_of_unaligned_buffers_takes_the_element_by_element_path(program_functions):
    """past and K one element past an aligned address: no 16-byte copies, the same present."""
    case = next(c for c in FEATURE_CASES if c.id == "kv-decode-4d-gqa-causal-f16")
    arrays = make_inputs(case)
    (program,) = lower_case(case, tune=False)
    got = run_program(program_functions, program, arrays, unaligned=True)
    compare_outputs(case, program.label, got, reference_outputs(case, arrays))


def test_unaligned_buffers_take_the_element_by_element_path(functions):
    """Q, K, V, the mask and Y each one element past an aligned address: no 16-byte copies
    and no paired stores, the same results."""
    import cupy

    case = next(c for c in CASES if c.id == "bert-float16")
    kernel = case.kernel()
    arrays = make_inputs(case)

    def unaligned(array: np.ndarray):
        flat = to_device(array).ravel()
        buffer = cupy.empty(flat.size + 1, flat.dtype)
        buffer[1:] = flat
        return buffer[1:].reshape(array.shape)

    got = launch(functions[kernel.name], kernel, [unaligned(a) for a in arrays], arrays, unaligned)
    compare(case, got, reference(case, arrays))


# ---------------------------------------------------------------- helpers

def make_inputs(case: Case) -> list[np.ndarray | None]:
    """The node's inputs as stored: Q, K, V, the mask, past_key and past_value, nonpad_kv_seqlen
    (None where omitted)."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    arrays = [random(rng, case.shape("Q"), case.dtype, 2.0), random(rng, case.shape("K"), case.dtype, 2.0),
              random(rng, case.shape("V"), case.dtype), make_mask(case, rng) if case.mask != "none" else None]
    if case.past_len is not None:
        arrays += [random(rng, case.shape("past_key"), case.dtype, 2.0),
                   random(rng, case.shape("past_value"), case.dtype)]
    else:
        arrays += [None, None]
    arrays.append(np.array(case.nonpad, np.int64) if case.nonpad is not None else None)
    return arrays[:len(case.node().inputs)]


def make_mask(case: Case, rng: np.random.Generator) -> np.ndarray:
    shape = case.mask_shape
    if case.mask == "bool":
        mask = rng.uniform(0.0, 1.0, shape) < 0.7
        if case.dead_rows:
            mask[..., DEAD_ROW, :] = False
        return mask
    dtype = storage(case.mask_storage)
    if case.mask == "padding":
        kept = shape[-1] - 23 * (np.arange(shape[0]) + 1)
        keep = np.arange(shape[-1]) < kept.reshape(-1, *(1,) * (len(shape) - 1))
        return np.where(keep, 0.0, ml_dtypes.finfo(dtype).min).astype(dtype)
    mask = rng.uniform(-2.0, 2.0, shape)
    mask[rng.uniform(0.0, 1.0, shape) < 0.1] = -np.inf
    if case.dead_rows:
        mask[..., DEAD_ROW, :] = -np.inf
    return mask.astype(dtype)


def reference(case: Case, arrays: list[np.ndarray | None]) -> np.ndarray:
    """The reference backend's Y in float64 on the stored values."""
    return reference_outputs(case, arrays)[0]


def reference_outputs(case: Case, arrays: list[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    """The reference backend's Attention outputs in float64 on the stored values."""
    wide = [a if a is None or a.dtype in (np.bool_, np.int64) else a.astype(np.float64) for a in arrays]
    outputs = find_kernel("Attention", "")(case.node(), OPSET, lambda *a: []).run(*wide)
    return outputs if isinstance(outputs, tuple) else (outputs,)


def run_program(functions, program, arrays: list[np.ndarray | None], unaligned: bool = False) -> list:
    """``program``'s launches in order on the node's inputs ``arrays`` (each one element past an
    aligned address where ``unaligned``), into outputs and scratch of NaN bytes; its outputs as
    stored (None where the node has none)."""
    import cupy

    def place(array: np.ndarray):
        flat = to_device(array).ravel()
        if not unaligned:
            return flat
        buffer = cupy.empty(flat.size + 1, flat.dtype)
        buffer[1:] = flat
        return buffer[1:]

    inputs = [None if a is None else place(a) for a in arrays]
    outputs = [None if f is None else cupy.full(int(f.nbytes), 0xFF, cupy.uint8) for f in program.outputs]
    scratch = {name: cupy.full(int(n), 0xFF, cupy.uint8) for name, n in program.scratch.items()}
    held = {BufferRole.IN: inputs, BufferRole.OUT: outputs, BufferRole.SCRATCH: scratch}
    for step in program.steps:
        assert isinstance(step, Launch), step
        args = tuple(np.uint64(held[r.role][r.key].data.ptr + r.offset) for r in step.args)
        functions[step.kernel](step.grid, step.block, args + tuple(np.int32(d) for d in step.dims))
    cupy.cuda.get_current_stream().synchronize()
    return [None if out is None else out.get().view(storage(f.dtype)).reshape(f.shape)
            for out, f in zip(outputs, program.outputs)]


def compare_outputs(case: Case, label: str, got: list, want: tuple[np.ndarray, ...]) -> None:
    """Y, present_key and present_value (bit-exact), qk_matmul_output, as the node has them."""
    what = f"{case.id} [{label}]"
    compare(case, got[0], want[0], what)
    for i in (1, 2):
        if i < len(got) and got[i] is not None:
            assert np.array_equal(got[i].astype(np.float64), want[i]), f"{what}: present output {i} differs"
    if case.qk_mode is not None:
        compare_scores(case, got[3], want[3], what)


def compare_scores(case: Case, got: np.ndarray, want: np.ndarray, what: str) -> None:
    wide = got.astype(np.float64)
    assert wide.shape == want.shape and not np.isnan(wide).any(), f"{what}: qk_matmul_output not all written"
    infinite = np.isinf(want)
    assert np.array_equal(np.isinf(wide), infinite) and (wide[infinite] == want[infinite]).all(), \
        f"{what}: qk_matmul_output's infinities are not the reference's"
    if case.qk_mode == 3:
        dead = (want == 0).all(axis=-1)
        assert (wide[dead] == 0).all(), f"{what}: a row without allowed keys is not zero"
    check_close(wide[~infinite], want[~infinite], TOLERANCE[case.dtype], what, "qk_matmul_output")


def launch(function, kernel: KernelSource, args: list, arrays: list[np.ndarray], place=None) -> np.ndarray:
    """Launches ``kernel`` on device ``args`` into a NaN-poisoned Y (made by ``place`` from the
    host array, default a fresh buffer) and returns Y as stored."""
    import cupy

    assert all(kernel.launch.grid), kernel.launch
    y_arg = kernel.outputs[0]
    dtype = storage(y_arg.dtype)
    if dtype.itemsize == 2:
        poison = np.full(y_arg.shape, NAN_BITS[y_arg.dtype], np.uint16).view(dtype)
    else:
        poison = np.full(y_arg.shape, np.nan, dtype)
    y = (place or to_device)(poison)
    function(kernel.launch.grid, kernel.launch.block, (*args, y))
    cupy.cuda.get_current_stream().synchronize()
    out = y.get()
    return out.view(dtype) if dtype.itemsize == 2 else out


def compare(case: Case, got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    what = what or case.id
    assert got.shape == want.shape and not np.isnan(got.astype(np.float64)).any(), f"{what}: Y not all written"
    dead = want == 0  # only a row with no allowed key gives an exact zero from random V
    if case.dead_rows:
        assert dead.any(), f"{what}: the mask should leave a row without keys"
    assert (got.astype(np.float64)[dead] == 0).all(), f"{what}: a row without allowed keys is not zero"
    check_close(got, want, TOLERANCE[case.dtype], what, "Y")
