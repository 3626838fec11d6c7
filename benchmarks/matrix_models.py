"""The models of the benchmark matrix (issue 15), in one table: ``MATRIX``, name -> ModelSpec
(what the tables call it, its family, builder, input maker, batches, precisions).

Every model gets seeded random weights that keep its outputs alive (see ``revive``): no zero-
initialized heads or layer scales, BatchNorm statistics measured on random inputs, so each
output depends on the input and a wrong kernel shows in the error against fp32 PyTorch. Each
model also has a tiny size (``spec.at_tiny_size()``: a few layers, small images) that builds and
exports in about a second on a CPU, for the tests and ``peers.py --tiny``.

Sources: plain torch (tests/models/zoo.py, tests/models/wild.py), torchvision and transformers
(random weights, never downloaded). A model whose library is missing raises MissingLibrary
when built, and benchmarks/peers.py turns that into a skipped row.

Used by benchmarks/peers.py; importable on its own (``sys.path`` gets the repository root).
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch
from torch import nn
from torch.nn import functional as F

from tests.models import wild, zoo

SEED = zoo.EXPORT_SEED  # weights; inputs use the benchmark's --seed
FAMILIES = ("CNN", "transformer", "audio")
PRECISIONS = ("fp16", "fp32", "tf32")


class MissingLibrary(RuntimeError):
    """A model's library (torchvision, transformers) is not installed where it runs."""


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model of the benchmark at its benchmark size (or, with ``tiny``, at a test size).

    ``build(tiny)``: the fp32 model on the CPU, eval mode, seeded weights; it is what is exported
    to ONNX. ``torch_variant(model)``: the model the PyTorch peers run (the same weights, as a
    user would run it: SDPA attention); by default the model itself. ``inputs(seed, batch, tiny)``:
    fresh random inputs, numpy, keyed by input name in forward's order. ``dynamic_axes``: export
    once with these symbolic axes (text models: batch and sequence) and serve every batch from
    that file; None: one static export per batch."""

    name: str
    full_label: str
    tiny_label: str
    family: str
    build: Callable[[bool], nn.Module]
    inputs: Callable[[int, int, bool], dict[str, np.ndarray]]
    outputs: tuple[str, ...] = ("output",)
    default_batches: tuple[int, ...] = (1, 32)
    precisions: tuple[str, ...] = ("fp16",)
    dynamic_axes: dict[str, dict[int, str]] | None = None
    library: str | None = None  # a module that must import: "torchvision", "transformers"
    source: str = ""  # where the architecture comes from, for the models table
    torch_variant: Callable[[nn.Module], nn.Module] | None = None
    max_batch: int | None = None
    tiny: bool = False

    @property
    def label(self) -> str:
        return self.tiny_label if self.tiny else self.full_label

    def at_tiny_size(self) -> ModelSpec:
        return dataclasses.replace(self, tiny=True)

    def batches(self, requested: list[int] | None = None) -> list[int]:
        """The requested batches (every one of them, up to ``max_batch``), or by default the
        model's own: 1 and its large batch (16 or 32)."""
        chosen = list(self.default_batches) if requested is None else list(requested)
        return [b for b in chosen if self.max_batch is None or b <= self.max_batch]

    def missing_library(self) -> str | None:
        """The reason this model cannot be built here, or None."""
        if self.library and importlib.util.find_spec(self.library) is None:
            return f"needs {self.library}, which is not installed"
        return None

    def build_model(self) -> nn.Module:
        reason = self.missing_library()
        if reason:
            raise MissingLibrary(reason)
        torch.manual_seed(SEED)
        return self.build(self.tiny).eval()

    def peer_model(self, model: nn.Module) -> nn.Module:
        """What the PyTorch peers run: a copy of ``model`` with SDPA attention, or ``model``."""
        return self.torch_variant(copy.deepcopy(model)).eval() if self.torch_variant else model

    def make_inputs(self, seed: int, batch: int) -> dict[str, np.ndarray]:
        return self.inputs(seed, batch, self.tiny)


# ---------------------------------------------------------------------------------------------
# Weights that keep every output alive
# ---------------------------------------------------------------------------------------------


