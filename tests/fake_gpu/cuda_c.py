"""A vectorized interpreter for the C++ subset of rtxrt's simple generated kernels.

It parses a kernel's CUDA source (file-scope ``constexpr`` / ``typedef`` / device functions,
templates such as ``rtx_max<T>``, ``#if __CUDA_ARCH__`` and one-instruction ``asm`` ``cvt``
conversions) and runs a launch of a grid-stride kernel on the fake device's memory, all loop
iterations at once: every iteration of ``for (i = blockIdx.x * blockDim.x + threadIdx.x; i <
N; i += gridDim.x * blockDim.x)`` is one numpy lane. Control flow inside (if, loops, return,
continue, ternaries, ``&&``) is masked per lane, as a GPU's SIMT execution masks threads, so
a branch not taken never reads memory.

C semantics are kept where results depend on them: C types as numpy dtypes, the usual
arithmetic conversions and integer promotions, wrapping unsigned arithmetic, truncating
integer division, float to int conversion as the GPU does it (truncating, saturating, NaN to
0), float32 arithmetic in float32, libm calls correctly rounded (computed in float64), and
``cvt`` with round-to-nearest-even.

What it does not cover (shared memory, ``__syncthreads``, warp intrinsics, non-grid-stride
kernels such as the tiled GEMMs) raises NotInterpretable. What a real GPU or compiler would
reject raises an AssertionError subclass: CompileError (a type a template cannot deduce, a
write through a const pointer, an undeclared name) or DeviceFault (see memory.py: out of
bounds, misaligned, uninitialized reads, lanes writing different values to one element).
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np


class NotInterpretable(Exception):
    """The kernel uses C++ or CUDA this interpreter does not model; check its bindings only."""


class CompileError(AssertionError):
    """Source that NVRTC would reject (the interpreter's stand-in for a compile failure)."""


class DeviceFault(AssertionError):
    """What a GPU would fault on, or a result that depends on thread scheduling."""


# ---------------------------------------------------------------------------------- types

B, I8, U8, I16, U16 = (np.dtype(t) for t in (np.bool_, np.int8, np.uint8, np.int16, np.uint16))
I32, U32, I64, U64 = (np.dtype(t) for t in (np.int32, np.uint32, np.int64, np.uint64))
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
BF16 = np.dtype(ml_dtypes.bfloat16)
V16 = np.dtype("V16")  # uint4: 16 opaque bytes, only copied
VOID = None

_SCALARS = {
    "bool": B, "char": I8, "signed char": I8, "unsigned char": U8,
    "short": I16, "short int": I16, "signed short": I16, "unsigned short": U16, "unsigned short int": U16,
    "int": I32, "signed": I32, "signed int": I32, "unsigned": U32, "unsigned int": U32,
    "long": I64, "long int": I64, "unsigned long": U64, "long long": I64, "long long int": I64,
    "signed long long": I64, "unsigned long long": U64, "unsigned long long int": U64, "size_t": U64,
    "float": F32, "double": F64, "uint4": V16, "void": VOID,
}
_TYPE_WORDS = frozenset(w for name in _SCALARS for w in name.split()) | {"const", "volatile", "__restrict__"}
_QUALIFIERS = frozenset({"const", "volatile", "__restrict__", "constexpr", "static", "inline", "__device__",
                         "__host__", "__forceinline__", "__noinline__", "__global__", "register", "__constant__"})
_UNSUPPORTED = frozenset({"__shared__", "__syncthreads", "__syncwarp", "wmma", "__ldg"})


@dataclass(frozen=True)
class PtrType:
    elem: Any  # np.dtype, TParam or PtrType
    const: bool = False  # the pointee is const


@dataclass(frozen=True)
class TParam:
    name: str


def _signed(dt: np.dtype) -> bool:
    return dt.kind == "i"


def _promote(dt: np.dtype) -> np.dtype:
    """C's integer promotions: bool, char and short compute as int."""
    if dt.kind == "b" or (dt.kind in "iu" and dt.itemsize < 4):
        return I32
    return dt


def arithmetic_type(a: np.dtype, b: np.dtype) -> np.dtype:
    """C's usual arithmetic conversions."""
    if V16 in (a, b):
        raise CompileError("arithmetic on uint4")
    if F64 in (a, b):
        return F64
    if F32 in (a, b):
        return F32
    a, b = _promote(a), _promote(b)
    if a == b:
        return a
    if _signed(a) == _signed(b):
        return a if a.itemsize >= b.itemsize else b
    u, s = (a, b) if _signed(b) else (b, a)
    if u.itemsize >= s.itemsize:
        return u
    return s  # a wider signed type holds every value of the unsigned one


def convert(value: Any, to: Any) -> Any:
    """``value`` converted to C type ``to`` (a cast, or an implicit conversion)."""
    if isinstance(to, PtrType):
        if isinstance(value, Pointer):
            return Pointer(to.elem, to.const, value.addr)
        raise CompileError(f"cannot convert a {value.dtype} value to a pointer")
    if isinstance(value, Pointer):
        if to == B:
            return value.addr != 0
        raise CompileError("cannot convert a pointer to an arithmetic type")
    src = value.dtype
    if src == to:
        return value
    if to == B:
        return np.asarray(value != 0)
    if V16 in (src, to):
        raise CompileError(f"cannot convert {src} to {to}")
    if src.kind == "f" and to.kind in "iu":  # as cvt.rzi.sat does: truncate, saturate, NaN -> 0
        info = np.iinfo(to)
        v = np.trunc(np.asarray(value, F64))
        high, low = v >= float(info.max), v <= float(info.min)  # (float(max) may round up)
        out = np.where(np.isnan(v) | high | low, 0.0, v).astype(to)
        return np.asarray(np.where(high, to.type(info.max), np.where(low, to.type(info.min), out)).astype(to))
    return np.asarray(value).astype(to)


@dataclass
class Pointer:
    """A pointer value: its pointee type and its address (per lane, or one for all)."""

    elem: Any
    const: bool
    addr: Any  # np.int64 array or 0-d

    @property
    def ctype(self) -> PtrType:
        return PtrType(self.elem, self.const)


def ctype_of(value: Any) -> Any:
    return value.ctype if isinstance(value, Pointer) else value.dtype


def _zeros(t: Any, lanes: int) -> Any:
    if isinstance(t, PtrType):
        return Pointer(t.elem, t.const, np.zeros(lanes, I64))
    return np.zeros(lanes, t)


# --------------------------------------------------------------------- preprocess and lex

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>0[xX][0-9a-fA-F]*\.?[0-9a-fA-F]*[pP][+-]?\d+[fFlL]?
          | 0[xX][0-9a-fA-F]+[uUlL]*
          | (?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fFuUlL]*)
  | (?P<id>[A-Za-z_]\w*)
  | (?P<str>"(?:\\.|[^"\\])*")
  | (?P<op><<=|>>=|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||::|[-+*/%&|^]=|[-+*/%&|^!~<>=?:;,.(){}\[\]])
