"""SAPHNet: Spatially-Attentive Patch-Hierarchical Network (Suin, Purohit and
Rajagopalan, "Spatially-Attentive Patch-Hierarchical Network for Adaptive Motion
Deblurring", CVPR 2020), per shared/specs/models/saphnet.md.

    model = deblurfast.models.create("saphnet")                 # variant (b): learnable offsets
    model = deblurfast.models.create("saphnet", offsets=False)  # variant (a) of the paper's Table 1
    deblurfast.accelerate(model)
    sharp = deblurfast.deblur(model, blurry_rgb_uint8)

Architecture (defaults = the paper's; every number is a constructor argument)
----------------------------------------------------------------------------
A DMPHN-style patch hierarchy of ``levels=3`` levels; level ``l`` (1 = top)
cuts the image into 2**(l-1) non-overlapping patches: level 3 into a 2x2 grid,
level 2 into top/bottom halves, level 1 keeps the whole image. Each level has
its own encoder and decoder (no weight sharing). Patches always travel through
the batch dimension, so every level runs each layer once on all its patches:

- Level 3: encode the 4 patches of B; stitch left/right pairs into two
  half-image features g3 (the encoder block outputs the decoder attends to are
  stitched the same way); decode each half: r3 (two half-image residuals).
- Level 2: encode the halves of B plus r3 -> f2; f2 <- CLA(f2, g3); stitch
  top/bottom into g2 (full size); decode g2 -> r2.
- Level 1: encode B + r2 -> f1; f1 <- CLA(f1, g2); decode -> r1.
- Output B + r1. ``forward(x, return_all=True)`` also returns the lower levels'
  images B + r3 (the two halves stitched back into one image) and B + r2, for
  per-level supervision.

With more levels the splits alternate between H and W (H first): level 4 would
cut each level-3 patch into top/bottom halves again.

Encoder: conv3x3 3 -> C/2**M, then M stride-2 conv3x3 doubling the width up to
C (32 -> 64 -> 128), each followed by LeakyReLU(0.2); then N residual blocks.
Decoder: N residual blocks with cross encoder-decoder attention (decoder block
i attends to encoder block N-1-i's output), M transposed conv 4x4 stride 2
halving the width, each followed by LeakyReLU(0.2), and conv3x3 C/2**M -> 3
without activation: a residual image.

Residual block: x + conv2(CAM(lrelu(conv1(x)))), 3x3 convs, C -> C.

Content-aware module CAM(x, enc=None), Sec. 3 / Eqs. 2-13:
- global branch ``attention`` = deblurfast.nn.EfficientAttention: m1 =
  sigmoid(conv1x1(x)), xm = x*m1; value = xm (self) or enc*sigmoid(conv1x1(enc))
  (cross, decoder); key = conv1x1(value) -> C2, query = conv1x1(xm) -> C2, gate =
  sigmoid(linear(gap(xm))); y_att = efficient_attention(...) / C2.
- local branch ``pdf`` = deblurfast.nn.PixelDependentFilter: V = conv3x3(x) ->
  k*k (no activation), offsets = max_offset * tanh(conv3x3(x) -> 2*k*k),
  y_dyn = deform_conv2d(x, offsets, W (C x C x k x k), bias, padding=k//2, mask=V);
  with ``offsets=False`` there is no offset conv and the op gets offset=None.
- fusion: Mf = sigmoid(conv3x3(x) -> 1); y = Mf*y_att + (1 - Mf)*y_dyn.

Cross-level attention (levels below the bottom one) CLA(f, g):
f + efficient_attention(value=g*sigmoid(conv1x1(g)), key=conv1x1(value),
query=conv1x1(f), gate=sigmoid(linear(gap(f)))) / C2 -- query and gate come from
f itself, without a spatial mask (as the spec writes it).

Parameters at the defaults: 15,538,686 with offsets (variant b), 14,500,986
without (variant a); ``SAPHNet.num_parameters()`` returns the count. The paper
reports about 23 M; the spec's layer list gives these.

What is accelerated
-------------------
The layers with a ``backend`` attribute, built with backend="reference" and
switched by deblurfast.accelerate(): every CAM's ``pdf`` (deform_conv2d 5x5
C -> C with mask = V; CPU, CUDA and Triton kernels) and ``attention``
(efficient_attention: Triton kernels), and each CLA (efficient_attention).
Plain convolutions stay PyTorch's.

Conventions
-----------
RGB in [0, 1] (the output is clamped to [0, 1] by deblurfast.deblur). The
forward needs H and W to be multiples of ``size_multiple`` (2**M times the
bottom level's patch grid: 8 at the defaults) and raises otherwise; the
inference convention pads to a multiple of 16 by reflection and crops back (the
spec's rule). ``forward`` returns a tensor (N, 3, H, W), not clamped.

Choices where the paper is silent (SAPHNet released no code or weights)
--------------------------------------------------------------------
- Layer sizes, kernel sizes, where the activations go, the CLA formula and the
  encoder/decoder layout are the spec's (listed above). The paper's ablation
  (Table 3) mentions decoder self- and cross-attention; following the spec, a
  decoder CAM does cross-attention only (query, gate and mask m1 from the
  decoder feature, value and key from the encoder feature).
- LeakyReLU(0.2) also follows each transposed conv of the decoder (the mirror
  of the encoder's stem), otherwise the decoder tail would be linear; none
  follows the last conv (the residual image).
- All convolutions and the gate Linear have biases; padding keeps sizes (3x3:
  1, 4x4 transposed stride 2: 1). Initialization is PyTorch's default, except
  the offset convs, which start at zero (offsets start on the regular grid)
  and the PDF weight (kaiming-uniform, as deblurfast.nn.PixelDependentFilter does).
- The decoder attends to the encoder's residual-block outputs before the CLA
  refinement; at levels whose decoder works on stitched patches (level 3's
  halves) those encoder features are stitched the same way, so each decoder
  block attends to the feature map of its own (half-)image.
- The lower-level feature passed up the hierarchy is the encoder output after
  the CLA (g3 = level 3's encoder output, which has no CLA; g2 = the refined f2).
- Intermediate outputs for supervision are full images: B + stitch(r3), B + r2.

State-dict keys are deblurfast's own (there is no official checkpoint), e.g.
``levels.0.encoder.blocks.2.cam.pdf.weight``: ``levels.{l-1}`` is level l
(``levels.0`` the top, full-image level), with ``encoder.stem.{i}``,
``encoder.blocks.{i}.{conv1,cam,conv2}``, ``cam.{attention,pdf,fusion}``,
``decoder.blocks.{i}``, ``decoder.up.{i}``, ``decoder.out`` and ``cla`` (all
levels but the bottom one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import EfficientAttention, PixelDependentFilter
from ..nn.efficient_attention import gated_attention, spatially_masked
from .registry import IOConvention, register_model

PAPER = ("Suin, Purohit, Rajagopalan: Spatially-Attentive Patch-Hierarchical Network for Adaptive Motion "
         "Deblurring, CVPR 2020")
# Receptive field at the paper's configuration: 3 levels in a chain, each 4 (stem) + 6 residual blocks x
# 4 x (conv 1 + PDF 5x5 reach 2 + offsets up to 4 + conv 1) + 4 (decoder up-sampling and output) = 200.
IO = IOConvention(channel_order="RGB", value_range=(0.0, 1.0), multiple=16, pad_mode="reflect", clamp=True,
                  min_size=16, receptive_field=600,
                  global_context="efficient attention over the whole image, and the patch hierarchy cuts the "
                  "image it is given into halves and quarters")


class ContentAwareModule(nn.Module):
    """CAM(x, enc=None): global attention and pixel-dependent filtering, fused per pixel (Eqs. 12-13)."""

    def __init__(self, channels: int, maps: int, cross: bool, kernel_size: int, max_offset: float, offsets: bool):
        super().__init__()
        self.attention = EfficientAttention(channels, maps, cross=cross, backend="reference")
        self.pdf = PixelDependentFilter(channels, kernel_size=kernel_size, max_offset=max_offset, offsets=offsets,
                                        backend="reference")
        self.fusion = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, enc: torch.Tensor | None = None) -> torch.Tensor:
        m = torch.sigmoid(self.fusion(x))
        return m * self.attention(x, enc) + (1 - m) * self.pdf(x)


class ResBlock(nn.Module):
    """x + conv2(CAM(lrelu(conv1(x)), enc))."""

    def __init__(self, channels: int, maps: int, cross: bool, kernel_size: int, max_offset: float, offsets: bool,
                 negative_slope: float):
        super().__init__()
        self.negative_slope = negative_slope
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.cam = ContentAwareModule(channels, maps, cross, kernel_size, max_offset, offsets)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, enc: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.conv2(self.cam(F.leaky_relu(self.conv1(x), self.negative_slope), enc))


class Encoder(nn.Module):
    """Stem (3 -> C/2**M, then M stride-2 convs up to C, LeakyReLU after each) and N ResBlocks.
    forward returns the list of the N block outputs (the last is the encoder's output)."""

    def __init__(self, channels, maps, num_blocks, num_downsamplings, kernel_size, max_offset, offsets,
                 negative_slope):
        super().__init__()
        self.negative_slope = negative_slope
        widths = [channels >> (num_downsamplings - i) for i in range(num_downsamplings + 1)]
        self.stem = nn.ModuleList([nn.Conv2d(3, widths[0], 3, padding=1)] + [
            nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths[:-1], widths[1:])])
        self.blocks = nn.ModuleList(
            ResBlock(channels, maps, False, kernel_size, max_offset, offsets, negative_slope)
            for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        for conv in self.stem:
            x = F.leaky_relu(conv(x), self.negative_slope)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


class Decoder(nn.Module):
    """N ResBlocks with cross encoder-decoder attention (block i attends to encoder block N-1-i),
    M transposed convs 4x4 stride 2 halving the width (LeakyReLU after each), conv3x3 -> 3."""

    def __init__(self, channels, maps, num_blocks, num_downsamplings, kernel_size, max_offset, offsets,
                 negative_slope):
        super().__init__()
        self.negative_slope = negative_slope
        widths = [channels >> i for i in range(num_downsamplings + 1)]
        self.blocks = nn.ModuleList(
            ResBlock(channels, maps, True, kernel_size, max_offset, offsets, negative_slope)
            for _ in range(num_blocks))
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)
                                for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, x: torch.Tensor, encs: list[torch.Tensor]) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, encs[len(encs) - 1 - i])
        for up in self.up:
            x = F.leaky_relu(up(x), self.negative_slope)
        return self.out(x)


