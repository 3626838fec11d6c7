"""An ordinary ONNX Runtime application, run on rtxrt by naming RtxrtExecutionProvider.

    python examples/ort_app.py               # a small bundled classifier
    python examples/ort_app.py model.onnx    # your model, random float inputs (batch 1)

Everything below the opt-in is plain onnxruntime code. The two opt-in lines make
onnxruntime.InferenceSession(..., providers=["RtxrtExecutionProvider", ...]) run on rtxrt
(nodes rtxrt cannot run still run in onnxruntime). Without a GPU the provider claims no node
and onnxruntime's CPU provider runs the whole model (RTXRT_EP_CPU_DEVICE=1 runs rtxrt's parts
on its CPU reference backend instead). The script compares every output with plain CPU
onnxruntime and exits with status 1 on a mismatch.
"""
import rtxrt_ep  # opt-in to rtxrt: the only rtxrt-specific lines in this file

rtxrt_ep.register()

import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

PROVIDERS = ["RtxrtExecutionProvider", "CPUExecutionProvider"]
# rtxrt and onnxruntime sum in different orders; float32 rounding stays well inside these.
RTOL, ATOL = 1e-4, 1e-5


def build_model() -> onnx.ModelProto:
    """x[batch, 16] -> Gemm -> Relu -> Gemm -> Softmax -> probs[batch, 4], plus TopK labels."""
    rng = np.random.default_rng(1234)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    w1, b1 = numpy_helper.from_array(weight(16, 32), "w1"), numpy_helper.from_array(weight(32), "b1")
    w2, b2 = numpy_helper.from_array(weight(32, 4), "w2"), numpy_helper.from_array(weight(4), "b2")
    k = numpy_helper.from_array(np.array([2], dtype=np.int64), "k")
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
        helper.make_node("TopK", ["probs", "k"], ["top_probs", "top_labels"], name="top2", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("top_labels", TensorProto.INT64, ["batch", 2])],
        initializer=[w1, b1, w2, b2, k],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def random_feeds(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
    feeds = {}
    for arg in session.get_inputs():
        if arg.type not in dtypes:
            sys.exit(f"this example feeds float inputs only; {arg.name!r} is {arg.type}")
        shape = [d if isinstance(d, int) else 3 if arg.name == "x" else 1 for d in arg.shape]
        feeds[arg.name] = rng.standard_normal(shape).astype(dtypes[arg.type])
    return feeds


def main(argv: list[str]) -> int:
    model = onnx.load(argv[0]).SerializeToString() if argv else build_model().SerializeToString()

    session = ort.InferenceSession(model, providers=PROVIDERS)
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    print("available providers:", ort.get_available_providers())
    print("session providers:  ", session.get_providers())

    feeds = random_feeds(session)
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, feeds)
    expected = reference.run(names, feeds)

    ok = True
    for name, got, want in zip(names, outputs, expected):
        same = got.dtype == want.dtype and got.shape == want.shape and np.allclose(got, want, rtol=RTOL, atol=ATOL)
        ok &= same
        print(f"{name}: {got.dtype}{list(got.shape)} {'matches' if same else 'DIFFERS FROM'} onnxruntime CPU")
        print(np.array2string(got, precision=4, suppress_small=True))
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
