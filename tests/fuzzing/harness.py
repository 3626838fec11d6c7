"""Running fuzz cases: each case runs in a forked child with a time limit and a memory limit,
so that a hang, a crash or a runaway allocation is reported as that case's failure, with the
seed to reproduce it, instead of stopping the whole run.

A case passes when it ends in an ``RtxrtError`` or runs and returns outputs of the declared
kinds; anything else fails it: another exception type, a crash, a hang, or an RtxrtError that
only wraps a MemoryError (the allocation should have been refused before it was tried).
"""
from __future__ import annotations

import json
import os
import resource
import select
import signal
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

import rtxrt
from rtxrt.backends.reference import kernel as reference_kernel
from rtxrt.errors import RtxrtError
from rtxrt.ir.dtypes import DType
from rtxrt.runtime.session import IOInfo

SECONDS_PER_CASE = 5.0
# A case may map this much more memory than the test process has: enough for any run of the
# seed models, far less than a shape blown up by a mutation would take. The reference backend
# is told to refuse arrays of half that, so a MemoryError means an allocation it did not check.
MEMORY_HEADROOM = 2 << 30
# Inputs fed to a mutated model stay small whatever its declared shapes say.
MAX_FEED_DIM = 64
MAX_FEED_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class Settings:
    """Which cases to run: case i of a run derives everything from (seed, i), so one case is
    rerun with RTXRT_FUZZ_SEED=s RTXRT_FUZZ_FIRST=i RTXRT_FUZZ_CASES=1."""

    seed: int
    first: int
    cases: int

    @staticmethod
    def from_env(default_cases: int, default_seed: int = 2024) -> "Settings":
        env = os.environ
        return Settings(int(env.get("RTXRT_FUZZ_SEED", default_seed)), int(env.get("RTXRT_FUZZ_FIRST", 0)),
                        int(env.get("RTXRT_FUZZ_CASES", default_cases)))


@dataclass(frozen=True)
class Case:
    description: str  # the seed model and the mutations applied, for the failure report
    action: Callable[[], None]  # runs in the child; returns normally when the model ran


@dataclass(frozen=True)
class Outcome:
    label: str  # "ok", the RtxrtError class (with the exception it wraps), or what went wrong
    failure: str = ""  # why the case fails the test; empty when it passes
    message: str = ""  # the error's message


@dataclass
class Results:
    settings: Settings
    outcomes: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # label -> the first case that ended so, and how
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        s = self.settings
        lines = [f"{s.cases} cases from #{s.first}, seed {s.seed}, {self.seconds:.1f} s, "
                 f"{len(self.failures)} failed"]
        for label, count in self.outcomes.most_common():
            lines.append(f"  {count:6d}  {label:30} e.g. {self.examples[label][:160]}")
        return "\n".join(lines)


class WrongOutputs(AssertionError):
    """A run returned, but not outputs of the kinds the model declares."""


def run_campaign(make_case: Callable[[np.random.Generator], Case], settings: Settings) -> Results:
    results = Results(settings)
    start = time.perf_counter()
    for index in range(settings.first, settings.first + settings.cases):
        case = make_case(np.random.default_rng([settings.seed, index]))
        outcome = run_isolated(case.action)
        results.outcomes[outcome.label] += 1
        results.examples.setdefault(outcome.label, f"#{index} {case.description}: {outcome.message}")
        if outcome.failure:
            results.failures.append(f"case #{index} (RTXRT_FUZZ_SEED={settings.seed} RTXRT_FUZZ_FIRST={index} "
                                    f"RTXRT_FUZZ_CASES=1): {case.description}\n{outcome.failure}")
    results.seconds = time.perf_counter() - start
    return results


def run_isolated(action: Callable[[], None], seconds: float = SECONDS_PER_CASE) -> Outcome:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(action, write_fd)
    os.close(write_fd)
    try:
        report, finished = _read_until(read_fd, time.monotonic() + seconds)
    finally:
        os.close(read_fd)
    if not finished:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if not finished:
        return Outcome("hang", f"no result after {seconds} s")
    if not report:
        return Outcome("crash", f"the case process died ({_describe_status(status)})")
    return Outcome(**json.loads(report))


