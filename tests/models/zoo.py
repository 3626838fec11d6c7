"""Model zoo for the model tests: real architectures written in plain torch (torchvision does
not import beside the local torch CPU wheel) plus transformers BERT-style and GPT-2-style models.

Every model gets seeded random weights and is exported to ONNX at test time with the
TorchScript exporter (``dynamo=False``), constant folding on. ``export(name, path)`` returns an
``ExportedModel``: the ONNX path and ``make_inputs(seed, **sizes)``, which draws fresh random
inputs as a dict of numpy arrays keyed by graph input name.

Sizes are kept small (1x3x64x64 images, BERT and GPT-2 hidden 128, 2 layers) so that exporting
and running every model on the numpy reference backend stays within a CI budget, but the
architectures are the real ones: ResNet-18 (BasicBlock 2-2-2-2), ResNet-50 (Bottleneck
3-4-6-3), MobileNetV3-small (inverted residuals, squeeze-excite, hardswish/hardsigmoid), a UNet
(two levels, max-pool down, ConvTranspose and Resize up, skip Concat, BatchNorm and GroupNorm).
ViT-B/16 is full size (12 layers, hidden 768, 86M parameters, 1x3x224x224): its cost is in the
weights, which a smaller image would not shrink. ``export(..., image_size=224)`` gives the
CNNs at full resolution too (the AOT benchmark uses it).

What the exporter leaves in the graphs: BatchNorm is folded into the preceding Conv
(constant folding in eval mode); GroupNorm becomes Reshape + InstanceNormalization + Reshape +
Mul + Add; BERT keeps LayerNormalization, MatMul/Softmax attention, Erf GELU, and the
attention-mask arithmetic (Where/Expand/Range...) on symbolic batch and sequence axes. ViT
keeps LayerNormalization, MatMul + Add projections, a fused QKV MatMul split into Q, K and V,
MatMul/Mul/Softmax attention and Erf GELU. GPT-2 has Gemm projections (its Conv1D), the causal
mask as a Where on a sliced boolean table, tanh GELU written out (Pow/Mul/Add/Tanh).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

EXPORT_SEED = 0  # weights; inputs in the tests use other seeds
OPSET = 17


# ---------------------------------------------------------------------------------------------
# ResNet (He et al. 2015), torchvision layout
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * self.expansion, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * self.expansion, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block: type, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        stages = []
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(count):
                blocks.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2])


def resnet50() -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3])


# ---------------------------------------------------------------------------------------------
# MobileNetV3-small (Howard et al. 2019), torchvision layout
# ---------------------------------------------------------------------------------------------


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.relu = nn.ReLU()
        self.scale = nn.Hardsigmoid()

    def forward(self, x):
        s = self.scale(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return x * s


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=0.001, momentum=0.01),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, expanded: int, cout: int, use_se: bool, act: str, stride: int):
        super().__init__()
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(_conv_bn_act(cin, expanded, 1, act=activation))
        layers.append(_conv_bn_act(expanded, expanded, k, stride, groups=expanded, act=activation))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4)))
        layers.append(_conv_bn_act(expanded, cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_res else out


class MobileNetV3Small(nn.Module):
    # cin, kernel, expanded, cout, SE, activation, stride
    SETTINGS = [
        (16, 3, 16, 16, True, "RE", 2),
        (16, 3, 72, 24, False, "RE", 2),
        (24, 3, 88, 24, False, "RE", 1),
        (24, 5, 96, 40, True, "HS", 2),
        (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 120, 48, True, "HS", 1),
        (48, 5, 144, 48, True, "HS", 1),
        (48, 5, 288, 96, True, "HS", 2),
        (96, 5, 576, 96, True, "HS", 1),
        (96, 5, 576, 96, True, "HS", 1),
    ]

    def __init__(self, num_classes: int = 1000, last_channel: int = 1024):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, 16, 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(*s) for s in self.SETTINGS]
        layers.append(_conv_bn_act(96, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(576, last_channel), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(last_channel, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------------------------------------
# A small UNet (Ronneberger et al. 2015)
# ---------------------------------------------------------------------------------------------


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()

        def norm_layer(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "bn" else nn.GroupNorm(4, c)

        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm_layer(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm_layer(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


class UNet(nn.Module):
    """Three resolutions: the first up-step is a ConvTranspose, the second a bilinear Resize;
    the encoder uses BatchNorm, the bottleneck and decoder GroupNorm."""

    def __init__(self, cin: int = 3, classes: int = 2, base: int = 16):
        super().__init__()
        c1, c2, c3 = base, base * 2, base * 4
        self.enc1 = DoubleConv(cin, c1, "bn")
        self.enc2 = DoubleConv(c1, c2, "bn")
        self.pool = nn.MaxPool2d(2)
        self.bottom = DoubleConv(c2, c3, "gn")
        self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.dec2 = DoubleConv(c2 * 2, c2, "gn")
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec1 = DoubleConv(c2 + c1, c1, "gn")
        self.head = nn.Conv2d(c1, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


class ConvSiLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return nn.functional.silu(self.bn(self.conv(x)))


class TinyYolo(nn.Module):
    """YOLO-style detector: a strided backbone (Conv+BN+SiLU), a neck that upsamples the
    coarse level and concatenates it with the fine one, and a head per level whose anchor
    grid is built from that level's height and width (``torch.arange`` over the feature map's
    size, as YOLOv5/v8 exports have it: Shape -> Range in the graph). Output [batch, boxes, 5 +
    classes], boxes = anchors * (H/8 * W/8 + H/16 * W/16)."""

    def __init__(self, classes: int = 4, anchors: int = 2, base: int = 16):
        super().__init__()
        c1, c2, c3 = base, base * 2, base * 4
        self.nc, self.na = classes, anchors
        self.backbone = nn.Sequential(ConvSiLU(3, c1, 3, 2), ConvSiLU(c1, c2, 3, 2), ConvSiLU(c2, c3, 3, 2))
        self.down = ConvSiLU(c3, c3, 3, 2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = ConvSiLU(2 * c3, c3, 1, 1)
        self.heads = nn.ModuleList([nn.Conv2d(c3, anchors * (5 + classes), 1) for _ in range(2)])
        self.strides = (8, 16)
        self.register_buffer("anchor_wh", torch.tensor([[[10.0, 13.0], [16.0, 30.0]], [[30.0, 61.0], [62.0, 45.0]]]))

    def forward(self, x):
        p3 = self.backbone(x)
        p4 = self.down(p3)
        p3 = self.fuse(torch.cat([p3, self.up(p4)], 1))
        outs = []
        for i, (f, stride) in enumerate(zip((p3, p4), self.strides)):
            b, _, h, w = f.shape
            y = self.heads[i](f).view(b, self.na, 5 + self.nc, h, w).permute(0, 1, 3, 4, 2).sigmoid()
            gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2).float()
            xy = (y[..., :2] * 2 - 0.5 + grid) * stride
            wh = (y[..., 2:4] * 2) ** 2 * self.anchor_wh[i].view(1, self.na, 1, 1, 2)
            outs.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, 5 + self.nc))
        return torch.cat(outs, 1)


# ---------------------------------------------------------------------------------------------
# ViT-B/16 (Dosovitskiy et al. 2020); one fused QKV projection, as torchvision and timm have it
# ---------------------------------------------------------------------------------------------


class ViTAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection, written out as MatMul/Softmax
    (so the export shows the pattern the attention fusion must find, not an opaque op)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5  # a Python float: exported as a constant
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class ViTBlock(nn.Module):
    """Pre-norm encoder block: x + attn(LN(x)), then x + MLP(LN(x)) with exact (erf) GELU."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisionTransformer(nn.Module):
    """ViT-B/16 by default: 16x16 patches (a strided Conv), a class token, learned position
    embeddings, 12 blocks of hidden 768, 12 heads, MLP 3072, a final LayerNorm and a linear
    head on the class token. The position table is sized for ``image_size``."""

    def __init__(self, image_size: int = 224, patch: int = 16, dim: int = 768, depth: int = 12,
                 heads: int = 12, mlp: int = 3072, num_classes: int = 1000):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, mlp) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.ln(self.blocks(x))[:, 0])