def revive(model: nn.Module, calibration_shape: tuple[int, ...] | None, seed: int = SEED) -> nn.Module:
    """Random weights where libraries start at zero or near it, then BatchNorm statistics
    measured as training would leave them.

    - a Linear or Conv whose weight is all zeros gets torch's default init again (some libraries
      zero-initialize classifier heads or the last layer of a branch);
    - any other weight whose values are all below 1e-4 in magnitude (ConvNeXt's layer scale,
      1e-6) is drawn from U(0.1, 0.3), so every residual branch counts;
    - LayerNorm affine weights are drawn from U(0.5, 1.5), biases from N(0, 0.1);
    - BatchNorm and GroupNorm: zoo._randomize (random affine weights; BatchNorm statistics
      measured on random batches of ``calibration_shape``, so each layer's activations keep unit
      scale instead of fading to 1e-10 at the logits, as torchvision's EfficientNet-B0 and
      MobileNetV3 did with fresh statistics)."""
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and weight is not None and not weight.any():
                module.reset_parameters()
        for name, p in model.named_parameters():
            if p.requires_grad and "bias" not in name.rsplit(".", 1)[-1] and p.numel() and p.abs().max() < 1e-4:
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) and module.weight is not None:
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
    if calibration_shape is not None:
        zoo._randomize(model, seed, calibration_shape)
    return model.eval()


def _calibration(shape: tuple[int, ...], cap: int = 128) -> tuple[int, ...]:
    """An image shape with height and width capped (BatchNorm statistics of random inputs hardly
    depend on the size; the full size would cost seconds of CPU per model)."""
    return (*shape[:-2], min(shape[-2], cap), min(shape[-1], cap))


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def image_inputs(full: int, tiny: int, channels: int = 3) -> Callable[[int, int, bool], dict[str, np.ndarray]]:
    def make(seed: int, batch: int, is_tiny: bool) -> dict[str, np.ndarray]:
        size = tiny if is_tiny else full
        rng = np.random.default_rng(seed)
        return {"input": rng.standard_normal((batch, channels, size, size)).astype(np.float32)}

    return make


def _padded_mask(rng: np.random.Generator, batch: int, seq: int) -> np.ndarray:
    """Every row attends to a random-length prefix of at least one token; row 0 certainly has
    padding (as zoo._bert_inputs)."""
    lengths = rng.integers(1, seq + 1, size=batch)
    lengths[0] = max(1, seq - 3)
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)


def bert_inputs(seed: int, batch: int, tiny: bool) -> dict[str, np.ndarray]:
    if tiny:
        return zoo._bert_inputs(seed, batch, 16)
    return zoo._bert_base_inputs(seed, batch, 128)


