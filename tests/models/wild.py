"""Models of the kinds users bring that the main zoo lacks, written in plain torch with seeded
random weights and exported at test time: audio (a voice-activity detector with an STFT-as-
conv front end and an LSTM), OCR (a CRNN recognizer with a bidirectional LSTM; a DBNet-style
text detector with an FPN, ConvTranspose and a standalone BatchNorm), speech (a Whisper-style
encoder: conv1d stem, sinusoidal positions computed from the input's length, transformer), a
GRU seq2seq encoder/decoder, 3-D models (an R3D-style video classifier, a 3-D U-Net for
volumes with ConvTranspose3d and InstanceNorm3d), and a YOLOv8-style detector head (anchors from float ``arange``
over each feature map, DFL softmax over a channel axis) with or without NonMaxSuppression at
the end. Small sizes keep the reference backend fast; the architectures are the real ones.

``export(name, path, dynamo=False)`` writes the ONNX file (TorchScript exporter, or torch's
dynamo exporter, today's default, which writes shape arithmetic differently) and returns a
WildModel: its inputs' dynamic axes, ``make_inputs(seed, **sizes)`` and the data-dependent
ops it is allowed to run on the host (NMS only)."""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import nn
from torch.nn import functional as F

EXPORT_SEED = 0
OPSET = 17


# --------------------------------------------------------------------------------- audio: VAD

class VoiceActivity(nn.Module):
    """Silero-style VAD: reflect-padded STFT as a strided Conv1d with a fixed Fourier basis,
    magnitude, a Conv1d encoder, an LSTM over frames, a per-frame speech probability."""

    def __init__(self, window: int = 64, hop: int = 32, hidden: int = 32):
        super().__init__()
        self.pad = window // 2
        bins = window // 2 + 1
        t = torch.arange(window, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        hann = 0.5 - 0.5 * torch.cos(2 * math.pi * t / window)
        basis = torch.cat([torch.cos(2 * math.pi * k * t / window) * hann,
                           -torch.sin(2 * math.pi * k * t / window) * hann])
        self.stft = nn.Conv1d(1, 2 * bins, window, hop, bias=False)
        self.stft.weight.data = basis[:, None, :].float()
        self.stft.weight.requires_grad_(False)
        self.bins = bins
        self.encoder = nn.Sequential(nn.Conv1d(bins, hidden, 3, padding=1), nn.ReLU(),
                                     nn.Conv1d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU())
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, audio):
        x = F.pad(audio.unsqueeze(1), (self.pad, self.pad), mode="reflect")
        spec = self.stft(x)
        re, im = spec[:, : self.bins], spec[:, self.bins:]
        features = self.encoder(torch.sqrt(re * re + im * im + 1e-6))
        out, _ = self.lstm(features.transpose(1, 2))
        return torch.sigmoid(self.head(out)).squeeze(-1)


# --------------------------------------------------------------------------------- OCR

class CRNN(nn.Module):
    """Text-line recognizer: conv/BN/ReLU/max-pool stack, height collapsed, a two-layer
    bidirectional LSTM over the width, per-column class log-probabilities (CTC style)."""

    def __init__(self, classes: int = 37, hidden: int = 32):
        super().__init__()

        def block(cin, cout, pool):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(pool)]

        self.cnn = nn.Sequential(*block(1, 16, 2), *block(16, 32, 2), *block(32, 64, (2, 1)), *block(64, 64, (4, 1)))
        self.rnn = nn.LSTM(64, hidden, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, image):
        features = self.cnn(image).mean(2)  # [batch, channels, width]
        seq, _ = self.rnn(features.permute(2, 0, 1))
        return self.fc(seq).log_softmax(-1)