def vit_b16(image_size: int = 224) -> nn.Module:
    return VisionTransformer(image_size=image_size)


def _randomize_vit(model: VisionTransformer, seed: int) -> VisionTransformer:
    """Seeded weights where every part shows: torchvision starts the class token at zero and
    the position table at std 0.02, next to patch embeddings of std ~0.6, so a wrong Concat or
    position Add would hardly move the logits; here both are drawn at std 0.5. LayerNorm's affine
    weights are random (0.5 to 1.5, bias std 0.1) so a misfused LayerNorm shows too. Linear and
    Conv weights keep torch's default (uniform, ~1/sqrt(3 fan_in)), which keeps each block's
    attention and MLP branches the same order as the residual stream."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.class_token.copy_(torch.randn(model.class_token.shape, generator=g) * 0.5)
        model.pos_embedding.copy_(torch.randn(model.pos_embedding.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# BERT-style encoder (transformers)
# ---------------------------------------------------------------------------------------------

BERT_VOCAB = 1000


def bert_config():
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=BERT_VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=512, max_position_embeddings=128, type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        # BERT's default 0.02 leaves the attention and feed-forward branches so small next to
        # the embeddings that a broken attention mask moved the output by only 0.03; at 0.1
        # (about 1/sqrt(hidden)) the mask moves it by ~0.8 and the layers by ~5.
        initializer_range=0.1,
    )
    # eager attention exports to plain MatMul/Softmax; sdpa tracing varies between versions
    config._attn_implementation = "eager"
    return config


class BertWrapper(nn.Module):
    """Positional (input_ids, attention_mask, token_type_ids) → (last_hidden_state, pooler_output)."""

    def __init__(self):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel(bert_config())

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
        return out.last_hidden_state, out.pooler_output


BERT_BASE_VOCAB = 30522


def bert_base_config():
    """BERT-base (Devlin et al. 2018) at full size: hidden 768, 12 layers, 12 heads, MLP 3072,
    its real vocabulary and 512 positions; for the GPU benchmarks (benchmarks/peers.py)."""
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=BERT_BASE_VOCAB, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=768 ** -0.5,  # about 1/sqrt(hidden), for the reason bert_config gives
    )
    config._attn_implementation = "eager"  # as bert_config: plain MatMul/Softmax in the export
    return config


class BertBaseWrapper(BertWrapper):
    """BertWrapper's inputs and outputs around a BERT-base encoder."""

    def __init__(self):
        nn.Module.__init__(self)  # not BertWrapper.__init__, which would build the small encoder
        from transformers import BertModel

        self.bert = BertModel(bert_base_config())