def distilbert_inputs(seed: int, batch: int, tiny: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab, seq = (1000, 16) if tiny else (30522, 128)
    return {"input_ids": rng.integers(0, vocab, size=(batch, seq), dtype=np.int64),
            "attention_mask": _padded_mask(rng, batch, seq)}


def gpt2_inputs(seed: int, batch: int, tiny: bool) -> dict[str, np.ndarray]:
    """A prompt of ``seq`` tokens per row, no padding (prefill of equal-length prompts)."""
    rng = np.random.default_rng(seed)
    vocab, seq = (1000, 16) if tiny else (50257, 512)
    return {"input_ids": rng.integers(0, vocab, size=(batch, seq), dtype=np.int64),
            "attention_mask": np.ones((batch, seq), np.int64)}


def mel_inputs(seed: int, batch: int, tiny: bool) -> dict[str, np.ndarray]:
    mels, frames = (16, 40) if tiny else (80, 3000)
    return {"mel": np.random.default_rng(seed).standard_normal((batch, mels, frames)).astype(np.float32)}


def audio_inputs(seed: int, batch: int, tiny: bool) -> dict[str, np.ndarray]:
    samples = 1024 if tiny else 16000  # 1 s at 16 kHz
    return {"audio": (0.3 * np.random.default_rng(seed).standard_normal((batch, samples))).astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# Attention as users run it: SDPA for the PyTorch peers (the ONNX export keeps MatMul/Softmax)
# ---------------------------------------------------------------------------------------------


class SdpaViTAttention(zoo.ViTAttention):
    """zoo.ViTAttention with torch's fused attention (scale 1/sqrt(head dim), the same)."""

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class SdpaEncoderBlock(wild.EncoderBlock):
    """wild.EncoderBlock (the Whisper-style encoder's block) with torch's fused attention."""

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


def sdpa_blocks(model: nn.Module) -> nn.Module:
    """Swap the written-out attention of zoo's ViT and wild's encoder blocks for SDPA."""
    for module in model.modules():
        if type(module) is zoo.ViTAttention:
            module.__class__ = SdpaViTAttention
        elif type(module) is wild.EncoderBlock:
            module.__class__ = SdpaEncoderBlock
    return model


def sdpa_transformers(model: nn.Module) -> nn.Module:
    """transformers' default attention (SDPA) instead of the eager MatMul/Softmax the export
    uses (sdpa's tracing varies between versions)."""
    for module in model.modules():
        if hasattr(module, "set_attn_implementation"):
            module.set_attn_implementation("sdpa")
            break
    return model


# ---------------------------------------------------------------------------------------------
# Builders: build(tiny) -> fp32 model on the CPU
# ---------------------------------------------------------------------------------------------


def build_resnet50(tiny: bool) -> nn.Module:
    return zoo.build_torch("resnet50", 32 if tiny else 224)


def build_mobilenetv3(tiny: bool) -> nn.Module:
    return zoo.build_torch("mobilenetv3_small", 32 if tiny else 224)


def build_unet(tiny: bool) -> nn.Module:
    base, size = (8, 64) if tiny else (64, 256)
    return revive(zoo.UNet(base=base), _calibration((1, 3, size, size)))


def build_yolov8(tiny: bool) -> nn.Module:
    classes, base, size = (4, 8, 64) if tiny else (80, 64, 640)
    model = wild.YoloV8Head(classes=classes, base=base)
    return revive(model, _calibration((1, 3, size, size), cap=256))  # three levels below 256/8


def build_vit_b16(tiny: bool) -> nn.Module:
    if not tiny:
        return zoo.build_torch("vit_b16", 224)
    torch.manual_seed(SEED)
    vit = zoo.VisionTransformer(image_size=32, patch=16, dim=64, depth=2, heads=4, mlp=128, num_classes=10)
    return zoo._randomize_vit(vit, SEED)


def build_convnext_t(tiny: bool) -> nn.Module:
    from torchvision.models import convnext

    if tiny:
        model = convnext.ConvNeXt([convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)],
                                  num_classes=10)
    else:
        model = convnext.convnext_tiny(weights=None)
    return revive(model, (1, 3, 32, 32) if tiny else (1, 3, 128, 128))


def build_efficientnet_b0(tiny: bool) -> nn.Module:
    from torchvision.models import efficientnet

    if tiny:
        model = efficientnet.EfficientNet(
            [efficientnet.MBConvConfig(1, 3, 1, 16, 16, 1), efficientnet.MBConvConfig(6, 3, 2, 16, 24, 1)],
            dropout=0.2, num_classes=10)
    else:
        model = efficientnet.efficientnet_b0(weights=None)
    return revive(model, (1, 3, 32, 32) if tiny else (1, 3, 128, 128))


def build_regnet_y_1_6gf(tiny: bool) -> nn.Module:
    from torchvision.models import regnet

    if tiny:
        params = regnet.BlockParams.from_init_params(depth=2, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
        model = regnet.RegNet(params, num_classes=10, stem_width=16)
    else:
        model = regnet.regnet_y_1_6gf(weights=None)
    return revive(model, (1, 3, 32, 32) if tiny else (1, 3, 128, 128))


class TransformersModel(nn.Module):
    """A transformers model with positional inputs (``inputs`` in order) and the outputs named
    in ``outputs`` (one tensor, or a tuple)."""

    def __init__(self, model: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...], **call: Any):
        super().__init__()
        self.model, self.input_names, self.output_names, self.call = model, inputs, outputs, call

    def forward(self, *args):
        out = self.model(**dict(zip(self.input_names, args)), **self.call, return_dict=True)
        results = tuple(getattr(out, name) for name in self.output_names)
        return results if len(results) > 1 else results[0]


def build_bert_base(tiny: bool) -> nn.Module:
    return zoo.BertWrapper() if tiny else zoo.BertBaseWrapper()


def build_distilbert(tiny: bool) -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    sizes = dict(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=64) \
        if tiny else {}
    config = DistilBertConfig(**sizes, dropout=0.0, attention_dropout=0.0,
                              initializer_range=(64 if tiny else 768) ** -0.5)  # as zoo.bert_base_config
    config._attn_implementation = "eager"
    return TransformersModel(DistilBertModel(config), ("input_ids", "attention_mask"), ("last_hidden_state",))


def build_gpt2_small(tiny: bool) -> nn.Module:
    """GPT-2 small (124M: hidden 768, 12 layers, 12 heads, vocabulary 50257) without the LM head:
    the prefill's transformer, whose last hidden state a generator would feed to the head."""
    from transformers import GPT2Config, GPT2Model

    if tiny:
        config = zoo.gpt2_config()
    else:
        config = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=768 ** -0.5)
        config._attn_implementation = "eager"
    return TransformersModel(GPT2Model(config), ("input_ids", "attention_mask"), ("last_hidden_state",),
                             use_cache=False)