class CrossLevelAttention(nn.Module):
    """CLA(f, g) = f + efficient_attention(value = g*sigmoid(mask_conv(g)), key = key_conv(value),
    query = query_conv(f), gate = sigmoid(gate_fc(gap(f)))) / C2.

    f: this level's encoder output, g: the lower level's feature stitched to f's size.
    ``backend`` is that of the attention op (accelerate() switches it)."""

    def __init__(self, channels: int = 128, maps: int = 32, backend: str | None = "reference"):
        super().__init__()
        self.channels, self.maps, self.backend = channels, maps, backend
        self.mask_conv = nn.Conv2d(channels, 1, 1)
        self.key_conv = nn.Conv2d(channels, maps, 1)
        self.query_conv = nn.Conv2d(channels, maps, 1)
        self.gate_fc = nn.Linear(channels, channels)

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if f.shape != g.shape:
            raise ValueError(f"CrossLevelAttention: f {tuple(f.shape)} and g {tuple(g.shape)} must have one shape")
        return f + gated_attention(self, spatially_masked(g, self.mask_conv), f, f)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, maps={self.maps}, backend={self.backend!r}"


class Level(nn.Module):
    """One level of the hierarchy: its own encoder, decoder and (except at the bottom) CLA."""

    def __init__(self, cla: bool, **kw):
        super().__init__()
        self.encoder = Encoder(**kw)
        self.decoder = Decoder(**kw)
        self.cla = CrossLevelAttention(kw["channels"], kw["maps"], backend="reference") if cla else None