""", re.X)


def preprocess(source: str, arch: int) -> str:
    """Comments removed, ``#pragma`` dropped and ``#if __CUDA_ARCH__ <op> N`` resolved for
    ``arch`` (e.g. 860); any other directive is NotInterpretable."""
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    out, stack = [], []  # stack of [taking, taken]
    for line in source.split("\n"):
        line = re.sub(r"//.*", "", line)
        text = line.strip()
        if text.startswith("#"):
            directive = text[1:].strip()
            if directive.startswith("pragma"):
                out.append("")
                continue
            match = re.fullmatch(r"if\s+__CUDA_ARCH__\s*(>=|<=|==|!=|<|>)\s*(\d+)", directive)
            if match:
                ok = eval(f"{arch} {match[1]} {int(match[2])}")  # noqa: S307 (two integers)
                stack.append([ok, ok])
            elif directive == "else" and stack:
                stack[-1][0] = not stack[-1][1]
            elif directive == "endif" and stack:
                stack.pop()
            else:
                raise NotInterpretable(f"preprocessor directive {text!r}")
            out.append("")
            continue
        out.append(line if all(taking for taking, _ in stack) else "")
    return "\n".join(out)


def tokenize(source: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise NotInterpretable(f"unexpected character {source[pos]!r} in {source[max(0, pos - 30):pos + 30]!r}")
        pos = match.end()
        if match.lastgroup != "ws":
            tokens.append((match.lastgroup, match.group()))
    tokens.append(("eof", ""))
    return tokens


def literal(text: str) -> np.ndarray:
    """A C numeric literal as a 0-d array of its C type."""
    lower = text.lower()
    if lower.startswith("0x") and "p" in lower:
        single = lower.endswith("f")
        value = float.fromhex(lower.rstrip("fl"))
        return np.asarray(value, F32 if single else F64)
    if not lower.startswith("0x") and ("." in lower or "e" in lower):
        single = lower.endswith("f")
        digits = lower.rstrip("fl")
        return np.asarray(np.float32(digits) if single else float(digits), F32 if single else F64)
    digits = lower.rstrip("ul")
    suffix = lower[len(digits):]
    unsigned, longs = "u" in suffix, suffix.count("l")
    hexadecimal, octal = digits.startswith("0x"), digits.startswith("0") and len(digits) > 1
    value = int(digits, 16 if hexadecimal else 8 if octal else 10)
    decimal = not hexadecimal and not octal
    candidates = [I32, U32, I64, U64]
    if unsigned:
        candidates = [U32, U64]
    elif decimal:
        candidates = [I32, I64]
    if longs:
        candidates = [c for c in candidates if c.itemsize == 8]
    for dt in candidates:
        if np.iinfo(dt).min <= value <= np.iinfo(dt).max:
            return np.asarray(value, dt)
    raise CompileError(f"integer literal {text} is too large")


# --------------------------------------------------------------------------------- the AST

@dataclass
class Num:
    value: np.ndarray


@dataclass
class Name:
    id: str


@dataclass
class Unary:
    op: str
    e: Any


@dataclass
class Binary:
    op: str
    a: Any
    b: Any


@dataclass
class Ternary:
    c: Any
    a: Any
    b: Any


@dataclass
class Cast:
    type: Any
    e: Any


@dataclass
class Call:
    name: str
    targs: tuple
    args: list


@dataclass
class Index:
    base: Any
    index: Any


@dataclass
class Deref:
    e: Any


@dataclass
class Member:
    e: Any
    name: str


@dataclass
class Assign:
    op: str
    target: Any
    value: Any


@dataclass
class IncDec:
    op: str
    target: Any
    prefix: bool


@dataclass
class Block:
    body: list


@dataclass
class Decl:
    type: Any
    items: list  # (name, init or None)


@dataclass
class ArrayDecl:
    """A constant array with an initializer list (a lookup table)."""

    type: Any
    name: str
    size: Any
    items: list


@dataclass
class ArrayValue:
    """A constant array's values (read only)."""

    values: np.ndarray
    name: str


@dataclass
class ExprStmt:
    e: Any


@dataclass
class If:
    c: Any
    then: Any
    other: Any


@dataclass
class Loop:
    init: Any
    cond: Any
    step: Any
    body: Any
    do_while: bool = False


@dataclass
class Return:
    e: Any


@dataclass
class Jump:
    kind: str  # "break" or "continue"


@dataclass
class Asm:
    template: str
    outputs: list  # (constraint, lvalue)
    inputs: list  # (constraint, expr)


@dataclass
class Function:
    name: str
    ret: Any
    params: list  # (type, name)
    body: Block
    tparams: tuple[str, ...] = ()
    is_kernel: bool = False
    launch_bounds: int | None = None

    @property
    def simple_return(self) -> Any:
        """The expression of a body that is one return statement (called without masks)."""
        body = self.body.body
        return body[0].e if len(body) == 1 and isinstance(body[0], Return) else None


@dataclass
class Program:
    functions: dict[str, list[Function]] = field(default_factory=dict)
    globals: list[Decl] = field(default_factory=list)


# -------------------------------------------------------------------------------- the parser

_LEVELS = [["||"], ["&&"], ["|"], ["^"], ["&"], ["==", "!="], ["<", ">", "<=", ">="], ["<<", ">>"], ["+", "-"],
           ["*", "/", "%"]]
_ASSIGN = {"=", "+=", "-=", "*=", "/=", "%=", "<<=", ">>=", "&=", "|=", "^="}


class Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens, self.pos = tokens, 0
        self.typedefs: dict[str, Any] = {}
        self.tparams: set[str] = set()
        self.templates: set[str] = set()

    # --- tokens
    def peek(self, ahead: int = 0) -> str:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)][1]

    def kind(self, ahead: int = 0) -> str:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)][0]

    def next(self) -> str:
        text = self.tokens[self.pos][1]
        self.pos += 1
        return text

    def expect(self, text: str) -> None:
        if self.peek() != text:
            context = " ".join(t for _, t in self.tokens[max(0, self.pos - 8):self.pos + 8])
            raise NotInterpretable(f"expected {text!r}, found {self.peek()!r} near: {context}")
        self.pos += 1

    def ident(self) -> str:
        if self.kind() != "id":
            raise NotInterpretable(f"expected a name, found {self.peek()!r}")
        return self.next()

    # --- types
    def is_type_start(self, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return (tok in _TYPE_WORDS or tok in self.typedefs or tok in self.tparams) and self.kind(ahead) == "id"

    def parse_type(self) -> Any:
        words, base, const = [], None, False
        while True:
            tok = self.peek()
            if tok in _QUALIFIERS:
                const |= tok == "const"
                self.next()
            elif tok in _TYPE_WORDS and tok not in ("const", "volatile", "__restrict__"):
                words.append(self.next())
            elif not words and base is None and tok in self.typedefs:
                base = self.typedefs[self.next()]
            elif not words and base is None and tok in self.tparams:
                base = TParam(self.next())
            else:
                break
        if words:
            key = " ".join(words)
            if key not in _SCALARS:
                raise NotInterpretable(f"type {key!r}")
            base = _SCALARS[key]
        elif base is None:
            raise NotInterpretable(f"expected a type, found {self.peek()!r}")
        while self.peek() in ("*", "const", "__restrict__", "volatile"):
            if self.next() == "*":
                base, const = PtrType(base, const), False
        return base

    # --- file scope
    def program(self) -> Program:
        program = Program()
        while self.kind() != "eof":
            tok = self.peek()
            if tok == ";":
                self.next()
            elif tok == "template":
                self.next()
                self.expect("<")
                names = []
                while self.peek() != ">":
                    if self.next() not in ("typename", "class"):
                        raise NotInterpretable("non-type template parameters")
                    names.append(self.ident())
                    if self.peek() == ",":
                        self.next()
                self.next()
                self.tparams = set(names)
                fn = self.declaration(program)
                if not isinstance(fn, Function):
                    raise NotInterpretable("a template that is not a function")
                fn.tparams = tuple(names)
                self.tparams = set()
            elif tok == "typedef":
                self.next()
                t = self.parse_type()
                self.typedefs[self.ident()] = t
                self.expect(";")
            else:
                self.declaration(program)
        return program

    def declaration(self, program: Program) -> Function | Decl | None:
        is_kernel, bounds = False, None
        while True:
            tok = self.peek()
            if tok == "extern":
                self.next()
                if self.kind() == "str":
                    self.next()
            elif tok == "__global__":
                is_kernel = True
                self.next()
            elif tok in ("struct", "union", "class", "namespace", "using", "static_assert", "enum") \
                    or tok in _UNSUPPORTED:
                raise NotInterpretable(f"file-scope {tok!r}")
            elif tok in _QUALIFIERS and tok != "const":
                self.next()
            else:
                break
        t = self.parse_type()
        if self.peek() == "__launch_bounds__":
            self.next()
            self.expect("(")
            bounds = int(literal(self.next()))
            while self.next() != ")":
                pass
        name = self.ident()
        if self.peek() == "(":
            self.next()
            params = []
            if self.peek() == "void" and self.peek(1) == ")":
                self.next()
            while self.peek() != ")":
                pt = self.parse_type()
                params.append((pt, self.ident()))
                if self.peek() == ",":
                    self.next()
            self.next()
            if self.tparams:
                self.templates.add(name)
            if self.peek() == ";":  # a prototype
                self.next()
                return None
            fn = Function(name, t, params, self.block(), is_kernel=is_kernel, launch_bounds=bounds)
            program.functions.setdefault(name, []).append(fn)
            return fn
        decl = self.declarators(t, name)
        program.globals.append(decl)
        return decl

    def declarators(self, t: Any, first: str) -> Decl | ArrayDecl:
        items, name = [], first
        while True:
            if self.peek() == "[":  # only a constant table: T name[N] = {...};
                self.next()
                size = self.assignment()
                self.expect("]")
                self.expect("=")
                self.expect("{")
                values = []
                while self.peek() != "}":
                    values.append(self.assignment())
                    if self.peek() == ",":
                        self.next()
                self.next()
                self.expect(";")
                if items:
                    raise NotInterpretable("an array declared after other names")
                return ArrayDecl(t, name, size, values)
            init = None
            if self.peek() == "=":
                self.next()
                init = self.assignment()
            items.append((name, init))
            if self.peek() == ",":
                self.next()
                name = self.ident()
                continue
            self.expect(";")
            return Decl(t, items)

    # --- statements
    def block(self) -> Block:
        self.expect("{")
        body = []
        while self.peek() != "}":
            body.append(self.statement())
        self.next()
        return Block(body)

    def statement(self) -> Any:
        tok = self.peek()
        if tok in _UNSUPPORTED:
            raise NotInterpretable(f"{tok!r}")
        if tok == "{":
            return self.block()
        if tok == ";":
            self.next()
            return Block([])
        if tok == "if":
            self.next()
            self.expect("(")
            c = self.expression()
            self.expect(")")
            then = self.statement()
            other = None
            if self.peek() == "else":
                self.next()
                other = self.statement()
            return If(c, then, other)
        if tok == "while":
            self.next()
            self.expect("(")
            c = self.expression()
            self.expect(")")
            return Loop(None, c, None, self.statement())
        if tok == "do":
            self.next()
            body = self.statement()
            self.expect("while")
            self.expect("(")
            c = self.expression()
            self.expect(")")
            self.expect(";")
            return Loop(None, c, None, body, do_while=True)
        if tok == "for":
            self.next()
            self.expect("(")
            init = None
            if self.peek() != ";":
                init = self.decl_or_expr()
            else:
                self.next()
            c = self.expression() if self.peek() != ";" else None
            self.expect(";")
            step = self.expression() if self.peek() != ")" else None
            self.expect(")")
            return Loop(init, c, step, self.statement())
        if tok == "return":
            self.next()
            e = self.expression() if self.peek() != ";" else None
            self.expect(";")
            return Return(e)
        if tok in ("break", "continue"):
            self.next()
            self.expect(";")
            return Jump(tok)
        if tok in ("asm", "__asm__"):
            return self.asm()
        return self.decl_or_expr()

    def decl_or_expr(self) -> Any:
        if self.is_type_start() or self.peek() == "constexpr":
            t = self.parse_type()
            return self.declarators(t, self.ident())
        e = self.expression()
        self.expect(";")
        return ExprStmt(e)

    def asm(self) -> Asm:
        self.next()
        if self.peek() == "volatile":
            self.next()
        self.expect("(")
        template = ""
        while self.kind() == "str":
            template += self.next()[1:-1]
        sections: list[list] = [[], []]
        for part in range(2):
            if self.peek() != ":":
                break
            self.next()
            while self.kind() == "str":
                constraint = self.next()[1:-1]
                self.expect("(")
                sections[part].append((constraint, self.expression()))
                self.expect(")")
                if self.peek() == ",":
                    self.next()
        if self.peek() == ":":
            raise NotInterpretable("asm clobbers")
        self.expect(")")
        self.expect(";")
        return Asm(template, sections[0], sections[1])

    # --- expressions
    def expression(self) -> Any:
        e = self.assignment()
        if self.peek() == ",":
            raise NotInterpretable("the comma operator")
        return e

    def assignment(self) -> Any:
        lhs = self.ternary()
        if self.peek() in _ASSIGN:
            op = self.next()
            return Assign(op, lhs, self.assignment())
        return lhs

    def ternary(self) -> Any:
        c = self.binary(0)
        if self.peek() == "?":
            self.next()
            a = self.assignment()
            self.expect(":")
            return Ternary(c, a, self.assignment())
        return c

    def binary(self, level: int) -> Any:
        if level == len(_LEVELS):
            return self.unary()
        e = self.binary(level + 1)
        while self.peek() in _LEVELS[level] and self.kind() == "op":
            op = self.next()
            e = Binary(op, e, self.binary(level + 1))
        return e

    def unary(self) -> Any:
        tok = self.peek()
        if self.kind() == "op":
            if tok in ("-", "+", "!", "~"):
                self.next()
                return Unary(tok, self.unary())
            if tok == "*":
                self.next()
                return Deref(self.unary())
            if tok == "&":
                raise NotInterpretable("taking an address")
            if tok in ("++", "--"):
                self.next()
                return IncDec(tok, self.unary(), True)
            if tok == "(" and self.is_type_start(1):
                self.next()
                t = self.parse_type()
                self.expect(")")
                return Cast(t, self.unary())
        return self.postfix(self.primary())

    def postfix(self, e: Any) -> Any:
        while True:
            tok = self.peek()
            if tok == "[":
                self.next()
                index = self.expression()
                self.expect("]")
                e = Index(e, index)
            elif tok == "(":
                if not isinstance(e, Name):
                    raise NotInterpretable("calling something other than a function name")
                e = Call(e.id, (), self.call_args())
            elif tok == ".":
                self.next()
                e = Member(e, self.ident())
            elif tok == "->":
                raise NotInterpretable("'->'")
            elif tok in ("++", "--"):
                self.next()
                e = IncDec(tok, e, False)
            else:
                return e

    def call_args(self) -> list:
        self.expect("(")
        args = []
        while self.peek() != ")":
            args.append(self.assignment())
            if self.peek() == ",":
                self.next()
        self.next()
        return args

    def primary(self) -> Any:
        kind, tok = self.kind(), self.peek()
        if kind == "num":
            self.next()
            return Num(literal(tok))
        if kind == "id":
            self.next()
            if tok in ("true", "false"):
                return Num(np.asarray(tok == "true"))
            if tok in ("reinterpret_cast", "static_cast"):
                self.expect("<")
                t = self.parse_type()
                self.expect(">")
                self.expect("(")
                e = self.expression()
                self.expect(")")
                return Cast(t, e)
            if tok in ("sizeof", "const_cast", "dynamic_cast", "__ldg", "__shfl_sync", "__syncthreads"):
                raise NotInterpretable(f"{tok!r}")
            if tok in self.templates and self.peek() == "<":
                self.next()
                targs = []
                while self.peek() != ">":
                    targs.append(self.parse_type())
                    if self.peek() == ",":
                        self.next()
                self.next()
                return Call(tok, tuple(targs), self.call_args())
            return Name(tok)
        if tok == "(":
            self.next()
            e = self.expression()
            self.expect(")")
            return e
        raise NotInterpretable(f"unexpected {tok!r}")


@functools.lru_cache(maxsize=512)
def parse(source: str, arch: int = 860) -> Program:
    """The program of ``source`` (``arch``: the ``__CUDA_ARCH__`` it is compiled for);
    NotInterpretable where it leaves this subset."""
    tokens = tokenize(preprocess(source, arch))
    for kind, text in tokens:
        if (kind == "id" and (text in _UNSUPPORTED or text.startswith(("__shfl", "atomic", "__ballot")))) \
                or (kind == "str" and any(w in text for w in ("mma", "ldmatrix", "cp.async", "ld.shared"))):
            raise NotInterpretable(f"the kernel uses {text!r}")
    return Parser(tokens).program()


# ------------------------------------------------------------------------------ the machine

class Var:
    __slots__ = ("type", "value")

    def __init__(self, t: Any, value: Any):
        self.type, self.value = t, value


class _LoopState:
    __slots__ = ("continued",)

    def __init__(self, lanes: int):
        self.continued = np.zeros(lanes, bool)


class Frame:
    """One function activation over ``lanes`` lanes: its scopes, the active lanes, and what
    its return statements gave."""

    def __init__(self, lanes: int, active: np.ndarray, scopes: list[dict], tmap: dict | None = None,
                 ret_type: Any = VOID):
        self.lanes, self.scopes, self.tmap = lanes, scopes, tmap or {}
        self.active, self.full = active, bool(active.all())
        self.ret_type, self.ret = ret_type, None
        self.returned = np.zeros(lanes, bool)
        self.loops: list[_LoopState] = []
        self.grid_level = False  # the body of the grid-stride loop: lane = iteration

    def set_active(self, mask: np.ndarray) -> None:
        self.active = mask
        self.full = bool(mask.all())

    def lookup(self, name: str) -> Var | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None


class Memory:
    """What the interpreter needs from device memory (memory.FakeMemory implements it)."""

    def load(self, addr: np.ndarray, dtype: np.dtype, mask: np.ndarray | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def store(self, addr: np.ndarray, dtype: np.dtype, values: np.ndarray, mask: np.ndarray | None) -> None:  # pragma: no cover
        raise NotImplementedError


_THREAD_NAMES = frozenset({"threadIdx", "blockIdx", "blockDim", "gridDim", "warpSize", "laneid"})


def _names(node: Any) -> set[str]:
    """Every identifier in an AST subtree."""
    found: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Name):
            found.add(n.id)
        elif isinstance(n, Call):
            found.add(n.name)
            stack.extend(n.args)
        elif isinstance(n, (list, tuple)):
            stack.extend(n)
        elif hasattr(n, "__dataclass_fields__") and not isinstance(n, Num):
            stack.extend(getattr(n, f) for f in n.__dataclass_fields__)
    return found


class Machine:
    """Runs the kernels of one parsed source on ``memory``."""

    def __init__(self, program: Program, memory: Memory):
        self.program, self.memory = program, memory
        self._dispatch = {Num: self._num, Name: self._name, Unary: self._unary, Binary: self._binary,
                          Ternary: self._ternary, Cast: self._cast, Call: self._call, Index: self._load_index,
                          Deref: self._deref, Assign: self._assign, IncDec: self._incdec, Member: self._member}
        self.globals: dict[str, Var] = {}
        frame = Frame(1, np.ones(1, bool), [self.globals])
        with np.errstate(all="ignore"):
            for decl in program.globals:
                self.exec(decl, frame)

    # ------------------------------------------------------------------ launching

    def kernel(self, name: str) -> Function:
        for fn in self.program.functions.get(name, ()):
            if fn.is_kernel:
                return fn
        raise CompileError(f"no __global__ function {name!r} in the source")

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], args: list[int]) -> None:
        """One launch of kernel ``name`` with these pointer (or scalar) arguments."""
        fn = self.kernel(name)
        threads = block[0] * block[1] * block[2]
        if min(*grid, *block) < 1 or threads > 1024 or grid[0] > 2**31 - 1 or max(grid[1:]) > 65535:
            raise DeviceFault(f"{name}: invalid launch configuration grid {grid} block {block}")
        if fn.launch_bounds is not None and threads > fn.launch_bounds:
            raise DeviceFault(f"{name}: {threads} threads a block, but __launch_bounds__({fn.launch_bounds})")
        if len(args) != len(fn.params):
            raise DeviceFault(f"{name}: launched with {len(args)} arguments, the kernel takes {len(fn.params)}")
        scope: dict[str, Var] = {}
        for (t, pname), arg in zip(fn.params, args):
            if isinstance(t, PtrType):
                scope[pname] = Var(t, Pointer(t.elem, t.const, np.asarray(int(arg), I64)))
            else:
                scope[pname] = Var(t, np.asarray(arg).astype(t))
        frame = Frame(1, np.ones(1, bool), [self.globals, scope])
        loops = 0
        with np.errstate(all="ignore"):
            for stmt in fn.body.body:
                if isinstance(stmt, Loop) and self._is_grid_stride(stmt):
                    if grid[1:] != (1, 1) or block[1:] != (1, 1):
                        raise DeviceFault(f"{name}: a 1-D grid-stride kernel launched with grid {grid} block {block}: "
                                          "every y/z slice redoes the whole loop")
                    self._grid_stride(stmt, frame)
                    loops += 1
                elif _names(stmt) & _THREAD_NAMES or isinstance(stmt, (Loop, If, Asm)):
                    raise NotInterpretable(f"{name}: threads of a block cooperate ({type(stmt).__name__} outside "
                                           "a grid-stride loop)")
                else:
                    self.exec(stmt, frame)
        if not loops:
            raise NotInterpretable(f"{name}: not a grid-stride kernel")

    @staticmethod
    def _is_grid_stride(loop: Loop) -> bool:
        init, cond, step = loop.init, loop.cond, loop.step
        if not (isinstance(init, Decl) and len(init.items) == 1 and init.items[0][1] is not None):
            return False
        var = init.items[0][0]
        return ({"blockIdx", "threadIdx"} <= _names(init.items[0][1])
                and isinstance(cond, Binary) and cond.op == "<" and cond.a == Name(var)
                and not _names(cond.b) & _THREAD_NAMES
                and isinstance(step, Assign) and step.op == "+=" and step.target == Name(var)
                and "gridDim" in _names(step.value))

    def _grid_stride(self, loop: Loop, frame: Frame) -> None:
        """Every iteration of every thread at once: the loop visits each i in [0, limit)
        exactly once whatever the grid (at least one thread), so lane i is iteration i."""
        var = loop.init.items[0][0]
        t = self.resolve(loop.init.type, frame)
        limit = int(np.asarray(self.eval(loop.cond.b, frame)))
        if limit <= 0:
            return
        if limit > 1 << 26:
            raise NotInterpretable(f"{limit} iterations: too many for the interpreter")
        lanes = Frame(limit, np.ones(limit, bool), [*frame.scopes, {var: Var(t, np.arange(limit).astype(t))}])
        lanes.loops.append(_LoopState(limit))
        lanes.grid_level = True
        self.exec(loop.body, lanes)

    # ------------------------------------------------------------------ types

    def resolve(self, t: Any, frame: Frame) -> Any:
        if isinstance(t, TParam):
            if t.name not in frame.tmap:
                raise CompileError(f"template parameter {t.name} unknown here")
            return frame.tmap[t.name]
        if isinstance(t, PtrType) and isinstance(t.elem, (TParam, PtrType)):
            return PtrType(self.resolve(t.elem, frame), t.const)
        return t

    # ------------------------------------------------------------------ statements

    def exec(self, stmt: Any, f: Frame) -> None:
        kind = type(stmt)
        if kind is ExprStmt:
            self.eval(stmt.e, f)
        elif kind is Decl:
            t = self.resolve(stmt.type, f)
            for name, init in stmt.items:
                value = convert(self.eval(init, f), t) if init is not None else _zeros(t, f.lanes)
                f.scopes[-1][name] = Var(t, value)
        elif kind is ArrayDecl:
            t = self.resolve(stmt.type, f)
            size = int(np.asarray(self.eval(stmt.size, f)))
            if len(stmt.items) > size:
                raise CompileError(f"{stmt.name}: {len(stmt.items)} initializers for {size} elements")
            values = np.zeros(size, t)
            for k, item in enumerate(stmt.items):
                value = self.eval(item, f)
                if np.ndim(value):
                    raise NotInterpretable(f"{stmt.name}: an initializer that differs between threads")
                values[k] = convert(value, t)
            f.scopes[-1][stmt.name] = Var(PtrType(t, True), ArrayValue(values, stmt.name))
        elif kind is Block:
            f.scopes.append({})
            try:
                for s in stmt.body:
                    if not f.active.any():
                        break
                    self.exec(s, f)
            finally:
                f.scopes.pop()
        elif kind is If:
            self._if(stmt, f)
        elif kind is Loop:
            self._loop(stmt, f)
        elif kind is Return:
            self._return(stmt, f)
        elif kind is Jump:
            if not f.loops:
                raise CompileError(f"{stmt.kind} outside a loop")
            if stmt.kind == "continue":
                f.loops[-1].continued |= f.active
            elif f.grid_level and len(f.loops) == 1:
                raise NotInterpretable("break out of a grid-stride loop (ends the thread's later iterations)")
            f.set_active(np.zeros(f.lanes, bool))
        elif kind is Asm:
            self._asm(stmt, f)
        else:  # pragma: no cover
            raise NotInterpretable(f"statement {kind.__name__}")

    def _if(self, stmt: If, f: Frame) -> None:
        c = self.truth(self.eval(stmt.c, f))
        saved = f.active
        if c.ndim == 0:
            branch = stmt.then if bool(c) else stmt.other
            if branch is not None:
                self.exec(branch, f)
            return
        f.set_active(saved & c)
        if f.active.any():
            self.exec(stmt.then, f)
        after_then = f.active
        f.set_active(saved & ~c)
        if stmt.other is not None and f.active.any():
            self.exec(stmt.other, f)
        f.set_active(after_then | f.active)

    def _loop(self, stmt: Loop, f: Frame) -> None:
        f.scopes.append({})
        try:
            if stmt.init is not None:
                self.exec(stmt.init, f)
            entry = f.active
            running = entry
            for count in range(1_000_000):
                f.set_active(running)
                if stmt.cond is not None and not (stmt.do_while and count == 0):
                    running = running & self.truth(self.eval(stmt.cond, f))
                    f.set_active(running)
                if not running.any():
                    break
                state = _LoopState(f.lanes)
                f.loops.append(state)
                try:
                    self.exec(stmt.body, f)
                finally:
                    f.loops.pop()
                running = f.active | state.continued
                if stmt.step is not None and running.any():
                    f.set_active(running)
                    self.eval(stmt.step, f)
            else:
                raise DeviceFault("a loop ran a million iterations")
            f.set_active(entry & ~f.returned)
        finally:
            f.scopes.pop()

    def _return(self, stmt: Return, f: Frame) -> None:
        if f.grid_level:
            raise NotInterpretable("return inside a grid-stride loop (ends the thread's later iterations)")
        if stmt.e is not None:
            value = convert(self.eval(stmt.e, f), f.ret_type)
            if f.ret is None:
                f.ret = value if f.full else self._select(f.active, value, _zeros(f.ret_type, f.lanes))
            else:
                f.ret = self._select(f.active, value, f.ret)
        f.returned = f.returned | f.active
        f.set_active(np.zeros(f.lanes, bool))

    def _asm(self, stmt: Asm, f: Frame) -> None:
        """One PTX ``cvt`` between float formats, round to nearest even where it rounds."""
        match = re.fullmatch(r"\s*cvt(?:\.(rn|rz|rni|rzi))?\.(f16|bf16|f32|f64)\.(f16|bf16|f32|f64)\s+%0\s*,\s*%1\s*;?\s*",
                             stmt.template)
        if not match or len(stmt.outputs) != 1 or len(stmt.inputs) != 1:
            raise NotInterpretable(f"asm {stmt.template!r}")
        rounding, dst, src = match.groups()
        value = self.eval(stmt.inputs[0][1], f)
        x = {"f16": lambda v: v.astype(U16).view(F16), "bf16": lambda v: v.astype(U16).view(BF16),
             "f32": lambda v: v.astype(F32), "f64": lambda v: v.astype(F64)}[src](np.atleast_1d(value))
        narrowing = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8}
        if narrowing[dst] < narrowing[src] and rounding != "rn":
            raise NotInterpretable(f"cvt rounding {rounding!r}")
        if dst in ("f16", "bf16"):
            wide = x.astype(F64) if dst == "f16" else x.astype(F32)  # as ml_dtypes and PTX do
            y = wide.astype(F16 if dst == "f16" else BF16).view(U16)
        else:
            y = x.astype(F32 if dst == "f32" else F64)
        y = y.reshape(np.shape(value))
        self._store_lvalue(stmt.outputs[0][1], y, f)

    # ------------------------------------------------------------------ expressions

    def eval(self, node: Any, f: Frame) -> Any:
        return self._dispatch[type(node)](node, f)

    @staticmethod
    def truth(value: Any) -> np.ndarray:
        if isinstance(value, Pointer):
            return np.asarray(value.addr != 0)
        return np.asarray(value != 0) if value.dtype != B else np.asarray(value)

    def _num(self, node: Num, f: Frame) -> Any:
        return node.value

    def _name(self, node: Name, f: Frame) -> Any:
        var = f.lookup(node.id)
        if var is None:
            var = self.globals.get(node.id)
        if var is None:
            if node.id in _THREAD_NAMES:
                raise NotInterpretable(f"{node.id} inside the loop body")
            raise CompileError(f"undeclared name {node.id!r}")
        return var.value

    def _member(self, node: Member, f: Frame) -> Any:
        raise NotInterpretable(f"member access .{node.name}")

    def _cast(self, node: Cast, f: Frame) -> Any:
        return convert(self.eval(node.e, f), self.resolve(node.type, f))

    def _unary(self, node: Unary, f: Frame) -> Any:
        v = self.eval(node.e, f)
        if node.op == "!":
            return ~self.truth(v)
        if isinstance(v, Pointer):
            raise CompileError(f"unary {node.op} on a pointer")
        t = _promote(v.dtype) if v.dtype.kind != "f" else v.dtype
        v = convert(v, t)
        if node.op == "-":
            return np.asarray(-v) if t.kind == "f" else np.asarray(np.zeros((), t) - v)
        if node.op == "~":
            if t.kind == "f":
                raise CompileError("~ on a float")
            return np.asarray(~v)
        return v

    def _binary(self, node: Binary, f: Frame) -> Any:
        op = node.op
        if op in ("&&", "||"):
            a = self.truth(self.eval(node.a, f))
            if a.ndim == 0:
                if bool(a) == (op == "||"):
                    return a
                return self.truth(self.eval(node.b, f))
            saved = f.active
            f.set_active(saved & (a if op == "&&" else ~a))
            try:
                b = self.truth(self.eval(node.b, f)) if f.active.any() else np.zeros((), bool)
            finally:
                f.set_active(saved)
            return (a & b) if op == "&&" else (a | b)
        return self.arith(op, self.eval(node.a, f), self.eval(node.b, f))

    def arith(self, op: str, a: Any, b: Any) -> Any:
        if isinstance(a, Pointer) or isinstance(b, Pointer):
            return self._pointer_arith(op, a, b)
        if op in ("<<", ">>"):
            t = _promote(a.dtype)
            if t.kind == "f" or b.dtype.kind == "f":
                raise CompileError("a shift of a float")
            a, n = convert(a, t), convert(b, I64)
            bits = 8 * t.itemsize
            n_ok = np.where((n >= 0) & (n < bits), n, 0).astype(t)
            r = np.left_shift(a, n_ok) if op == "<<" else np.right_shift(a, n_ok)
            return np.asarray(np.where((n >= 0) & (n < bits), r, 0).astype(t))  # (undefined in C: 0 here)
        t = arithmetic_type(a.dtype, b.dtype)
        a, b = convert(a, t), convert(b, t)
        if op in ("==", "!=", "<", ">", "<=", ">="):
            return np.asarray({"==": np.equal, "!=": np.not_equal, "<": np.less, ">": np.greater,
                               "<=": np.less_equal, ">=": np.greater_equal}[op](a, b))
        if op == "+":
            return np.asarray(a + b)
        if op == "-":
            return np.asarray(a - b)
        if op == "*":
            return np.asarray(a * b)
        if op == "/":
            if t.kind == "f":
                return np.asarray(a / b)
            return self._int_div(a, b)[0]
        if op == "%":
            if t.kind == "f":
                raise CompileError("% on floats")
            return self._int_div(a, b)[1]
        if op in ("&", "|", "^"):
            if t.kind == "f":
                raise CompileError(f"{op} on floats")
            return np.asarray({"&": np.bitwise_and, "|": np.bitwise_or, "^": np.bitwise_xor}[op](a, b))
        raise NotInterpretable(f"operator {op}")  # pragma: no cover

    @staticmethod
    def _int_div(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """C's truncating quotient and remainder (a zero divisor gives 0 and a: undefined in C)."""
        t = a.dtype
        zero = b == 0
        safe = np.where(zero, np.ones((), t), b).astype(t)
        if t.kind == "i":
            minus_one = safe == -1
            safe = np.where(minus_one, np.ones((), t), safe).astype(t)
            q = np.floor_divide(a, safe)
            r = a - q * safe
            fix = (r != 0) & ((a < 0) != (safe < 0))  # floor rounded away from zero
            q = np.where(fix, q + 1, q).astype(t)
            q = np.where(minus_one, np.zeros((), t) - a, q).astype(t)  # wraps for the minimum, as the GPU
        else:
            q = np.floor_divide(a, safe)
        q = np.where(zero, np.zeros((), t), q).astype(t)
        r = np.asarray(a - q * np.where(zero, np.zeros((), t), b).astype(t)).astype(t)
        return np.asarray(q), np.asarray(r)

    def _pointer_arith(self, op: str, a: Any, b: Any) -> Any:
        if isinstance(a, Pointer) and isinstance(b, Pointer):
            if op == "-":
                return np.asarray((a.addr - b.addr) // _itemsize(a.elem), I64)
            if op in ("==", "!=", "<", ">", "<=", ">="):
                return self.arith(op, np.asarray(a.addr), np.asarray(b.addr))
            raise CompileError(f"pointer {op} pointer")
        if op in ("==", "!="):
            p, other = (a, b) if isinstance(a, Pointer) else (b, a)
            return self.arith(op, np.asarray(p.addr), np.asarray(other).astype(I64))
        if op == "+" or (op == "-" and isinstance(a, Pointer)):
            p, n = (a, b) if isinstance(a, Pointer) else (b, a)
            if n.dtype.kind not in "iub":
                raise CompileError("pointer arithmetic with a float")
            step = convert(n, I64) * _itemsize(p.elem)
            return Pointer(p.elem, p.const, np.asarray(p.addr + step if op == "+" else p.addr - step, I64))
        raise CompileError(f"pointer {op}")

    @staticmethod
    def _select(c: np.ndarray, a: Any, b: Any) -> Any:
        if isinstance(a, Pointer) and isinstance(b, Pointer):
            return Pointer(a.elem, a.const, np.where(c, a.addr, b.addr))
        return np.where(c, a, b)

    def _ternary(self, node: Ternary, f: Frame) -> Any:
        c = self.truth(self.eval(node.c, f))
        if c.ndim == 0:
            return self.eval(node.a if bool(c) else node.b, f)
        saved = f.active
        try:
            f.set_active(saved & c)
            a = self.eval(node.a, f) if f.active.any() else None
            f.set_active(saved & ~c)
            b = self.eval(node.b, f) if f.active.any() else None
        finally:
            f.set_active(saved)
        if a is None or b is None:  # a side no lane takes still gives the type: evaluate it on no lanes
            f.set_active(np.zeros_like(saved))
            try:
                a = self.eval(node.a, f) if a is None else a
                b = self.eval(node.b, f) if b is None else b
            finally:
                f.set_active(saved)
        ta, tb = ctype_of(a), ctype_of(b)
        if isinstance(a, Pointer) or isinstance(b, Pointer):
            if ta != tb:
                raise CompileError(f"?: on {ta} and {tb}")
            return self._select(c, a, b)
        t = ta if ta == tb else arithmetic_type(ta, tb)
        return np.asarray(np.where(c, convert(a, t), convert(b, t)).astype(t))

    # --- memory
    def _address(self, node: Any, f: Frame) -> tuple[Pointer, np.ndarray]:
        if isinstance(node, Index):
            p, i = self.eval(node.base, f), self.eval(node.index, f)
            if isinstance(i, Pointer):
                p, i = i, p
            if not isinstance(p, Pointer):
                raise CompileError("indexing something that is not a pointer")
            if i.dtype.kind not in "iub":
                raise CompileError("a float array index")
            return p, np.asarray(p.addr + convert(i, I64) * _itemsize(p.elem), I64)
        p = self.eval(node.e, f)
        if not isinstance(p, Pointer):
            raise CompileError("dereferencing something that is not a pointer")
        return p, np.asarray(p.addr, I64)

    def _load_index(self, node: Index, f: Frame) -> Any:
        base = self.eval(node.base, f) if isinstance(node.base, Name) else None
        if isinstance(base, ArrayValue):
            index = convert(self.eval(node.index, f), I64)
            used = index if f.full else index[np.broadcast_to(f.active, np.shape(index))] if np.ndim(index) else index
            if np.size(used) and (np.min(used) < 0 or np.max(used) >= base.values.size):
                raise DeviceFault(f"{base.name}[{int(np.min(used))} .. {int(np.max(used))}]: out of bounds of its "
                                  f"{base.values.size} elements")
            return np.asarray(base.values[np.clip(index, 0, base.values.size - 1)])
        p, addr = self._address(node, f)
        return self._load(p, addr, f)

    def _deref(self, node: Deref, f: Frame) -> Any:
        p, addr = self._address(node, f)
        return self._load(p, addr, f)

    def _load(self, p: Pointer, addr: np.ndarray, f: Frame) -> Any:
        if isinstance(p.elem, PtrType):
            raise NotInterpretable("pointers to pointers")
        mask = None if f.full else f.active
        if addr.ndim == 0 and mask is not None:
            addr = np.broadcast_to(addr, (f.lanes,))
        return np.asarray(self.memory.load(addr, p.elem, mask))

    def _store_lvalue(self, target: Any, value: Any, f: Frame) -> Any:
        if isinstance(target, Name):
            var = f.lookup(target.id)
            if var is None:
                if target.id in self.globals:
                    raise CompileError(f"assigning to the constant {target.id}")
                raise CompileError(f"undeclared name {target.id!r}")
            value = convert(value, var.type)
            if f.full:
                var.value = value
            elif isinstance(value, Pointer):
                var.value = self._select(f.active, value, var.value)
            else:
                var.value = np.asarray(np.where(f.active, value, var.value))
            return value
        if isinstance(target, (Index, Deref)):
            if isinstance(target, Index) and isinstance(target.base, Name) and \
                    isinstance(self._name(target.base, f), ArrayValue):
                raise CompileError(f"assigning to the constant array {target.base.id}")
            p, addr = self._address(target, f)
            if p.const:
                raise CompileError("writing through a pointer to const")
            value = convert(value, p.elem)
            self.memory.store(np.broadcast_to(addr, (f.lanes,)) if addr.ndim == 0 else addr, p.elem,
                              np.broadcast_to(value, (f.lanes,)) if np.ndim(value) == 0 else value,
                              None if f.full else f.active)
            return value
        raise CompileError(f"assigning to {type(target).__name__}")

    def _assign(self, node: Assign, f: Frame) -> Any:
        value = self.eval(node.value, f)
        if node.op != "=":
            value = self.arith(node.op[:-1], self.eval(node.target, f), value)
        return self._store_lvalue(node.target, value, f)

    def _incdec(self, node: IncDec, f: Frame) -> Any:
        old = self.eval(node.target, f)
        new = self.arith("+" if node.op == "++" else "-", old, np.asarray(1, I32))
        self._store_lvalue(node.target, new, f)
        return new if node.prefix else old

    # --- calls
    def _call(self, node: Call, f: Frame) -> Any:
        args = [self.eval(a, f) for a in node.args]
        candidates = self.program.functions.get(node.name)
        if candidates:
            return self._call_user(node, candidates, args, f)
        builtin = BUILTINS.get(node.name)
        if builtin is None:
            if node.name in _THREAD_NAMES or node.name.startswith("__"):
                raise NotInterpretable(f"intrinsic {node.name}")
            raise CompileError(f"call of undeclared function {node.name!r}")
        if any(isinstance(a, Pointer) for a in args):
            raise CompileError(f"{node.name} of a pointer")
        return builtin(*args)

    def _call_user(self, node: Call, candidates: list[Function], args: list, f: Frame) -> Any:
        chosen, tmap = None, {}
        for fn in candidates:
            if fn.is_kernel or len(fn.params) != len(args):
                continue
            if fn.tparams:
                tmap = dict(zip(fn.tparams, node.targs))
                explicit = set(tmap)
                for (pt, _), a in zip(fn.params, args):
                    if isinstance(pt, TParam) and pt.name not in explicit:  # deduced: the types must agree
                        have = ctype_of(a)
                        if pt.name in tmap and tmap[pt.name] != have:
                            raise CompileError(f"{node.name}: template parameter {pt.name} deduced as both "
                                               f"{tmap[pt.name]} and {have}")
                        tmap[pt.name] = have
                if len(tmap) == len(fn.tparams):
                    chosen = fn
                    break
            elif all(not isinstance(pt, PtrType) and ctype_of(a) == pt for (pt, _), a in zip(fn.params, args)):
                chosen = fn  # an exact match wins
                break
        if chosen is None:
            plain = [fn for fn in candidates if not fn.tparams and not fn.is_kernel and len(fn.params) == len(args)]
            if len(plain) != 1:
                raise CompileError(f"no single overload of {node.name} for {[ctype_of(a) for a in args]}")
            chosen, tmap = plain[0], {}
        scope = {}
        for (pt, pname), a in zip(chosen.params, args):
            t = self.resolve(pt, Frame(1, np.ones(1, bool), [], tmap))
            scope[pname] = Var(t, convert(a, t))
        ret = self.resolve(chosen.ret, Frame(1, np.ones(1, bool), [], tmap))
        frame = Frame(f.lanes, f.active, [self.globals, scope], tmap, ret)
        simple = chosen.simple_return
        if simple is not None:
            return convert(self.eval(simple, frame), ret)
        self.exec(chosen.body, frame)
        if ret is VOID:
            return np.zeros((), B)
        return frame.ret if frame.ret is not None else _zeros(ret, f.lanes)


def _itemsize(t: Any) -> int:
    if isinstance(t, PtrType):
        return 8
    if t is VOID:
        raise CompileError("arithmetic on void*")
    return t.itemsize


# -------------------------------------------------------------------------------- builtins

def _libm(fn, *, exact: bool = False):
    """A libm function: float overloads for float arguments (``expf`` or ``exp(float)``),
    double otherwise; computed in float64 and rounded once (``exact``: computed directly)."""
    def call(*args):
        t = F32 if all(a.dtype != F64 for a in args) and all(a.dtype.kind == "f" for a in args) else F64
        if exact:
            return np.asarray(fn(*(convert(a, t) for a in args))).astype(t)
        return np.asarray(fn(*(convert(a, F64) for a in args))).astype(t)
    return call


def _libm_f(fn, *, exact: bool = False):
    """The float-suffixed name (``expf``): arguments converted to float."""
    def call(*args):
        args = [convert(a, F32) for a in args]
        if exact:
            return np.asarray(fn(*args)).astype(F32)
        return np.asarray(fn(*(a.astype(F64) for a in args))).astype(F32)
    return call


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover
        erf = np.frompyfunc(math.erf, 1, 1)
    return np.asarray(erf(x), F64)


def _erfc(x):
    try:
        from scipy.special import erfc
    except ImportError:  # pragma: no cover
        erfc = np.frompyfunc(math.erfc, 1, 1)
    return np.asarray(erfc(x), F64)


def _fmax(a, b):
    return np.fmax(a, b)


def _fmin(a, b):
    return np.fmin(a, b)


_MATH = {
    "exp": np.exp, "exp2": np.exp2, "expm1": np.expm1, "log": np.log, "log2": np.log2, "log10": np.log10,
    "log1p": np.log1p, "sqrt": np.sqrt, "cbrt": np.cbrt, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "tanh": np.tanh, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "erf": _erf,
    "erfc": _erfc, "pow": np.power, "atan2": np.arctan2, "hypot": np.hypot,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
}
_EXACT = {
    "fabs": np.abs, "floor": np.floor, "ceil": np.ceil, "rint": np.rint, "trunc": np.trunc,
    "round": lambda x: np.copysign(np.floor(np.abs(x) + 0.5), x), "fmod": np.fmod, "copysign": np.copysign,
    "fmax": _fmax, "fmin": _fmin,
}


def _bits(src: np.dtype, dst: np.dtype):
    return lambda v: np.asarray(convert(v, src)).view(dst)


def _minmax(pick):
    """CUDA's overloaded min/max: fminf/fmaxf for floats, the integer ones otherwise."""
    def call(a, b):
        t = arithmetic_type(a.dtype, b.dtype)
        a, b = convert(a, t), convert(b, t)
        if t.kind == "f":
            return np.asarray((np.fmax if pick == "max" else np.fmin)(a, b)).astype(t)
        return np.asarray((np.maximum if pick == "max" else np.minimum)(a, b)).astype(t)
    return call


def _make_uint4(*parts):
    words = np.stack([np.broadcast_to(convert(p, U32), np.broadcast_shapes(*(np.shape(q) for q in parts)))
                      for p in parts], axis=-1)
    return np.ascontiguousarray(words).view(V16)[..., 0]


def _isnan(x):
    return np.asarray(np.isnan(x))


def _isinf(x):
    return np.asarray(np.isinf(x))


BUILTINS: dict[str, Any] = {}
for _name, _fn in _MATH.items():
    BUILTINS[_name] = _libm(_fn)
    BUILTINS[_name + "f"] = _libm_f(_fn)
for _name, _fn in _EXACT.items():
    BUILTINS[_name] = _libm(_fn, exact=True)
    BUILTINS[_name + "f"] = _libm_f(_fn, exact=True)
BUILTINS.update({
    "__uint_as_float": _bits(U32, F32), "__float_as_uint": _bits(F32, U32), "__int_as_float": _bits(I32, F32),
    "__float_as_int": _bits(F32, I32), "__longlong_as_double": _bits(I64, F64),
    "__double_as_longlong": _bits(F64, I64),
    "__half2float": lambda h: convert(h, U16).view(F16).astype(F32),
    "__float2half_rn": lambda x: convert(x, F32).astype(F16).view(U16),
    "__bfloat162float": lambda h: convert(h, U16).view(BF16).astype(F32),
    "__float2bfloat16_rn": lambda x: convert(x, F32).astype(BF16).view(U16),
    "max": _minmax("max"), "min": _minmax("min"), "make_uint4": _make_uint4,
    "isnan": _isnan, "isinf": _isinf, "__fdividef": lambda a, b: convert(a, F32) / convert(b, F32),
    "__expf": BUILTINS["expf"], "__logf": BUILTINS["logf"],
})
