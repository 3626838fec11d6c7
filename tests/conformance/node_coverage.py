"""Which of ONNX's node test cases the CUDA backend would run with every node on the GPU,
planned for an arch without a GPU (the count the GPU conformance run reports as "every node
ran on the GPU", before running anything):

    python -m tests.conformance.node_coverage [--arch sm_86] [--json PATH]

Each counted case (conformance's exclusions apply) is compiled as the backend compiles it and
planned at its test inputs' shapes (rtxrt.backends.cuda.plan.coverage: plan-time values,
inlined control flow, a model cut at data-dependent nodes, parameters given as inputs planned
per value as the runtime does); a case is "all GPU" when no node is left on the host. The rest are listed by op with the reason their lowering gave."""
from __future__ import annotations

import argparse
import json
import warnings
from collections import Counter, defaultdict

import numpy as np
import onnx
import onnx.numpy_helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from tests.conformance.onnx_suite import _cases, excluded_reason, op_of


def case_coverage(case, arch: str) -> tuple[str, list[tuple[str, str]] | str]:
    """(op, host nodes as (op, why)) of one test case, or (op, error) where it cannot plan."""
    model_proto = case.model
    op = op_of(case.name, model_proto)
    initialized = {t.name for t in model_proto.graph.initializer}
    names = [i.name for i in model_proto.graph.input if i.name not in initialized]
    arrays = case.data_sets[0][0] if case.data_sets else []
    shapes = {name: tuple(array.dims) if isinstance(array, onnx.TensorProto) else tuple(np.shape(array))
              for name, array in zip(names, arrays)}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            values = {name: onnx.numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else np.asarray(a)
                      for name, a in zip(names, arrays)}
            report = plan_coverage(compile_onnx(model_proto.SerializeToString()), shapes, arch, values=values)
    except Exception as exc:  # a case the planner refuses: counted, with why
        return op, f"{type(exc).__name__}: {exc}"[:300]
    return op, [(h.op, h.why) for h in report.host_nodes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="sm_86")
    parser.add_argument("--json", help="write every case's result here")
    args = parser.parse_args(argv)
    counted, all_gpu, records = 0, 0, {}
    host_by_op: dict[str, Counter] = defaultdict(Counter)
    for case in _cases("node"):
        if excluded_reason(case.model) is not None:
            continue
        counted += 1
        op, result = case_coverage(case, args.arch)
        records[case.name] = {"op": op, "host": result}
        if result == []:
            all_gpu += 1
        elif isinstance(result, str):
            host_by_op[op][result.split(":")[0]] += 1
        else:
            for host_op, why in result:
                host_by_op[host_op][why.split(": ", 1)[-1][:100]] += 1
    print(f"{all_gpu} / {counted} node test cases plan with every node on the GPU ({args.arch})")
    for op, reasons in sorted(host_by_op.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"  {op}: {sum(reasons.values())} case(s): " + "; ".join(f"{why} ({n})" for why, n in reasons.most_common(2)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "counted": counted, "all_gpu": all_gpu, "cases": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