def build_whisper_encoder(tiny: bool) -> nn.Module:
    """Whisper-base's encoder dimensions: 80 mel bins, width 512, 8 heads, 6 layers (3000
    frames in, 1500 positions)."""
    dims = dict(mels=16, width=64, heads=4, layers=2) if tiny else dict(mels=80, width=512, heads=8, layers=6)
    return revive(wild.WhisperEncoder(**dims), None)


def build_vad(tiny: bool) -> nn.Module:
    """wild.VoiceActivity at Silero VAD's sizes (STFT window 256, hop 128 at 16 kHz; LSTM 128),
    its head scaled so that the speech logits have a spread of about 2 (at torch's default init
    the probabilities all sat within 0.01 of 0.5, so a wrong kernel would hardly show)."""
    window, hop, hidden, samples = (64, 32, 32, 1024) if tiny else (256, 128, 128, 16000)
    model = wild.VoiceActivity(window=window, hop=hop, hidden=hidden).eval()
    logits = []
    hook = model.head.register_forward_hook(lambda module, args, out: logits.append(out))
    with torch.no_grad():
        model(torch.from_numpy(audio_inputs(SEED + 3, 4, tiny)["audio"]))
        hook.remove()
        scale = 2.0 / max(float(logits[0].std()), 1e-6)  # logits -> scale * (logits - their mean)
        model.head.weight.mul_(scale)
        model.head.bias.sub_(float(logits[0].mean())).mul_(scale)
    return model


# ---------------------------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------------------------

TEXT_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
BERT_AXES = TEXT_AXES | {"token_type_ids": {0: "batch", 1: "sequence"},
                         "last_hidden_state": {0: "batch", 1: "sequence"}, "pooler_output": {0: "batch"}}
HIDDEN_AXES = TEXT_AXES | {"last_hidden_state": {0: "batch", 1: "sequence"}}