# ---------------------------------------------------------------------------------------------
# GPT-2-style decoder (transformers)
# ---------------------------------------------------------------------------------------------

GPT2_VOCAB = 1000


def gpt2_config():
    from transformers import GPT2Config

    config = GPT2Config(
        vocab_size=GPT2_VOCAB, n_positions=128, n_embd=128, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        initializer_range=0.1,  # as for BERT: so that attention and the causal mask matter
    )
    config._attn_implementation = "eager"  # plain MatMul/Softmax with the causal Where
    return config


class GPT2Wrapper(nn.Module):
    """Positional (input_ids, attention_mask) → last_hidden_state; no key/value cache."""

    def __init__(self):
        super().__init__()
        from transformers import GPT2Model

        self.gpt2 = GPT2Model(gpt2_config())

    def forward(self, input_ids, attention_mask):
        out = self.gpt2(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True)
        return out.last_hidden_state


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


@dataclass
class ExportedModel:
    name: str
    onnx_path: str
    # make_inputs(seed, **sizes) -> {input name: numpy array}
    make_inputs: Callable[..., dict[str, np.ndarray]]
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)


def _image_inputs(shape: tuple[int, ...]) -> Callable[..., dict[str, np.ndarray]]:
    def make(seed: int, batch: int | None = None, size: int | None = None) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        s = (batch or shape[0], shape[1]) + ((size, size) if size else tuple(shape[2:]))
        return {"input": rng.standard_normal(s).astype(np.float32)}

    return make


