"""RDAFNet, single-stage (``rdafnet_ss``) and multi-stage (``rdafnet_ms``).

Paper: X. Hua, M. Li, J. Fei, J. Liu, Y. Shi, H. Hong, "Dynamic Scene Deblurring Based on
Continuous Cross-Layer Attention Transmission". Spec: shared/specs/models/rdafnet.md (the
authors' code, github.com/xjmz6/RDAFNet, is authoritative where it differs from the paper).

Building block: the residual dense attention fusion block (:class:`RDAFB`, 2·width channels):
four 3×3 reflect-padded conv + InstanceNorm layers; a pixel attention map σ(1×1 conv) is computed
before the first conv and after each of the first three; each later map is fused with all the
earlier ones (concat → 1×1 conv → depthwise-separable 3×3 conv) and multiplies the current conv
output; the block ends with ReLU(F4 + x).

- ``rdafnet_ss`` (:class:`RDAFNetSS`, 14,195,072 parameters at paper size): 7×7 stem, stride-2
  4×4 conv, 16 RDAFBs, stride-2 transposed conv, concat with the stem feature, 5×5 conv, 7×7
  conv, tanh, + input, clamp. Returns one tensor.
- ``rdafnet_ms`` (:class:`RDAFNetMS`, 28,967,302 parameters): three such encoder-decoders
  (10, 10, 12 RDAFBs) linked by a supervised attention module (SAM) and cross-stage feature
  fusion (CSFF). Returns (stage 1, stage 2, stage 3) images; the last is the result.

Accelerated: nothing yet. RDAFNet has no deformable conv, dynamic filter, attention or strip
pooling, so the model holds no deblurfast layer (no module with a ``backend`` attribute):
``deblurfast.accelerate`` only changes the dtype / memory format, and the outputs stay those of
the plain PyTorch model. The fusion candidates of shared/specs/ops.md §5 are isolated in small
modules so that a fused version can replace them without touching the checkpoint keys:
:class:`PixelAttention` (σ(1×1 conv), key ``attn_i.attn.0``), :class:`AttentionFusion`
(stateless: feature ⊙ DSC(1×1 conv(concat(maps))), reading the block's ``c_i`` / ``conv_c_i``
weights) and :class:`DepthwiseSeparableConv`.

Conventions (``model.io``): RGB in [−1, 1] (to_tensor, Normalize(0.5, 0.5)); H and W even
(bottom/right reflect padding to a multiple of 2, as the authors' ``test_deblur_NR.py`` does)
and H/2, W/2 ≥ 2 (the reflect padding inside the blocks); outputs clamped to [−1, 1].

Faithful behaviour (defaults) and flags:
- The clamp to [−1, 1] is inside ``forward`` (both variants, every MS output), as in the authors'
  code; it is also applied to the outputs used in their loss, which zeroes the gradient of
  saturated pixels. ``clamp_output=False`` returns the unclamped images (clean variant, e.g. for
  training without dead gradients); ``deblurfast.deblur`` still clamps.
- SS applies tanh before the residual add; MS has no tanh (not unified).
- CSFF features are added *before* block ``csff_index[s]`` of stages 2 and 3, and the encoder
  feature handed on from stage 2 is the post-addition tensor (defaults (5, 5, 6): the block
  counts halved, i.e. stage-1 E1 = output of block 4).
- The RDAFB follows the code, not the paper: the fused attention multiplies the current conv
  output (paper Eq. 4: the block input) and the residual sum is followed by ReLU (paper Eq. 7:
  no ReLU). No flag: the released weights were trained with the code's block.
- InstanceNorm2d without affine parameters and without running statistics (train = eval).

Weights: ``log/deblur/{SSRDAFNet,MSRDAFNet}/models/GoPro.pth`` (and ``log/derain/MSRDAFNet/models/
SPAD.pth``), saved as ``{'epoch', 'state_dict', 'optimizer'}``, keys with or without a
``module.`` prefix; ``deblurfast.models.load_pretrained(model, path)`` reads both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .registry import IOConvention, register_model

PAPER = ("X. Hua, M. Li, J. Fei, J. Liu, Y. Shi, H. Hong, \"Dynamic Scene Deblurring Based on Continuous "
         "Cross-Layer Attention Transmission\" (RDAFNet); code: github.com/xjmz6/RDAFNet")

# Receptive fields (measured gradient support with the normalization left out): SS 235, MS 399.
# H, W >= 4: the reflect padding inside the blocks at half resolution.
GLOBAL_CONTEXT = "instance normalization over the whole image"
IO_SS = IOConvention(channel_order="RGB", value_range=(-1.0, 1.0), multiple=2, pad_mode="reflect", clamp=True,
                     output=None, min_size=4, receptive_field=235, global_context=GLOBAL_CONTEXT)
IO_MS = IOConvention(channel_order="RGB", value_range=(-1.0, 1.0), multiple=2, pad_mode="reflect", clamp=True,
                     output=-1, min_size=4, receptive_field=399, global_context=GLOBAL_CONTEXT)

NEGATIVE_SLOPE = 0.2


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


def _check_image(x: torch.Tensor, channels: int, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: x must be (N, {channels}, H, W), got {shape}")
    H, W = x.shape[-2:]
    if H % 2 or W % 2 or H < 4 or W < 4:
        raise ValueError(f"{name}: H and W must be even and at least 4 (the stride-2 encoder and the reflect "
                         f"padding at half resolution), got {H}x{W}; pad to a multiple of 2 first "
                         f"(deblurfast.deblur does)")


class PixelAttention(nn.Module):
    """σ(1×1 conv(x)): the pixel attention map (the authors' ``attention``; keys ``attn.0.*``).

    Returns the map, not the gated feature. A fusion candidate (ops.md §5)."""

    def __init__(self, channels: int):
        super().__init__()
        self.attn = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3×3 (zero padding) then pointwise 1×1, no biases (the authors' ``DSC``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AttentionFusion(nn.Module):
    """feature ⊙ dsc(reduce(concat(maps))): one attention-fusion step of the RDAFB.

    Stateless: the weights are the block's ``c_i`` (``reduce``) and ``conv_c_i`` (``dsc``), so
    the checkpoint keys stay the authors'. The fused map has no sigmoid and is unbounded. A
    fusion candidate (ops.md §5): a fused kernel would replace this module."""

    def forward(self, feature: torch.Tensor, maps: Sequence[torch.Tensor], reduce: nn.Conv2d,
                dsc: DepthwiseSeparableConv) -> torch.Tensor:
        return feature * dsc(reduce(torch.cat(list(maps), dim=1)))


def _conv_in(channels: int, activation: bool) -> nn.Sequential:
    """3×3 reflect-padded conv (bias) → InstanceNorm2d (no affine, no running stats) [→ LReLU]."""
    layers = [nn.Conv2d(channels, channels, 3, 1, 1, bias=True, padding_mode="reflect"),
              nn.InstanceNorm2d(channels)]
    if activation:
        layers.append(_lrelu())
    return nn.Sequential(*layers)


class RDAFB(nn.Module):
    """Residual dense attention fusion block (the authors' ``base_block``), `channels` wide.

    Order (spec §3): A1 = attn_1(x); F1 = conv_1(x ⊙ A1); A2 = attn_2(F1);
    F1 ← F1 ⊙ conv_c1(c1[A1, A2]); F2 = conv_2(F1); A3 = attn_3(F2); F2 ← F2 ⊙ conv_c2(c2[A1..A3]);
    F3 = conv_3(F2); A4 = attn_4(F3); F3 ← F3 ⊙ conv_c3(c3[A1..A4]); out = ReLU(conv_4(F3) + x).
    Needs H, W ≥ 2 (reflect padding)."""

    def __init__(self, channels: int = 128):
        super().__init__()
        n = channels
        # Registration order = the official state_dict order (spec §4).
        self.attn_1 = PixelAttention(n)
        self.conv_1 = _conv_in(n, activation=True)
        self.attn_2 = PixelAttention(n)
        self.conv_2 = _conv_in(n, activation=True)
        self.attn_3 = PixelAttention(n)
        self.conv_3 = _conv_in(n, activation=True)
        self.attn_4 = PixelAttention(n)
        self.conv_4 = _conv_in(n, activation=False)
        self.c1 = nn.Conv2d(2 * n, n, 1)
        self.c2 = nn.Conv2d(3 * n, n, 1)
        self.c3 = nn.Conv2d(4 * n, n, 1)
        self.conv_c1 = DepthwiseSeparableConv(n)
        self.conv_c2 = DepthwiseSeparableConv(n)
        self.conv_c3 = DepthwiseSeparableConv(n)
        self.fuse = AttentionFusion()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1 = self.attn_1(x)
        f1 = self.conv_1(x * a1)
        a2 = self.attn_2(f1)
        f1 = self.fuse(f1, (a1, a2), self.c1, self.conv_c1)
        f2 = self.conv_2(f1)
        a3 = self.attn_3(f2)
        f2 = self.fuse(f2, (a1, a2, a3), self.c2, self.conv_c2)
        f3 = self.conv_3(f2)
        a4 = self.attn_4(f3)
        f3 = self.fuse(f3, (a1, a2, a3, a4), self.c3, self.conv_c3)
        return torch.relu(self.conv_4(f3) + x)


class RDAFNetSS(nn.Module):
    """Single-stage RDAFNet (the authors' ``SSRDAFNet.Encoder_Decoder``).

    channels: image channels (3). width: stem width ngf (64); the blocks run at 2·width.
    num_blocks: RDAFBs (16). clamp_output: clamp the result to [−1, 1] inside forward (the
    authors' behaviour, default); False returns tanh(...) + x unclamped.
    forward((N, C, H, W) in [−1, 1], H and W even, ≥ 4) -> (N, C, H, W)."""

    checkpoint_keys = ("state_dict",)

    def __init__(self, channels: int = 3, width: int = 64, num_blocks: int = 16, clamp_output: bool = True):
        super().__init__()
        if num_blocks < 0 or width < 1 or channels < 1:
            raise ValueError(f"RDAFNetSS: need channels, width >= 1 and num_blocks >= 0, got channels={channels}, "
                             f"width={width}, num_blocks={num_blocks}")
        self.channels, self.clamp_output = channels, clamp_output
        w = width
        self.first = nn.Sequential(nn.Conv2d(channels, w, 7, 1, 3, bias=False), _lrelu())
        self.second = nn.Sequential(
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), _lrelu(),
            *[RDAFB(2 * w) for _ in range(num_blocks)],
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), _lrelu(),
        )
        self.third = nn.Sequential(
            nn.Conv2d(2 * w, w, 5, 1, 2, bias=False), _lrelu(),
            nn.Conv2d(w, channels, 7, 1, 3, bias=False), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.channels, "RDAFNetSS")
        e = self.first(x)
        d = self.second(e)
        y = self.third(torch.cat([e, d], dim=1)) + x
        return y.clamp(-1.0, 1.0) if self.clamp_output else y


class SupervisedAttention(nn.Module):
    """The modified SAM (the authors' ``SAM_m``): img = conv2(x) + I; S = conv1(x) ⊙ σ(conv3(img)) + x.

    forward(x, image) -> (S, img)."""

    def __init__(self, width: int = 64, channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 1)
        self.conv2 = nn.Conv2d(width, channels, 7, 1, 3)
        self.conv3 = nn.Conv2d(channels, width, 1)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.conv2(x) + image
        return self.conv1(x) * torch.sigmoid(self.conv3(img)) + x, img


def _run_blocks(blocks: nn.ModuleList, x: torch.Tensor, index: int,
                csff: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs `blocks`; before block `index` adds the two CSFF features (x + a + b, left to right).
    Returns (the input of block `index` after the addition, the last block's output)."""
    mid = None
    for i, block in enumerate(blocks):
        if i == index:
            if csff is not None:
                x = x + csff[0] + csff[1]
            mid = x
        x = block(x)
    return mid, x


class RDAFNetMS(nn.Module):
    """Multi-stage RDAFNet (the authors' ``MSRDAFNet.Encoder_Decoder``).

    channels: image channels (3). width: ngf (64); the blocks run at 2·width. num_blocks: RDAFBs
    per stage ((10, 10, 12)). csff_index: per stage, the block before which the cross-stage
    features are taken/added (stage 1: E1 is the input of that block, i.e. the previous block's
    output; stages 2, 3: the CSFF sum is added there); default: each stage's count // 2 = (5, 5, 6).
    clamp_output: clamp the three images to [−1, 1] inside forward (the authors' behaviour).
    forward((N, C, H, W) in [−1, 1], H and W even, ≥ 4) -> (stage 1, stage 2, stage 3) images;
    the last is the result (model.io.output = -1)."""

    checkpoint_keys = ("state_dict",)

    def __init__(self, channels: int = 3, width: int = 64, num_blocks: Sequence[int] = (10, 10, 12),
                 csff_index: Sequence[int] | None = None, clamp_output: bool = True):
        super().__init__()
        num_blocks = tuple(int(n) for n in num_blocks)
        if len(num_blocks) != 3 or min(num_blocks) < 1 or width < 1 or channels < 1:
            raise ValueError(f"RDAFNetMS: num_blocks must be three counts >= 1 and channels, width >= 1, got "
                             f"num_blocks={num_blocks}, channels={channels}, width={width}")
        csff_index = tuple(n // 2 for n in num_blocks) if csff_index is None else tuple(int(k) for k in csff_index)
        if len(csff_index) != 3 or any(not 0 <= k < n for k, n in zip(csff_index, num_blocks)):
            raise ValueError(f"RDAFNetMS: csff_index must be three block indices within num_blocks={num_blocks}, "
                             f"got {csff_index}")
        self.channels, self.num_blocks, self.csff_index, self.clamp_output = channels, num_blocks, csff_index, \
            clamp_output
        w = width
        # Creation order = the official state_dict order (spec §4): the block lists first.
        self.body_block_1 = nn.ModuleList(RDAFB(2 * w) for _ in range(num_blocks[0]))
        self.body_block_2 = nn.ModuleList(RDAFB(2 * w) for _ in range(num_blocks[1]))
        self.body_block_3 = nn.ModuleList(RDAFB(2 * w) for _ in range(num_blocks[2]))
        for s in (1, 2, 3):
            setattr(self, f"stage_{s}_enc_1", nn.Sequential(nn.Conv2d(channels, w, 7, 1, 3, bias=False), _lrelu()))
            setattr(self, f"stage_{s}_enc_2", nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), _lrelu()))
            if s > 1:
                setattr(self, f"csff_{s}_enc_1", nn.Conv2d(2 * w, 2 * w, 1))
                setattr(self, f"csff_{s}_dec_1", nn.Conv2d(2 * w, 2 * w, 1))
            setattr(self, f"stage_{s}_dec_1",
                    nn.Sequential(nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), _lrelu()))
            setattr(self, f"stage_{s}_dec_2", nn.Sequential(nn.Conv2d(2 * w, w, 5, 1, 2, bias=False), _lrelu()))
        self.sam12 = SupervisedAttention(w, channels)
        self.cat12 = nn.Conv2d(2 * w, w, 1)
        self.sam23 = SupervisedAttention(w, channels)
        self.cat23 = nn.Conv2d(2 * w, w, 1)
        self.last_conv = nn.Conv2d(w, channels, 7, 1, 3, bias=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_image(image, self.channels, "RDAFNetMS")
        k1, k2, k3 = self.csff_index
        # Stage 1
        x1 = self.stage_1_enc_1(image)
        e1, d1 = _run_blocks(self.body_block_1, self.stage_1_enc_2(x1), k1)
        x5 = self.stage_1_dec_2(torch.cat([x1, self.stage_1_dec_1(d1)], dim=1))
        s12, out1 = self.sam12(x5, image)
        # Stage 2
        y3 = self.cat12(torch.cat([self.stage_2_enc_1(image), s12], dim=1))
        e2, d2 = _run_blocks(self.body_block_2, self.stage_2_enc_2(y3), k2,
                             (self.csff_2_enc_1(e1), self.csff_2_dec_1(d1)))
        y7 = self.stage_2_dec_2(torch.cat([y3, self.stage_2_dec_1(d2)], dim=1))
        s23, out2 = self.sam23(y7, image)
        # Stage 3
        z0 = self.cat23(torch.cat([self.stage_3_enc_1(image), s23], dim=1))
        _, z3 = _run_blocks(self.body_block_3, self.stage_3_enc_2(z0), k3,
                            (self.csff_3_enc_1(e2), self.csff_3_dec_1(d2)))
        z5 = self.stage_3_dec_2(torch.cat([z0, self.stage_3_dec_1(z3)], dim=1))
        out3 = self.last_conv(z5) + image
        if self.clamp_output:
            return out1.clamp(-1.0, 1.0), out2.clamp(-1.0, 1.0), out3.clamp(-1.0, 1.0)
        return out1, out2, out3


@register_model("rdafnet_ss", IO_SS, PAPER)
def rdafnet_ss(**config) -> RDAFNetSS:
    """Single-stage RDAFNet; keywords: channels, width, num_blocks, clamp_output."""
    return RDAFNetSS(**config)


@register_model("rdafnet_ms", IO_MS, PAPER)
def rdafnet_ms(**config) -> RDAFNetMS:
    """Multi-stage RDAFNet; keywords: channels, width, num_blocks, csff_index, clamp_output."""
    return RDAFNetMS(**config)