def _child(action: Callable[[], None], write_fd: int) -> None:
    """Never returns: the child must not run the parent's pytest machinery on exit."""
    try:
        signal.alarm(int(SECONDS_PER_CASE) * 4)  # ends the child even if the parent is gone
        _limit_memory()
        report = json.dumps(asdict(_outcome_of(action))).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(report)
    finally:
        os._exit(0)


def _limit_memory() -> None:
    reference_kernel.MAX_TENSOR_BYTES = MEMORY_HEADROOM // 2
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _outcome_of(action: Callable[[], None]) -> Outcome:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the CPU fallback and numpy overflow warnings
            action()
    except RtxrtError as exc:
        label = type(exc).__name__
        if exc.__cause__ is not None:
            label += f"({type(exc.__cause__).__name__})"
        if isinstance(exc.__cause__, MemoryError):
            return Outcome(label, f"allocated more than the limit before refusing: {exc}", str(exc))
        return Outcome(label, message=str(exc))
    except BaseException as exc:  # noqa: BLE001 -- every other exception is the failure we hunt
        return Outcome(type(exc).__name__, traceback.format_exc(), str(exc))
    return Outcome("ok")


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    """What the child wrote, and whether it finished (closed the pipe) before ``deadline``."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"", False
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


# --- running a model -----------------------------------------------------------------------------


def run_file(data: bytes, input_seed: int) -> None:
    """Read a .rtxir, open a CPU session on it and run it on random inputs of its declared types."""
    rtxrt.format.read_rtxir(data)
    session = rtxrt.Session(data, fallback="cpu", progress=False)
    feeds = random_feeds(session.inputs, np.random.default_rng(input_seed))
    check_outputs(session.outputs, session.run(None, feeds))


def random_feeds(inputs: list[IOInfo], rng: np.random.Generator) -> dict[str, np.ndarray]:
    symbols: dict[str, int] = {}  # one size per symbolic dim, shared by every input
    return {info.name: random_array(info, feed_shape(info.shape, rng, symbols), rng) for info in inputs}


def feed_shape(shape, rng: np.random.Generator, symbols: dict[str, int]) -> tuple[int, ...]:
    """The declared shape, with sizes for symbols and unknowns; a declared dim no input could
    have (negative, huge) becomes 1, which the session must refuse."""
    if shape is None:
        return (2,)
    dims = [_feed_dim(d, rng, symbols) for d in shape]
    return tuple(dims) if np.prod(dims, dtype=np.float64) <= MAX_FEED_ELEMENTS else (1,) * len(dims)


def _feed_dim(d, rng: np.random.Generator, symbols: dict[str, int]) -> int:
    if isinstance(d, str):
        return symbols.setdefault(d, int(rng.integers(1, 4)))
    if d is None:
        return 2
    return d if 0 <= d <= MAX_FEED_DIM else 1


def random_array(info: IOInfo, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = DType.FLOAT32 if info.dtype == "unknown" else DType.from_name(info.dtype)
    if dtype is DType.STRING:
        return np.full(shape, "text", dtype=object)
    if dtype is DType.BOOL:
        return rng.random(shape) < 0.5
    if dtype.is_integer:  # 0 and 1 fit every integer type, int2 included, and are valid indices
        return rng.integers(0, 2, shape).astype(dtype.numpy)
    return rng.standard_normal(shape).astype(dtype.numpy)


def check_outputs(declared: list[IOInfo], outputs: list) -> None:
    if len(outputs) != len(declared):
        raise WrongOutputs(f"{len(outputs)} outputs for {len(declared)} declared")
    for info, value in zip(declared, outputs):
        if not isinstance(value, np.ndarray):
            raise WrongOutputs(f"output {info.name!r} is a {type(value).__name__}, not an array")
        if not _is_dtype(value.dtype, info.dtype):
            raise WrongOutputs(f"output {info.name!r} is {value.dtype} but declared {info.dtype}")
        if info.shape is not None and not _fits(value.shape, info.shape):
            raise WrongOutputs(f"output {info.name!r} has shape {value.shape} but declared {info.shape}")


def _is_dtype(dtype: np.dtype, declared: str) -> bool:
    if declared == "unknown":
        return True
    return dtype.kind in "OUS" if declared == "string" else dtype == DType.from_name(declared).numpy


def _fits(shape: tuple[int, ...], declared) -> bool:
    return len(shape) == len(declared) and all(not isinstance(d, int) or d == s for s, d in zip(shape, declared))