def _bert_inputs(seed: int, batch: int = 2, seq: int = 16) -> dict[str, np.ndarray]:
    """Token ids anywhere in the vocabulary; every row attends to a random-length prefix of at
    least one token (so the mask has zeros, as padding gives); two segments."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, BERT_VOCAB, size=(batch, seq), dtype=np.int64)
    lengths = rng.integers(1, seq + 1, size=batch)
    lengths[0] = max(1, seq - 3)  # at least one row certainly has padding
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    split = rng.integers(0, seq + 1, size=batch)
    token_type = (np.arange(seq)[None, :] >= split[:, None]).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_type}


def _gpt2_inputs(seed: int, batch: int = 2, seq: int = 16) -> dict[str, np.ndarray]:
    """Token ids anywhere in the vocabulary; right padding (a random-length prefix of at least
    one token is real), so with the causal mask every query still sees at least one key."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, GPT2_VOCAB, size=(batch, seq), dtype=np.int64)
    lengths = rng.integers(1, seq + 1, size=batch)
    lengths[0] = max(1, seq - 3)  # at least one row certainly has padding
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask}


# name -> (constructor, input shape)
CNN_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet18": (resnet18, (1, 3, 64, 64)),
    "resnet50": (resnet50, (1, 3, 64, 64)),
    "mobilenetv3_small": (MobileNetV3Small, (1, 3, 64, 64)),
    "unet": (UNet, (1, 3, 64, 64)),
}
# Image models with a single "input"; ViT-B/16 at its real size (weights dominate the cost of
# exporting and compiling it, 86M parameters, not the image: 224x224 runs in 0.3 s).
IMAGE_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    **CNN_MODELS,
    "vit_b16": (vit_b16, (1, 3, 224, 224)),
}


@dataclass(frozen=True)
class TextModel:
    """A transformers model taking (batch, sequence) token inputs, all dynamic on both axes."""

    build: Callable[[], nn.Module]
    inputs: list[str]
    # output name -> its dynamic axes
    outputs: dict[str, dict[int, str]]
    make_inputs: Callable[..., dict[str, np.ndarray]]


TEXT_MODELS: dict[str, TextModel] = {
    "bert": TextModel(BertWrapper, ["input_ids", "attention_mask", "token_type_ids"],
                      {"last_hidden_state": {0: "batch", 1: "sequence"}, "pooler_output": {0: "batch"}},
                      _bert_inputs),
    "gpt2": TextModel(GPT2Wrapper, ["input_ids", "attention_mask"],
                      {"last_hidden_state": {0: "batch", 1: "sequence"}}, _gpt2_inputs),
}
MODEL_NAMES = [*IMAGE_MODELS, *TEXT_MODELS]
# Models for the shape-generic tests, kept out of the CPU model tests' list.
CNN_MODELS["yolo_tiny"] = (TinyYolo, (1, 3, 64, 64))


def _bert_base_inputs(seed: int, batch: int = 1, seq: int = 128) -> dict[str, np.ndarray]:
    """As _bert_inputs (padded rows, two segments), with token ids over BERT-base's vocabulary."""
    inputs = _bert_inputs(seed, batch, seq)
    rng = np.random.default_rng([seed, 1])
    inputs["input_ids"] = rng.integers(0, BERT_BASE_VOCAB, size=(batch, seq), dtype=np.int64)
    return inputs


# Full-size models for the GPU benchmarks (benchmarks/peers.py). Registered after MODEL_NAMES:
# the CPU model tests run every name there on the numpy reference backend.
TEXT_MODELS["bert_base"] = TextModel(
    BertBaseWrapper, ["input_ids", "attention_mask", "token_type_ids"],
    {"last_hidden_state": {0: "batch", 1: "sequence"}, "pooler_output": {0: "batch"}}, _bert_base_inputs)