class DBNet(nn.Module):
    """DBNet-style text detector: a strided backbone, an FPN (lateral 1x1 convs, nearest
    upsampling and adds), the levels upsampled and concatenated, then a head of
    conv/BatchNorm/ReLU and two ConvTranspose with a standalone BatchNorm between them (not
    after a conv, so it cannot be folded) giving the probability map."""

    def __init__(self, base: int = 16):
        super().__init__()
        chans = [base, base * 2, base * 4, base * 8]
        cin, stages = 3, []
        for c in chans:
            stages.append(nn.Sequential(nn.Conv2d(cin, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU()))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList([nn.Conv2d(c, base, 1) for c in chans])
        self.smooth = nn.ModuleList([nn.Conv2d(base, base // 4, 3, padding=1) for _ in chans])
        self.head = nn.Sequential(nn.Conv2d(base, base // 4, 3, padding=1), nn.BatchNorm2d(base // 4), nn.ReLU(),
                                  nn.ConvTranspose2d(base // 4, base // 4, 2, 2))
        self.bn = nn.BatchNorm2d(base // 4)
        self.out = nn.ConvTranspose2d(base // 4, 1, 2, 2)

    def forward(self, image):
        feats, x = [], image
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        laterals = [lat(f) for lat, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:])
        size = laterals[0].shape[2:]
        fused = torch.cat([F.interpolate(s(l), size=size) if i else s(l)
                           for i, (s, l) in enumerate(zip(self.smooth, laterals))], 1)
        return torch.sigmoid(self.out(torch.relu(self.bn(self.head(fused)))))


# --------------------------------------------------------------------------------- speech

class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class WhisperEncoder(nn.Module):
    """Whisper-style encoder: two Conv1d + GELU (the second strided), sinusoidal positions
    computed from the sequence length, pre-LN transformer blocks, a final LayerNorm."""

    def __init__(self, mels: int = 16, width: int = 64, heads: int = 4, layers: int = 2):
        super().__init__()
        self.conv1 = nn.Conv1d(mels, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.width = width
        self.blocks = nn.Sequential(*[EncoderBlock(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)

    def forward(self, mel):
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        length = x.shape[1]
        position = torch.arange(length, dtype=torch.float32, device=x.device)[:, None]
        rate = torch.exp(torch.arange(0, self.width, 2, dtype=torch.float32, device=x.device)
                         * (-math.log(10000.0) / self.width))
        angles = position * rate
        x = x + torch.cat([torch.sin(angles), torch.cos(angles)], -1).to(x.dtype)
        return self.ln(self.blocks(x))


# --------------------------------------------------------------------------------- seq2seq

class GruSeq2Seq(nn.Module):
    """GRU encoder/decoder (teacher forced): the encoder's last state starts the decoder."""

    def __init__(self, vocab: int = 50, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.encoder = nn.GRU(width, width, batch_first=True)
        self.decoder = nn.GRU(width, width, batch_first=True)
        self.out = nn.Linear(width, vocab)

    def forward(self, source, target):
        _, state = self.encoder(self.embed(source))
        decoded, _ = self.decoder(self.embed(target), state)
        return self.out(decoded)


# --------------------------------------------------------------------------------- detection

class ConvBNSiLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class YoloV8Head(nn.Module):
    """YOLOv8-style detector: a backbone with outputs at strides 8, 16, 32; per level a box
    branch (4 x 16 distribution bins) and a class branch; the anchors are float ``arange``s
    over each level's height and width plus 0.5 (Shape -> Cast -> Range in the graph); DFL:
    softmax over the 16 bins (a channel axis) and their expectation by a fixed 1x1 conv;
    output [batch, 4 + classes, anchors] (boxes as x, y, w, h in pixels)."""

    def __init__(self, classes: int = 8, base: int = 16, reg_max: int = 16):
        super().__init__()
        self.nc, self.reg_max = classes, reg_max
        self.stem = nn.Sequential(ConvBNSiLU(3, base, 3, 2), ConvBNSiLU(base, base * 2, 3, 2),
                                  ConvBNSiLU(base * 2, base * 2, 3, 2))
        self.down = nn.ModuleList([ConvBNSiLU(base * 2, base * 2, 3, 2), ConvBNSiLU(base * 2, base * 2, 3, 2)])
        self.box = nn.ModuleList([nn.Sequential(ConvBNSiLU(base * 2, base * 2), nn.Conv2d(base * 2, 4 * reg_max, 1))
                                  for _ in range(3)])
        self.cls = nn.ModuleList([nn.Sequential(ConvBNSiLU(base * 2, base * 2), nn.Conv2d(base * 2, classes, 1))
                                  for _ in range(3)])
        self.dfl = nn.Conv2d(reg_max, 1, 1, bias=False)
        self.dfl.weight.data = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)
        self.dfl.weight.requires_grad_(False)
        self.strides = (8, 16, 32)

    def forward(self, image):
        levels = [self.stem(image)]
        for down in self.down:
            levels.append(down(levels[-1]))
        outs, anchors, strides = [], [], []
        for i, (f, stride) in enumerate(zip(levels, self.strides)):
            b, _, h, w = f.shape
            outs.append(torch.cat([self.box[i](f), self.cls[i](f)], 1).view(b, 4 * self.reg_max + self.nc, -1))
            sx = torch.arange(w, dtype=torch.float32, device=f.device) + 0.5
            sy = torch.arange(h, dtype=torch.float32, device=f.device) + 0.5
            gy, gx = torch.meshgrid(sy, sx, indexing="ij")
            anchors.append(torch.stack((gx, gy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(stride), device=f.device))
        x = torch.cat(outs, 2)
        anchor_points = torch.cat(anchors).transpose(0, 1).to(x.dtype)
        stride_tensor = torch.cat(strides).transpose(0, 1).to(x.dtype)
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        b, _, a = box.shape
        dist = self.dfl(box.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(b, 4, a)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = anchor_points.unsqueeze(0) - lt, anchor_points.unsqueeze(0) + rb
        boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride_tensor
        return torch.cat((boxes, cls.sigmoid()), 1)


# --------------------------------------------------------------------------------- 3-D: video, volumes

class Video3D(nn.Module):
    """R3D/C3D-style video classifier: Conv3d + BatchNorm3d + ReLU blocks (a temporal and a
    spatial stride, a depthwise-in-time (3, 1, 1) conv), MaxPool3d, a residual, global average
    pooling over (T, H, W), a linear head. Input [batch, 3, frames, height, width]."""

    def __init__(self, classes: int = 10, base: int = 8):
        super().__init__()

        def block(cin, cout, k, s, p, groups=1):
            return nn.Sequential(nn.Conv3d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm3d(cout),
                                 nn.ReLU())

        self.stem = block(3, base, (3, 7, 7), (1, 2, 2), (1, 3, 3))
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        self.temporal = block(base, base, (3, 1, 1), 1, (1, 0, 0), groups=base)
        self.spatial = block(base, base, (1, 3, 3), 1, (0, 1, 1))
        self.down = block(base, 2 * base, 3, 2, 1)
        self.head = nn.Linear(2 * base, classes)

    def forward(self, video):
        x = self.pool(self.stem(video))
        x = x + self.spatial(self.temporal(x))
        x = self.down(x)
        return self.head(F.adaptive_avg_pool3d(x, 1).flatten(1))


class UNet3D(nn.Module):
    """3-D U-Net for volumes (medical segmentation): Conv3d + InstanceNorm3d + LeakyReLU,
    MaxPool3d down, ConvTranspose3d up, skip concatenation, a 1x1x1 class head."""

    def __init__(self, channels: int = 1, classes: int = 3, base: int = 8):
        super().__init__()

        def double(cin, cout):
            return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True),
                                 nn.LeakyReLU(0.01), nn.Conv3d(cout, cout, 3, padding=1), nn.LeakyReLU(0.01))

        self.enc1, self.enc2 = double(channels, base), double(base, 2 * base)
        self.bottom = double(2 * base, 4 * base)
        self.up2 = nn.ConvTranspose3d(4 * base, 2 * base, 2, stride=2)
        self.dec2 = double(4 * base, 2 * base)
        self.up1 = nn.ConvTranspose3d(2 * base, base, 2, stride=2)
        self.dec1 = double(2 * base, base)
        self.out = nn.Conv3d(base, classes, 1)

    def forward(self, volume):
        e1 = self.enc1(volume)
        e2 = self.enc2(F.max_pool3d(e1, 2))
        b = self.bottom(F.max_pool3d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


def _append_nms(path: str, classes: int) -> None:
    """NonMaxSuppression at the end of an exported YOLOv8 head, as deployment pipelines add
    it: center boxes to corners, NMS per class, and the kept boxes gathered ([K, 4] + their
    [K, 3] indices): a data-dependent output and a node after it."""
    model = onnx.load(path)
    g = model.graph
    out = g.output[0].name
    consts = {"box_end": [4], "zero": [0], "cls_end": [4 + classes], "two": [2], "max_boxes": [20]}
    for name, value in consts.items():
        g.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], value))
    g.initializer.append(helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.5]))
    g.initializer.append(helper.make_tensor("score", TensorProto.FLOAT, [1], [0.3]))
    g.initializer.append(helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]))
    g.initializer.append(helper.make_tensor("one_axis", TensorProto.INT64, [1], [1]))
    g.node.extend([
        helper.make_node("Slice", [out, "zero", "box_end", "one_axis"], ["xywh"]),
        helper.make_node("Slice", [out, "box_end", "cls_end", "one_axis"], ["scores"]),
        helper.make_node("Transpose", ["xywh"], ["xywh_t"], perm=[0, 2, 1]),
        helper.make_node("Split", ["xywh_t", "two_two"], ["centers", "sizes"], axis=2),
        helper.make_node("Mul", ["sizes", "half"], ["half_sizes"]),
        helper.make_node("Sub", ["centers", "half_sizes"], ["corner_lo"]),
        helper.make_node("Add", ["centers", "half_sizes"], ["corner_hi"]),
        helper.make_node("Concat", ["corner_lo", "corner_hi"], ["corners"], axis=2),
        helper.make_node("NonMaxSuppression", ["corners", "scores", "max_boxes", "iou", "score"], ["selected"]),
        helper.make_node("Gather", ["selected", "two_index"], ["box_index"], axis=1),
        helper.make_node("Gather", ["selected", "zero_index"], ["batch_index"], axis=1),
        helper.make_node("Unsqueeze", ["batch_index", "one_axis"], ["batch_col"]),
        helper.make_node("Unsqueeze", ["box_index", "one_axis"], ["box_col"]),
        helper.make_node("Concat", ["batch_col", "box_col"], ["pairs"], axis=1),
        helper.make_node("GatherND", ["corners", "pairs"], ["kept"]),
    ])
    g.initializer.extend([helper.make_tensor("two_two", TensorProto.INT64, [2], [2, 2]),
                          helper.make_tensor("two_index", TensorProto.INT64, [], [2]),
                          helper.make_tensor("zero_index", TensorProto.INT64, [], [0])])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3]),
                     helper.make_tensor_value_info("kept", TensorProto.FLOAT, [None, 4])])
    onnx.save(model, path)


# --------------------------------------------------------------------------------- the catalogue

@dataclass
class WildModel:
    name: str
    onnx_path: str
    make_inputs: Callable[..., dict[str, np.ndarray]]
    host_ops: frozenset[str] = frozenset()  # data-dependent ops that may run on the host
    outputs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Spec:
    build: Callable[[], nn.Module]
    inputs: dict[str, tuple[str, tuple]]  # name -> (dtype, sample shape); dynamic axes below
    dynamic: dict[str, dict[int, str]]
    host_ops: frozenset[str] = frozenset()
    sizes: Callable[..., dict[str, tuple[int, ...]]] | None = None  # sizes -> shapes for make_inputs
    dynamo_dynamic: dict[str, dict[int, str]] | None = None  # where torch.export cannot take every axis


def _audio(batch: int = 1, samples: int = 1024) -> dict[str, tuple[int, ...]]:
    return {"audio": (batch, samples)}


SPECS: dict[str, Spec] = {
    "vad": Spec(VoiceActivity, {"audio": ("float32", (1, 1024))}, {"audio": {0: "batch", 1: "samples"}},
                sizes=_audio),
    "crnn": Spec(CRNN, {"image": ("float32", (1, 1, 32, 64))}, {"image": {0: "batch", 3: "width"}},
                 sizes=lambda batch=1, width=64: {"image": (batch, 1, 32, width)},
                 dynamo_dynamic={"image": {0: "batch"}}),  # torch cannot decompose an LSTM over a dynamic length
    "dbnet": Spec(DBNet, {"image": ("float32", (1, 3, 64, 64))}, {"image": {0: "batch", 2: "height", 3: "width"}},
                  sizes=lambda batch=1, size=64: {"image": (batch, 3, size, size)}),
    "whisper_encoder": Spec(WhisperEncoder, {"mel": ("float32", (1, 16, 40))}, {"mel": {0: "batch", 2: "frames"}},
                            sizes=lambda batch=1, frames=40: {"mel": (batch, 16, frames)}),
    "gru_seq2seq": Spec(GruSeq2Seq, {"source": ("int64", (2, 7)), "target": ("int64", (2, 5))},
                        {"source": {0: "batch", 1: "source_length"}, "target": {0: "batch", 1: "target_length"}},
                        sizes=lambda batch=2, source=7, target=5: {"source": (batch, source), "target": (batch, target)}),
    "yolov8": Spec(YoloV8Head, {"image": ("float32", (1, 3, 64, 64))}, {"image": {0: "batch", 2: "height", 3: "width"}},
                   sizes=lambda batch=1, size=64: {"image": (batch, 3, size, size)}),
    "yolov8_nms": Spec(YoloV8Head, {"image": ("float32", (1, 3, 64, 64))}, {"image": {2: "height", 3: "width"}},
                       frozenset({"NonMaxSuppression"}), sizes=lambda batch=1, size=64: {"image": (1, 3, size, size)}),
    "video3d": Spec(Video3D, {"video": ("float32", (1, 3, 8, 32, 32))},
                    {"video": {0: "batch", 2: "frames", 3: "height", 4: "width"}},
                    sizes=lambda batch=1, frames=8, size=32: {"video": (batch, 3, frames, size, size)}),
    "unet3d": Spec(UNet3D, {"volume": ("float32", (1, 1, 16, 16, 16))},
                   {"volume": {0: "batch", 2: "depth", 3: "height", 4: "width"}},
                   sizes=lambda batch=1, size=16: {"volume": (batch, 1, size, size, size)}),
}
WILD_MODELS = list(SPECS)


def _make_inputs(spec: Spec) -> Callable[..., dict[str, np.ndarray]]:
    def make(seed: int, **sizes) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        shapes = spec.sizes(**sizes) if spec.sizes else {n: s for n, (_, s) in spec.inputs.items()}
        feeds = {}
        for name, (dtype, _) in spec.inputs.items():
            if dtype == "int64":
                feeds[name] = rng.integers(0, 50, shapes[name]).astype(np.int64)
            else:
                feeds[name] = rng.standard_normal(shapes[name]).astype(np.float32)
        return feeds

    return make


def export(name: str, path: str | os.PathLike, *, dynamo: bool = False) -> WildModel:
    """Export wild model ``name`` with seeded random weights to ``path``."""
    spec = SPECS[name]
    path = os.fspath(path)
    torch.manual_seed(EXPORT_SEED)
    model = spec.build().eval()
    _randomize_norms(model)
    sample = _make_inputs(spec)(EXPORT_SEED)
    args = tuple(torch.from_numpy(sample[n]) for n in spec.inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dynamic = spec.dynamo_dynamic or spec.dynamic
            shapes = tuple({axis: torch.export.Dim.AUTO for axis in dynamic.get(n, {})} for n in spec.inputs)
            torch.onnx.export(model, args, path, dynamo=True, opset_version=max(OPSET, 18), input_names=list(spec.inputs),
                              dynamic_shapes=shapes, verbose=False)
        else:
            torch.onnx.export(model, args, path, dynamo=False, opset_version=OPSET, input_names=list(spec.inputs),
                              output_names=["output"], dynamic_axes=spec.dynamic, do_constant_folding=True)
    if name == "yolov8_nms":
        _append_nms(path, model.nc)
    outputs = [o.name for o in onnx.load(path, load_external_data=False).graph.output]
    return WildModel(name, path, _make_inputs(spec), spec.host_ops, outputs)


def _randomize_norms(model: nn.Module) -> None:
    """BatchNorm statistics and affine parameters away from their identity defaults, so that
    a folded or decomposed BatchNorm that got them wrong shows."""
    generator = torch.Generator().manual_seed(EXPORT_SEED + 1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)
