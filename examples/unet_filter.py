"""An image-to-image filter: a UNet compiled by rtxrt on its first run.

    python examples/unet_filter.py [IMAGE] -o filtered.npy

IMAGE: a .png/.jpg (needs Pillow) or a .npy array (height x width x 3); without one a test
picture is drawn. The output is written as .npy (height x width x 3 floats in [0, 1]) or, with
Pillow, as a picture (.png, .jpg).

The network is a two-level UNet (max-pool down; ConvTranspose and bilinear Resize up; skip
connections; BatchNorm and GroupNorm) in plain torch with seeded random weights, used as a
residual filter: output = clip(image + 0.1 * unet(image)). No trained weights can be
downloaded here, so the "filter" is a fixed random one. As in classify_image.py the first run
exports and compiles it into a work dir and shows the JIT's progress; later runs are instant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import classify_image
import numpy as np

SEED = 0
IMAGE_SIZE = 128


def unet_filter(base: int = 16):
    """clip(x + 0.1 * UNet(x), 0, 1) on height x width images (multiples of 4)."""
    import torch
    from torch import nn

    def double_conv(cin: int, cout: int, norm: str) -> nn.Sequential:
        def norm_layer(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "bn" else nn.GroupNorm(4, c)

        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm_layer(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm_layer(cout), nn.ReLU())

    class ResidualUNet(nn.Module):
        def __init__(self):
            super().__init__()
            c1, c2, c3 = base, base * 2, base * 4
            self.enc1, self.enc2 = double_conv(3, c1, "bn"), double_conv(c1, c2, "bn")
            self.pool = nn.MaxPool2d(2)
            self.bottom = double_conv(c2, c3, "gn")
            self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
            self.dec2 = double_conv(c2 * 2, c2, "gn")
            self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.dec1 = double_conv(c2 + c1, c1, "gn")
            self.head = nn.Conv2d(c1, 3, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            b = self.bottom(self.pool(e2))
            d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
            d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
            return torch.clamp(x + 0.1 * self.head(d1), 0.0, 1.0)

    torch.manual_seed(SEED)
    return classify_image.calibrate(ResidualUNet(), (4, 3, 64, 64))


def prepare(work_dir: Path | None = None, size: int = IMAGE_SIZE) -> Path:
    folder = classify_image.work_dir_for("unet_filter", work_dir)
    return classify_image.compiled_model(folder, f"unet-filter-{size}", unet_filter, (1, 3, size, size))


def save_image(image: np.ndarray, path: Path) -> None:
    """height x width x 3 in [0, 1] -> .npy, or a picture file through Pillow."""
    if path.suffix == ".npy":
        np.save(path, image.astype(np.float32))
        return
    try:
        from PIL import Image
    except ImportError:
        sys.exit(f"writing {path.suffix} files needs Pillow (pip install pillow); or write a .npy")
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, help="a picture file or a .npy array (default: drawn)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the result (.npy, .png)")
    parser.add_argument("--size", type=int, default=IMAGE_SIZE, help="height and width (a multiple of 4)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the exported models are kept")
    args = parser.parse_args(argv)
    if args.size % 4:
        parser.error("--size must be a multiple of 4 (the UNet halves it twice)")

    session = classify_image.open_session(prepare(args.work_dir, args.size))
    image = classify_image.load_image(args.image, args.size)
    (out,) = session.run(["output"], {"image": np.ascontiguousarray(image.transpose(2, 0, 1)[None])})
    filtered = out[0].transpose(1, 2, 0)
    save_image(filtered, args.output)
    print(f"wrote {args.output} ({filtered.shape[0]}x{filtered.shape[1]}, mean change "
          f"{np.abs(filtered - image).mean():.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
