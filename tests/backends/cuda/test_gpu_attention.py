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
"""
from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many

from .helpers import check_close, random, storage, to_device
from .test_attention_codegen import CASES, TACTIC_CASES, Case

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

def make_inputs(case: Case) -> list[np.ndarray]:
    """Q, K, V (and the mask) as stored."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    arrays = [random(rng, case.shape("Q"), case.dtype, 2.0), random(rng, case.shape("K"), case.dtype, 2.0),
              random(rng, case.shape("V"), case.dtype)]
    if case.mask != "none":
        arrays.append(make_mask(case, rng))
    return arrays


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


def reference(case: Case, arrays: list[np.ndarray]) -> np.ndarray:
    """The reference backend's Attention in float64 on the stored values."""
    wide = [a if a.dtype == np.bool_ else a.astype(np.float64) for a in arrays]
    y = find_kernel("Attention", "")(case.node(), 23, lambda *a: []).run(*wide)
    return y[0] if isinstance(y, tuple) else y


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


def compare(case: Case, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and not np.isnan(got.astype(np.float64)).any(), f"{case.id}: Y not all written"
    dead = want == 0  # only a row with no allowed key gives an exact zero from random V
    if case.dead_rows:
        assert dead.any(), f"{case.id}: the mask should leave a row without keys"
    assert (got.astype(np.float64)[dead] == 0).all(), f"{case.id}: a row without allowed keys is not zero"
    check_close(got, want, TOLERANCE[case.dtype], case.id, "Y")
