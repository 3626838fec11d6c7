"""``rtxrt run MODEL``: run a .rtxir or .onnx on given or random inputs and summarize outputs."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx

from ..errors import InputError, RtxrtError
from ..display import summarize_array, table
from ..ir.to_onnx import model_to_onnx
from ..runtime import Session
from .arguments import UsageError, add_trust_embedded_kernels, check_writable, dim
from .compare import differences, onnxruntime_available, run_onnxruntime
from .inputs import load_inputs, open_session, random_inputs


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a .rtxir or .onnx model and print output summaries")
    p.add_argument("model", type=Path, help="the .rtxir (or .onnx) file to run")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--inputs", type=Path, metavar="FILE",
                       help=".npz file with one array per input name, or .npy file for a one-input model")
    given.add_argument("--dim", type=dim, action="append", default=[], metavar="NAME=SIZE",
                       help="size of a symbolic dim for random inputs (default 1); repeatable")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--save", type=Path, help="write the outputs to this .npz file")
    add_trust_embedded_kernels(p)
    p.add_argument("--compare-onnxruntime", action="store_true",
                   help="also run onnxruntime (CPU) and print max abs/rel error per output")
    p.add_argument("--onnx", type=Path, help="the original .onnx for --compare-onnxruntime on a .rtxir "
                   "(needed when the .rtxir holds fused ops; else the graph is exported back to ONNX)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    session = open_session(args.model, embedded_kernels=args.trust_embedded_kernels)
    print(f"{args.model}: backend {session.backend}")
    reference = _onnx_for_comparison(args, session) if args.compare_onnxruntime else None
    feeds = load_inputs(args.inputs, session.inputs) if args.inputs else random_inputs(
        session.inputs, dict(args.dim), args.seed)
    for name, value in feeds.items():
        print(f"  input  {name}: {summarize_array(value)}")
    start = time.perf_counter()
    outputs = dict(zip([o.name for o in session.outputs], session.run(None, feeds)))
    print(f"ran in {1000 * (time.perf_counter() - start):.1f} ms")
    for name, value in outputs.items():
        print(f"  output {name}: {summarize_array(value)}")
    if args.save:
        np.savez(args.save, **outputs)
    if reference is not None:
        diffs = differences(outputs, run_onnxruntime(reference, feeds))
        print("compared with onnxruntime (CPU):")
        print(table([(d.name, f"{d.max_abs:.3g}", f"{d.max_rel:.3g}") for d in diffs],
                    ("output", "max abs err", "max rel err")))
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """What can be checked without the model, before loading it."""
    if args.onnx and not args.compare_onnxruntime:
        raise UsageError("--onnx is the model to compare with: add --compare-onnxruntime")
    if args.compare_onnxruntime and not onnxruntime_available():
        raise RtxrtError("--compare-onnxruntime needs onnxruntime, which is not installed: pip install 'rtxrt[ort]'")
    if args.save:
        check_writable(args.save)


def _onnx_for_comparison(args: argparse.Namespace, session: Session) -> onnx.ModelProto:
    if args.onnx:
        return onnx.load(str(args.onnx))
    if args.model.suffix.lower() == ".onnx":
        return onnx.load(str(args.model))
    fused = sorted({n.op_type for n in session.model.graph.walk() if n.domain == "rtxrt"})
    if fused:
        raise InputError(f"the .rtxir holds fused ops onnxruntime does not know ({', '.join(fused)}); "
                         "pass the original model with --onnx MODEL.onnx")
    try:
        return model_to_onnx(session.model)
    except Exception as exc:  # best effort: the exporter does not cover every attribute of every op
        raise InputError(f"cannot export the .rtxir graph back to ONNX for comparison ({exc}); "
                         "pass the original model with --onnx MODEL.onnx") from exc