def _specs() -> list[ModelSpec]:
    return [
        # CNNs
        ModelSpec("resnet50", "ResNet-50 224x224", "ResNet-50 32x32 (tiny)", "CNN", build_resnet50,
                  image_inputs(224, 32), default_batches=(1, 32), precisions=PRECISIONS,
                  source="plain torch (tests/models/zoo.py)"),
        ModelSpec("convnext_t", "ConvNeXt-T 224x224", "ConvNeXt 2 stages 32x32 (tiny)", "CNN", build_convnext_t,
                  image_inputs(224, 32), default_batches=(1, 16), library="torchvision",
                  source="torchvision convnext_tiny"),
        ModelSpec("unet", "UNet (base 64) 256x256", "UNet (base 8) 64x64 (tiny)", "CNN", build_unet,
                  image_inputs(256, 64), default_batches=(1, 16), source="plain torch (zoo.UNet, base 64)"),
        ModelSpec("yolov8", "YOLOv8-style detector (base 64, 80 classes) 640x640",
                  "YOLOv8-style detector (base 8) 64x64 (tiny)", "CNN", build_yolov8, image_inputs(640, 64),
                  default_batches=(1, 16), source="plain torch (wild.YoloV8Head, base 64)"),
        ModelSpec("efficientnet_b0", "EfficientNet-B0 224x224", "EfficientNet 2 stages 32x32 (tiny)", "CNN",
                  build_efficientnet_b0, image_inputs(224, 32), default_batches=(1, 32), library="torchvision",
                  source="torchvision efficientnet_b0"),
        ModelSpec("mobilenetv3", "MobileNetV3-small 224x224", "MobileNetV3-small 32x32 (tiny)", "CNN",
                  build_mobilenetv3, image_inputs(224, 32), default_batches=(1, 32),
                  source="plain torch (zoo.MobileNetV3Small)"),
        ModelSpec("regnet_y_1_6gf", "RegNetY-1.6GF 224x224", "RegNetY 2 blocks 32x32 (tiny)", "CNN",
                  build_regnet_y_1_6gf, image_inputs(224, 32), default_batches=(1, 32), library="torchvision",
                  source="torchvision regnet_y_1_6gf"),
        # transformers
        ModelSpec("bert_base", "BERT-base seq 128", "BERT hidden 128, 2 layers, seq 16 (tiny)", "transformer",
                  build_bert_base, bert_inputs, outputs=("last_hidden_state", "pooler_output"),
                  default_batches=(1, 32), precisions=PRECISIONS, dynamic_axes=BERT_AXES, library="transformers",
                  source="transformers BertModel", torch_variant=sdpa_transformers),
        ModelSpec("distilbert", "DistilBERT-base seq 128", "DistilBERT dim 64, 2 layers, seq 16 (tiny)",
                  "transformer", build_distilbert, distilbert_inputs, outputs=("last_hidden_state",),
                  default_batches=(1, 32), dynamic_axes=HIDDEN_AXES, library="transformers",
                  source="transformers DistilBertModel", torch_variant=sdpa_transformers),
        ModelSpec("vit_b16", "ViT-B/16 224x224", "ViT dim 64, 2 layers 32x32 (tiny)", "transformer", build_vit_b16,
                  image_inputs(224, 32), default_batches=(1, 16), source="plain torch (zoo.VisionTransformer)",
                  torch_variant=sdpa_blocks),
        ModelSpec("gpt2_small", "GPT-2 small prefill seq 512", "GPT-2 hidden 128, 2 layers, seq 16 (tiny)",
                  "transformer", build_gpt2_small, gpt2_inputs, outputs=("last_hidden_state",),
                  default_batches=(1, 16), dynamic_axes=HIDDEN_AXES, library="transformers",
                  source="transformers GPT2Model", torch_variant=sdpa_transformers),
        ModelSpec("whisper_encoder", "Whisper-base encoder 80 mel x 3000 frames",
                  "Whisper-style encoder 16 mel x 40 frames (tiny)", "transformer", build_whisper_encoder,
                  mel_inputs, default_batches=(1, 16), source="plain torch (wild.WhisperEncoder, 512 x 6 layers)",
                  torch_variant=sdpa_blocks),
        # audio
        ModelSpec("vad", "VAD (STFT conv + LSTM 128) 1 s at 16 kHz", "VAD (LSTM 32) 1024 samples (tiny)", "audio",
                  build_vad, audio_inputs, default_batches=(1, 32),
                  source="plain torch (wild.VoiceActivity: STFT as Conv1d, conv encoder, LSTM)"),
    ]


MATRIX: dict[str, ModelSpec] = {spec.name: spec for spec in _specs()}


def zoo_spec(name: str) -> ModelSpec:
    """A zoo model outside the matrix at the zoo's own size (the tests' sizes: 64x64 images,
    hidden 128), with fp16 and fp32 rows; text models at sequence 128."""
    if name in zoo.TEXT_MODELS:
        text = zoo.TEXT_MODELS[name]

        def make_text(seed: int, batch: int, tiny: bool) -> dict[str, np.ndarray]:
            return text.make_inputs(seed, batch=batch, seq=16 if tiny else 128)

        axes = {n: {0: "batch", 1: "sequence"} for n in text.inputs} | text.outputs
        return ModelSpec(name, f"{name} seq 128", f"{name} seq 16", "transformer",
                         lambda tiny: zoo.build_torch(name), make_text, outputs=tuple(text.outputs),
                         precisions=("fp16", "fp32"), dynamic_axes=axes, library="transformers",
                         source="tests/models/zoo.py", torch_variant=sdpa_transformers)
    if name in zoo.CNN_MODELS or name in zoo.IMAGE_MODELS:
        size = (zoo.CNN_MODELS.get(name) or zoo.IMAGE_MODELS[name])[1][-1]
        return ModelSpec(name, f"{name} {size}x{size}", f"{name} {size}x{size}", "CNN",
                         lambda tiny: zoo.build_torch(name), image_inputs(size, size), precisions=("fp16", "fp32"),
                         source="tests/models/zoo.py")
    raise KeyError(name)


def model_spec(name: str) -> ModelSpec:
    """The matrix's model ``name``, or a zoo model at the zoo's size."""
    if name in MATRIX:
        return MATRIX[name]
    try:
        return zoo_spec(name)
    except KeyError:
        known = [*MATRIX, *(n for n in [*zoo.IMAGE_MODELS, *zoo.CNN_MODELS, *zoo.TEXT_MODELS] if n not in MATRIX)]
        raise SystemExit(f"unknown model {name!r}; matrix and zoo models: {', '.join(dict.fromkeys(known))}") from None
