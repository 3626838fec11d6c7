"""Unary elementwise math: Abs, Neg, Exp, Log, Sqrt, Reciprocal, Floor, Ceil, Round, Sign,
the trigonometric and hyperbolic functions, Erf, IsNaN, IsInf, Not, BitwiseNot."""
from __future__ import annotations

import numpy as np

from ..kernel import OpRun
from .reduce import widened


class _Unary(OpRun):
    """``y = compute(x)``. Narrow floats (float16, bfloat16, float8) are computed in float32
    and rounded once; the result has x's dtype unless ``result_dtype`` says otherwise."""

    result_dtype: np.dtype | None = None

    def compute(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):  # NaN and inf are results here, not errors
            y = self.compute(widened(x))
        return np.asarray(y).astype(x.dtype if self.result_dtype is None else self.result_dtype, copy=False)


# Cephes' rational approximations of erf on |x| <= 1 and of erfc beyond (Moshier, public
# domain); highest degree first, as np.polyval wants them.
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function in float64, to about 1e-16 (numpy has none)."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    near = np.abs(x) <= 1.0
    xn = x[near]
    out[near] = xn * np.polyval(_ERF_T, xn * xn) / np.polyval(_ERF_U, xn * xn)
    far = ~near  # 1 - erfc(|x|), with the sign of x
    xf = x[far]
    a = np.minimum(np.abs(xf), 30.0)  # erfc(30) underflows; keeps the polynomials finite
    tail = a >= 8.0
    p = np.where(tail, np.polyval(_ERFC_R, a), np.polyval(_ERFC_P, a))
    q = np.where(tail, np.polyval(_ERFC_S, a), np.polyval(_ERFC_Q, a))
    out[far] = np.copysign(1.0 - np.exp(-a * a) * p / q, xf)
    return out


class Abs(_Unary):
    compute = staticmethod(np.abs)


class Neg(_Unary):
    compute = staticmethod(np.negative)


class Exp(_Unary):
    compute = staticmethod(np.exp)


class Log(_Unary):
    compute = staticmethod(np.log)


class Sqrt(_Unary):
    compute = staticmethod(np.sqrt)


class Reciprocal(_Unary):
    compute = staticmethod(np.reciprocal)


class Floor(_Unary):
    compute = staticmethod(np.floor)


class Ceil(_Unary):
    compute = staticmethod(np.ceil)


class Round(_Unary):
    compute = staticmethod(np.rint)  # halves go to the even neighbour


class Sign(_Unary):
    compute = staticmethod(np.sign)


class Sin(_Unary):
    compute = staticmethod(np.sin)


class Cos(_Unary):
    compute = staticmethod(np.cos)


class Tan(_Unary):
    compute = staticmethod(np.tan)


class Asin(_Unary):
    compute = staticmethod(np.arcsin)


class Acos(_Unary):
    compute = staticmethod(np.arccos)


class Atan(_Unary):
    compute = staticmethod(np.arctan)


class Sinh(_Unary):
    compute = staticmethod(np.sinh)


class Cosh(_Unary):
    compute = staticmethod(np.cosh)


class Asinh(_Unary):
    compute = staticmethod(np.arcsinh)


class Acosh(_Unary):
    compute = staticmethod(np.arccosh)


class Atanh(_Unary):
    compute = staticmethod(np.arctanh)


class Erf(_Unary):
    compute = staticmethod(erf)


class IsNaN(_Unary):
    result_dtype = np.dtype(np.bool_)
    compute = staticmethod(np.isnan)


class IsInf(_Unary):
    result_dtype = np.dtype(np.bool_)

    def compute(self, x: np.ndarray) -> np.ndarray:
        negative = bool(self.attr("detect_negative", 1))
        positive = bool(self.attr("detect_positive", 1))
        return np.isinf(x) & ((x < 0) & negative | (x > 0) & positive)


class Not(_Unary):
    compute = staticmethod(np.logical_not)


class BitwiseNot(_Unary):
    compute = staticmethod(np.invert)