def _randomize(model: nn.Module, seed: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Seeded weights, with BatchNorm statistics that look trained.

    With torch's default initialization and fresh BatchNorm statistics (mean 0, var 1) the
    signal fades layer by layer: MobileNetV3's logits came out the same to 1e-7 for any
    input, so a wrong op early in the network could not change them. Here BatchNorm's running
    statistics are measured on a few random batches (as training would leave them), so every
    layer's activations have unit scale and the outputs depend on the input; BatchNorm's
    affine weights are random too, so a BatchNorm folded the wrong way would show.

    The last BatchNorm of each residual branch gets small weights (0.1 to 0.4), as trained
    ResNets have them. With weights near 1 every block adds a unit-variance branch to the
    residual stream and amplifies rounding error by about 1.5x; ResNet-50's logits then
    differed from a float64 run by 1e-4 in both onnxruntime and rtxrt, float32 itself being
    the limit, which left the comparison little headroom."""
    g = torch.Generator().manual_seed(seed + 1)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    branch_ends = {id(b.bn2) for b in model.modules() if isinstance(b, BasicBlock)}
    branch_ends |= {id(b.bn3) for b in model.modules() if isinstance(b, Bottleneck)}
    with torch.no_grad():
        for m in norms:
            low, width = (0.1, 0.3) if id(m) in branch_ends else (0.5, 1.0)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * width + low)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(2):
            model(torch.randn((8,) + tuple(input_shape[1:]), generator=g))
    return model.eval()


def build_torch(name: str, image_size: int | None = None) -> nn.Module:
    """The torch model ``name`` in eval mode, with the same seeded weights on every call.
    ``image_size`` overrides an image model's height and width (ViT's position table follows
    it; the CNNs' BatchNorm statistics are measured at it)."""
    torch.manual_seed(EXPORT_SEED)
    if name in TEXT_MODELS:
        return TEXT_MODELS[name].build().eval()
    if name == "vit_b16":
        return _randomize_vit(vit_b16(image_size or IMAGE_MODELS[name][1][-1]), EXPORT_SEED)
    ctor, shape = CNN_MODELS[name]  # (yolo_tiny is in CNN_MODELS but not IMAGE_MODELS)
    return _randomize(ctor(), EXPORT_SEED, _image_shape(shape, image_size))


def _image_shape(shape: tuple[int, ...], image_size: int | None) -> tuple[int, ...]:
    return shape if image_size is None else (*shape[:-2], image_size, image_size)


def export(name: str, path: str | os.PathLike, image_size: int | None = None, *,
           dynamic_size: bool = False, dynamo: bool = False) -> ExportedModel:
    """Export model ``name`` (one of MODEL_NAMES) with seeded random weights to ``path``;
    ``image_size`` (image models only) replaces the zoo's default height and width;
    ``dynamic_size``: the image's batch, height and width are symbolic in the export;
    ``dynamo``: with torch's dynamo exporter (today's default; it writes shape arithmetic
    its own way) instead of the TorchScript one."""
    path = os.fspath(path)
    model = build_torch(name, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in TEXT_MODELS:
            spec = TEXT_MODELS[name]
            sample = spec.make_inputs(EXPORT_SEED, batch=2, seq=16)
            args = tuple(torch.from_numpy(sample[n]) for n in spec.inputs)
            dynamic = {n: {0: "batch", 1: "sequence"} for n in spec.inputs} | spec.outputs
            if dynamo:
                _export_dynamo(model, args, path, spec.inputs, {n: dynamic[n] for n in spec.inputs})
                return ExportedModel(name, path, spec.make_inputs, list(spec.inputs), _output_names(path))
            torch.onnx.export(
                model, args, path, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                input_names=spec.inputs, output_names=list(spec.outputs), dynamic_axes=dynamic,
            )
            return ExportedModel(name, path, spec.make_inputs, list(spec.inputs), list(spec.outputs))
        make = _image_inputs(_image_shape(CNN_MODELS.get(name, IMAGE_MODELS.get(name))[1], image_size))
        x = torch.from_numpy(make(EXPORT_SEED)["input"])
        axes = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch"}} if dynamic_size else None
        if dynamo:
            _export_dynamo(model, (x,), path, ["input"], {"input": axes["input"]} if axes else None)
            return ExportedModel(name, path, make, ["input"], _output_names(path))
        torch.onnx.export(
            model, (x,), path, dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=["input"], output_names=["output"], dynamic_axes=axes,
        )
        return ExportedModel(name, path, make, ["input"], ["output"])


def _export_dynamo(model: nn.Module, args: tuple, path: str, inputs: list[str],
                   dynamic: dict[str, dict[int, str]] | None) -> None:
    # (by position: torch.export names them by the forward's parameters, not the graph's inputs)
    shapes = tuple({axis: torch.export.Dim.AUTO for axis in dynamic.get(n, {})} for n in inputs) if dynamic else None
    torch.onnx.export(model, args, path, dynamo=True, opset_version=max(OPSET, 18), input_names=inputs,
                      dynamic_shapes=shapes, verbose=False)


def _output_names(path: str) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(path, load_external_data=False).graph.output]
