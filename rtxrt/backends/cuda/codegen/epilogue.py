"""Fused epilogues for generated kernels (GEMM, conv): the activations of
rtxrt/ir/activations.py as fp32 CUDA functions, the statements that apply alpha, bias,
activation and residual to an accumulator, matching the reference backend's epilogue, and
``epilogue_kernel``, the same epilogue as a kernel of its own for a GEMM that cuBLAS computed."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ....ir.activations import get_activation
from ....ir.dtypes import DType
from . import CodegenError
from . import ctypes_map as C
from .activation_c import activation_c
from .device_helpers import NAN_MAX_MIN
from .dynamic import c_int, is_dynamic
from .kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
)
from ..plan.program import BufferRole

if TYPE_CHECKING:  # gemm imports this module
    from ..ops.gemm_source import GemmProblem

F32 = DType.FLOAT32

# Activations built on libm functions are called rather than inlined: inlined at each of the
# up to 256 outputs a thread writes, they would multiply the code (and NVRTC's time) by 3.
CALLED_ACTIVATIONS = frozenset({"sigmoid", "tanh", "silu", "gelu", "gelu_tanh"})


def _activation_expr(name: str, params: dict[str, float]) -> str:
    """The body of ``float rtx_act(float x)``: activation ``name`` with ``params`` (by name,
    all of them) in fp32, as the reference's epilogue computes it. CodegenError for an
    unknown activation."""
    try:
        activation = get_activation(name)
    except ValueError as exc:
        raise CodegenError(f"no fused activation: {exc}") from None
    return activation_c(activation, "x", F32, params)


def activation_functions(activation: str, params: dict, *, one_output_per_thread: bool = False) -> str:
    """The device functions an epilogue calls: NaN-propagating ``rtx_max`` / ``rtx_min`` (as
    numpy's maximum / minimum) and ``float rtx_act(float x)``. A kernel writing one output
    per thread inlines every activation: a call there costs more than the code it saves."""
    called = activation in CALLED_ACTIVATIONS and not one_output_per_thread
    inline = "__noinline__" if called else "__forceinline__"
    return (NAN_MAX_MIN +
            f"__device__ {inline} float rtx_act(float x) {{ return {_activation_expr(activation, params)}; }}\n")


def epilogue_statements(p: GemmProblem, z: str, *, bias: str = "bias[col]", alpha: bool = True) -> list[str]:
    """C statements taking the fp32 accumulator ``x`` to ``p``'s result: times alpha (unless
    ``alpha`` is false: already applied), plus ``bias`` (the bias element), then the
    activation with the residual ``z`` (the element of Z) added before or after it."""
    statements = []
    if alpha and p.alpha != 1.0:
        statements.append(f"x *= {C.literal(p.alpha, F32)};")
    if p.bias:
        statements.append(f"x += {C.load(bias, p.out_dtype)};")
    if p.residual == "before_activation":
        statements.append(f"x += {C.load(z, p.out_dtype)};")
    statements.append("x = rtx_act(x);")
    if p.residual == "after_activation":
        statements.append(f"x += {C.load(z, p.out_dtype)};")
    return statements


def has_epilogue(p: GemmProblem) -> bool:
    """Whether anything follows ``alpha * A @ B``: a bias, an activation or a residual."""
    return p.bias or p.activation != "none" or p.has_z


def epilogue_kernel(p: GemmProblem) -> KernelSource:
    """``p``'s epilogue in place on D, for a GEMM computed elsewhere (cuBLAS) that wrote
    ``alpha * A @ B`` into D (``p.out_dtype``, rows ``p.ldd`` and batches ``p.stride_d``
    apart): D = activation(D + bias [+ Z]) [+ Z], computed in fp32, rounded to D's type. A 1-D
    grid-stride kernel over ``batch x M x N``; its arguments are [bias] (input 2), [Z]
    (input 3, may be D itself) and D (output 0). CodegenError for a problem with nothing to
    apply."""
    if not has_epilogue(p):
        raise CodegenError(f"GEMM {p.describe()} has no epilogue to apply after the product")
    if p.batch_bias:  # bias[col] below is one vector for every batch
        raise CodegenError(f"GEMM {p.describe()}: the epilogue kernel takes one bias for every batch")
    out_c = C.storage_type(p.out_dtype)
    total = p.batch * p.m * p.n
    index, suffix = index_type(total)
    params, args = [], []
    lead = (p.batch,) if is_dynamic(p.batch) or p.batch != 1 else ()
    if p.bias:
        params.append(f"const {out_c}* __restrict__ bias")
        args.append(KernelArg("bias", BufferRole.IN, 2, p.out_dtype, (p.n,)))
    if p.has_z:
        params.append(f"const {out_c}* Z")  # may alias D: each element is read before it is written
        z_lead = lead if is_dynamic(p.stride_z) or p.stride_z != 0 else ()
        args.append(KernelArg("Z", BufferRole.IN, 3, p.out_dtype, (*z_lead, p.m, p.n)))
    params.append(f"{out_c}* D")
    args.append(KernelArg("D", BufferRole.OUT, 0, p.out_dtype, (*lead, p.m, p.n)))
    describe = p.describe()
    if is_dynamic(p.batch) and not describe.startswith(f"{p.batch}x"):  # the same text where the batch is 1
        describe = f"{p.batch}x{describe}"
    strides = f"LDZ = {p.ldz}, LDD = {p.ldd}, SZ = {p.stride_z}, SD = {p.stride_d};"
    dynamic_strides = any(is_dynamic(v) for v in (p.ldz, p.ldd, p.stride_z, p.stride_d))
    head = [f"// rtxrt GEMM epilogue after cuBLAS: {describe}", C.PRELUDE.strip(),
            *([] if dynamic_strides else [f"constexpr long long {strides}"]),
            activation_functions(p.activation, p.params, one_output_per_thread=True)]
    # no division by zero where there is nothing to do (a dim's zero divides in no thread)
    mn = p.m * p.n if is_dynamic(p.m * p.n) else max(p.m * p.n, 1)
    n = p.n if is_dynamic(p.n) else max(p.n, 1)
    if is_dynamic(mn) and not is_dynamic(p.batch) and p.batch == 1:  # no division by a dim where b is 0
        split = f"const {index} b = 0, r = i;"
    else:
        split = f"const {index} b = i / {c_int(mn, suffix)}, r = i - b * {c_int(mn, suffix)};"
    body = [split,
            f"const {index} row = r / {c_int(n, suffix)}, col = r - row * {c_int(n, suffix)};",
            "const long long o = (long long)b * SD + (long long)row * LDD + col;",
            f"float x = {C.load('D[o]', p.out_dtype)};",
            *epilogue_statements(p, "Z[(long long)b * SZ + (long long)row * LDZ + col]", alpha=False),
            f"D[o] = {C.store('x', p.out_dtype)};"]
    source = loop_kernel(head, params, grid_stride_loop(index, suffix, total), body,
                         before_loop=[f"  const long long {strides}"] if dynamic_strides else ())
    return KernelSource.named("rtx_gemm_epilogue_", source, LaunchPolicy(total), args)
