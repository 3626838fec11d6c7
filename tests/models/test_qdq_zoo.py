"""Zoo models quantized as users quantize them (onnxruntime.quantization.quantize_static, QDQ
format, per-channel int8 weights, uint8 activations; calibrated on four random inputs): the
compiled model on the reference backend matches onnxruntime running the QDQ graph as written
(graph optimizations off), and planned for sm_86 every node runs on the GPU — the 100-odd
QuantizeLinear/DequantizeLinear nodes included, fused into their neighbours.

Tolerance: two quanta of each output's scale (the same int8 arithmetic; a value landing on a
rounding boundary may round the other way after float reordering), as a fraction of the
output's largest magnitude: 5e-2."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.backends.reference.executor import ReferenceExecutor
from tests.backends.qdq_models import onnxruntime_outputs

from . import zoo

TOLERANCE = 5e-2
QDQ_ZOO = {"resnet18": {}, "bert": {"batch": 2, "seq": 16}}


def quantized(exported: zoo.ExportedModel, folder, sizes) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([exported.make_inputs(200 + i, **sizes) for i in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    target = folder / f"{exported.name}-qdq.onnx"
    quantize_static(exported.onnx_path, str(target), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx.load(target)


@pytest.mark.parametrize("name", QDQ_ZOO)
def test_a_quantized_zoo_model_matches_onnxruntime_and_runs_on_the_gpu(zoo_export, tmp_path, name):
    sizes = QDQ_ZOO[name]
    exported = zoo_export(name)
    model = quantized(exported, tmp_path, sizes)
    assert sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node) > 40
    compiled = compile_onnx(model.SerializeToString())
    feeds = exported.make_inputs(7, **sizes)
    want = onnxruntime_outputs(model, feeds)
    got = ReferenceExecutor(compiled).run(feeds)
    for output, expected in want.items():
        scale = max(float(np.max(np.abs(expected))), 1e-30)
        assert float(np.max(np.abs(got[output].astype(np.float64) - expected))) <= TOLERANCE * scale, output
    report = plan_coverage(compiled, {n: a.shape for n, a in feeds.items()}, "sm_86")
    assert [(h.op, h.why) for h in report.host_nodes] == []