def _halves(x: torch.Tensor, dim: int) -> list[torch.Tensor]:
    """x.chunk(2, dim) of an even size, as two slices (chunk of a dynamic size exports as a split
    that ONNX constant folding rejects)."""
    half = x.shape[dim] // 2
    return [x.narrow(dim, 0, half), x.narrow(dim, half, half)]


def _split(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Cuts every image of the batch in two along `dim`; the first halves, then the second ones."""
    return torch.cat(_halves(x, dim), dim=0)


def _stitch(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of _split."""
    return torch.cat(_halves(x, 0), dim=dim)


class SAPHNet(nn.Module):
    """SAPHNet (Suin et al., CVPR 2020); see this module's docstring for the architecture,
    the conventions and every choice the paper leaves open.

    Args:
        channels: C, width of every residual block / content-aware module. Default 128.
        attention_maps: C2, attention maps of every efficient attention. Default 32.
        num_blocks: N, residual blocks in each encoder and in each decoder. Default 3.
        num_downsamplings: M, stride-2 convs per encoder (mirrored by transposed convs). Default 2.
        kernel_size: PDF kernel size k. Default 5.
        max_offset: Δmax, the PDF offset bound (Δ = Δmax * tanh(raw)). Default 4.
        offsets: learnable PDF offsets: True = variant (b) of Table 1, False = variant (a)
            (the op runs with offset=None). Default True.
        negative_slope: of the LeakyReLUs. Default 0.2.
        levels: levels of the patch hierarchy; level l has 2**(l-1) patches (4/2/1). Default 3.
    """

    def __init__(self, channels: int = 128, attention_maps: int = 32, num_blocks: int = 3,
                 num_downsamplings: int = 2, kernel_size: int = 5, max_offset: float = 4.0, offsets: bool = True,
                 negative_slope: float = 0.2, levels: int = 3):
        super().__init__()
        for name, v, lo in (("channels", channels, 1), ("attention_maps", attention_maps, 1),
                            ("num_blocks", num_blocks, 1), ("num_downsamplings", num_downsamplings, 0),
                            ("kernel_size", kernel_size, 1), ("levels", levels, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"SAPHNet: {name} must be an int >= {lo}, got {v!r}")
        if channels % (1 << num_downsamplings):
            raise ValueError(f"SAPHNet: channels={channels} must be divisible by 2**num_downsamplings="
                             f"{1 << num_downsamplings} (the stem widths are channels / 2**i)")
        self.config = dict(channels=channels, attention_maps=attention_maps, num_blocks=num_blocks,
                           num_downsamplings=num_downsamplings, kernel_size=kernel_size, max_offset=max_offset,
                           offsets=offsets, negative_slope=negative_slope, levels=levels)
        self.num_levels = levels
        # Split k of the image (k = 0, 1, ...) cuts along H (dim 2) when k is even, along W (dim 3) when odd.
        self.split_dims = [2 if k % 2 == 0 else 3 for k in range(levels - 1)]
        rows = 1 << self.split_dims.count(2)
        cols = 1 << self.split_dims.count(3)
        self.size_multiple_hw = (rows << num_downsamplings, cols << num_downsamplings)
        self.size_multiple = max(self.size_multiple_hw)
        kw = dict(channels=channels, maps=attention_maps, num_blocks=num_blocks, num_downsamplings=num_downsamplings,
                  kernel_size=kernel_size, max_offset=max_offset, offsets=offsets, negative_slope=negative_slope)
        self.levels = nn.ModuleList(Level(cla=l < levels, **kw) for l in range(1, levels + 1))

    def num_parameters(self) -> int:
        """The exact number of parameters (15,538,686 at the defaults; 14,500,986 with offsets=False)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """x: (N, 3, H, W) RGB in [0, 1], H and W multiples of ``size_multiple_hw``.

        Returns B + r1, (N, 3, H, W); with return_all=True, the list of every level's
        image from the bottom level up, [B + r3, B + r2, B + r1] at the defaults (the
        last is the output; lower levels' residuals are stitched into full images)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"SAPHNet: x must be (N, 3, H, W), got {shape}")
        mh, mw = self.size_multiple_hw
        if x.shape[2] % mh or x.shape[3] % mw:
            raise ValueError(f"SAPHNet: H and W must be multiples of ({mh}, {mw}), got {tuple(x.shape[2:])}; "
                             "deblurfast.deblur pads and crops back")
        dims = self.split_dims
        residual = g = None  # in the layout (patches) of the level being processed
        images = []
        for l in range(self.num_levels, 0, -1):
            level = self.levels[l - 1]
            inp = x
            for d in dims[:l - 1]:
                inp = _split(inp, d)
            if residual is not None:
                inp = inp + residual
            encs = level.encoder(inp)
            f = encs[-1]
            if level.cla is not None:
                f = level.cla(f, g)
            if l > 1:  # stitch pairs of patches: the decoder and the level above work on the pairs
                encs = [_stitch(e, dims[l - 2]) for e in encs]
                f = _stitch(f, dims[l - 2])
            g = f
            residual = level.decoder(f, encs)
            if return_all or l == 1:
                full = residual  # in the layout of level l - 1: undo its l - 2 splits
                for d in reversed(dims[:max(l - 2, 0)]):
                    full = _stitch(full, d)
                images.append(x + full)
        return images if return_all else images[-1]


@register_model("saphnet", IO, PAPER)
def saphnet(**config) -> SAPHNet:
    """SAPHNet; offsets=False gives variant (a) of the paper's Table 1, the default variant (b)."""
    return SAPHNet(**config)
