"""Device functions that more than one kind of generated kernel calls, each written once here
and included by the kernels that need it."""
from __future__ import annotations

# max / min propagating NaN as numpy's maximum / minimum do (fmaxf / fminf drop it).
NAN_MAX_MIN = (
    "template <typename T> __device__ __forceinline__ T rtx_max(T a, T b) { return (a >= b || a != a) ? a : b; }\n"
    "template <typename T> __device__ __forceinline__ T rtx_min(T a, T b) { return (a <= b || a != a) ? a : b; }\n"
)
