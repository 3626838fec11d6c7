"""Image classification with a ResNet-18, compiled by rtxrt on its first run.

    python examples/classify_image.py [IMAGE]

IMAGE: a .png/.jpg (needs Pillow) or a .npy array (height x width x 3, uint8 or floats in
[0, 1]); without one a test picture is drawn. Prints the top-5 classes.

The network is ResNet-18 (BasicBlock 2-2-2-2) written in plain torch with seeded random weights:
no pretrained weights can be downloaded here, so the classes it picks mean nothing, but every
step is the one a real model takes. The first run exports it to ONNX and compiles the .rtxir
(`rtxrt aot`) into a work dir (--work-dir, default $RTXRT_EXAMPLES_DIR or the user cache);
rtxrt.Session then specializes it to this GPU, showing the JIT's progress (a bar on a terminal,
printed lines otherwise); later runs load everything from the caches. Without a usable GPU it
runs on rtxrt's CPU reference backend and says so. unet_filter.py and desktop_app.py share
this file's helpers.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

import rtxrt
from rtxrt.aot import build_rtxir
from rtxrt.runtime.progress import ProgressOption

SEED = 0
IMAGE_SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet statistics
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# --- the model (plain torch; imported only when the .rtxir has to be made) ---------------------

def resnet18(num_classes: int = 1000):
    """ResNet-18 in torchvision's layout, seeded weights, BatchNorm statistics measured on
    random images (as training would leave them) so the logits depend on the input."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.branch = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(), *conv_bn(cout, cout, 3, 1))
            same_shape = stride == 1 and cin == cout
            self.shortcut = nn.Identity() if same_shape else nn.Sequential(*conv_bn(cin, cout, 1, stride))

        def forward(self, x):
            return torch.relu(self.branch(x) + self.shortcut(x))

    torch.manual_seed(SEED)
    stages, cin = [], 64
    for i, cout in enumerate((64, 128, 256, 512)):
        stages += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    model = nn.Sequential(*conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1), *stages,
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))
    return calibrate(model, (4, 3, 64, 64))


def calibrate(model, batch_shape: tuple[int, ...]):
    """Measure BatchNorm's running statistics on two random batches; eval mode after."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a plain average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(batch_shape))
    return model.eval()


def export_onnx(model, path: Path, shape: tuple[int, ...]) -> None:
    """A static-shape export: the Session specializes (JITs) it as soon as it opens."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(shape),), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=True, input_names=["image"], output_names=["output"])


# --- helpers shared by the image examples ---------------------------------------------------

def work_dir_for(example: str, override: Path | None) -> Path:
    import platformdirs

    if override is not None:
        return override
    return Path(os.environ.get("RTXRT_EXAMPLES_DIR") or platformdirs.user_cache_dir("rtxrt-examples")) / example


def compiled_model(work_dir: Path, name: str, build: Callable[[], object], shape: tuple[int, ...]) -> Path:
    """``work_dir/name.rtxir``: exported from ``build()`` and compiled on the first run, reused after."""
    rtxir = work_dir / f"{name}-rtxrt{rtxrt.__version__}.rtxir"
    if rtxir.exists():
        print(f"model: {rtxir} (cached)")
        return rtxir
    work_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = work_dir / f"{name}.onnx"
    # Each file is written under a name of this process's own and renamed when complete: an
    # interrupted run never leaves a file that looks finished, and two first runs never clash.
    partial = work_dir / f"{name}.{os.getpid()}.partial"
    print(f"first run: exporting {name} to {onnx_path} ...", flush=True)
    export_onnx(build(), partial, shape)
    partial.replace(onnx_path)
    print(f"first run: rtxrt aot {onnx_path.name} -> {rtxir.name} ...", flush=True)
    build_rtxir(onnx_path, partial)
    partial.replace(rtxir)
    return rtxir


def print_progress(stage: str, done: int, total: int) -> None:
    """JIT progress as lines (for logs and pipes): each stage's start, every tenth, its end."""
    if done == total or done * 10 // max(total, 1) != (done - 1) * 10 // max(total, 1):
        print(f"rtxrt JIT {stage}: {done}/{total}", flush=True)


def open_session(path: Path, progress: ProgressOption = None) -> rtxrt.Session:
    """A Session on the GPU when there is one, else on the CPU reference backend (said here).
    ``progress`` defaults to a bar on a terminal and printed lines otherwise."""
    if progress is None:
        progress = True if sys.stderr.isatty() else print_progress
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fallback reason is printed below
        session = rtxrt.Session(path, fallback="cpu", progress=progress)
    print(f"backend: {session.backend}")
    if session.fallback_reason:
        print(f"  (no GPU: {session.fallback_reason})")
    if session.on_gpu:
        print(f"JIT: {session.stats['kernels_compiled']} kernels compiled in {session.stats['jit_seconds']:.1f} s"
              + (" (loaded from the runtime cache)" if session.stats["from_cache"] else ""))
    return session


def load_image(path: Path | None, size: int) -> np.ndarray:
    """A height x width x 3 float32 image in [0, 1], resized to size x size: read from ``path``
    (Pillow for picture files, numpy for .npy), or a drawn test picture when ``path`` is None."""
    if path is None:
        y, x = np.mgrid[0:size, 0:size] / size
        disk = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.06).astype(np.float32)
        return np.stack([x, y, 1 - x], axis=-1).astype(np.float32) * (1 - disk[..., None]) + disk[..., None] * 0.9
    if path.suffix == ".npy":
        image = np.load(path)
        if image.ndim != 3 or image.shape[-1] != 3:
            sys.exit(f"{path}: expected height x width x 3, got shape {image.shape}")
        image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
        rows = np.arange(size) * image.shape[0] // size  # nearest-neighbour resize
        cols = np.arange(size) * image.shape[1] // size
        return np.ascontiguousarray(image[rows][:, cols])
    try:
        from PIL import Image
    except ImportError:
        sys.exit(f"reading {path.suffix} files needs Pillow (pip install pillow); or pass a .npy array")
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0


def to_input(image: np.ndarray) -> np.ndarray:
    """height x width x 3 in [0, 1] -> a normalized 1 x 3 x height x width batch."""
    return np.ascontiguousarray(((image - MEAN) / STD).transpose(2, 0, 1)[None], dtype=np.float32)


# --- classification -------------------------------------------------------------------------

def top5(logits: np.ndarray) -> list[tuple[int, float]]:
    """(class, probability) for the five most likely classes of one row of logits."""
    z = logits.astype(np.float64) - logits.max()
    probs = np.exp(z) / np.exp(z).sum()
    return [(int(i), float(probs[i])) for i in np.argsort(-probs)[:5]]


def prepare(work_dir: Path | None = None, size: int = IMAGE_SIZE) -> Path:
    return compiled_model(work_dir_for("classify_image", work_dir), f"resnet18-{size}", resnet18, (1, 3, size, size))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, help="a picture file or a .npy array (default: drawn)")
    parser.add_argument("--size", type=int, default=IMAGE_SIZE, help="the model's input height and width")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the exported models are kept")
    args = parser.parse_args(argv)

    session = open_session(prepare(args.work_dir, args.size))
    (logits,) = session.run(["output"], {"image": to_input(load_image(args.image, args.size))})
    print("top-5 (random weights: the classes mean nothing):")
    for label, prob in top5(logits[0]):
        print(f"  class {label:4d}  p={prob:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
