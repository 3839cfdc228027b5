"""BANet and BANet+: Tsai, Peng, Tsai, Lin, Lin, "BANet: A Blur-Aware Attention Network for
Dynamic Scene Deblurring", IEEE TIP 2022 (official code: github.com/pp00704831/BANet-TIP-2022).
Spec: shared/specs/models/banet.md (the 2022 architecture; the 2021 arXiv one is not built).

Registered models
-----------------
- ``banet`` -> :class:`BANet` (C = 128, 17,988,547 parameters at paper size).
- ``banet_plus`` -> :class:`BANetPlus` (C = 192 and a C-wide BA fusion, 40,768,131 parameters).

Both: a 3x3 conv to ``stem_channels`` (64) at full resolution, a stride-2 3x3 conv to C at half
resolution, ``num_bams`` (10) blur-aware modules (BAM), a stride-2 transposed conv back to full
resolution, concat with the full-resolution feature (decoder feature first), two 3x3 convs to a
residual that is added to the input. A BAM runs two branches on LReLU(input_conv(t)): blur-aware
attention (BA: multi-kernel strip pooling + attention refinement, ``deblurfast.nn.BlurAwareAttention``)
and a cascaded parallel dilated convolution (two rows of dilation-1/3/5 convs bridged by a 3x3
conv); ``final_conv`` fuses [CPDC, BA], the BAM input is added and LReLU(0.2) applied.

What is accelerated
-------------------
Each BAM's ``BA`` is a ``deblurfast.nn.BlurAwareAttention`` built with ``backend="reference"`` (the
authors' plain-PyTorch composition). ``deblurfast.accelerate(model)`` switches the ten blocks to the
fused path: one ``strip_pool`` pass over the feature for all strips (sizes 1, 3, 5, 7, both
orientations), the strip convs and the 1x1 ``fuse_conv`` on the small strip maps, then
``blur_aware_mask`` (nearest expansion, ReLU, ``conv_final``, sigmoid and the product with the
feature in one pass). The attention refinement convs, the CPDC and all other convs stay PyTorch's.

Conventions
-----------
BGR (the authors read images with OpenCV and never convert), input uint8/255 - 0.5 in [-0.5, 0.5];
the model returns x + r unclamped, the authors' scripts clamp to [-0.5, 0.5]. H and W must be even;
the registered convention (used by ``deblurfast.deblur``, which takes RGB) pads odd sizes by
replication to even and crops back. ``pad_mode="replicate"``/``"reflect"`` in the constructor makes
the model itself do that; the default ``None`` refuses odd sizes as the official model cannot run them.

Quirks of the authors' code (faithful by default)
-------------------------------------------------
1. Strip pooling uses PyTorch's adaptive bins [floor(jL/n), ceil((j+1)L/n)) (overlapping when n does
   not divide L), not the paper's strided windows; the n = 3, 5, 7 strip convs are shared by both
   orientations.
2. Nearest expansion of the strips follows ``F.interpolate(mode="nearest")``'s float32 source index,
   which differs from floor(i*n/L) by one bin at a few sizes (first L = 123, n = 3; none of the usual
   frame sizes). ``exact_integer_nearest=True`` selects the integer formula (clean variant, not
   bit-faithful at those sizes).
3. Every BAM's BA also yields an auxiliary map z' = ReLU(fuse_conv(...)) that the authors discard;
   ``forward(x, return_attention=True)`` returns ``(output, [z'_1, ..., z'_num_bams])`` for
   visualisation (the fused path only forms z' when asked).
4. No clamp inside the model, no normalization, no buffers; the official LeakyReLUs are in-place
   (irrelevant for the results; not in-place here). Default PyTorch initialization.

Checkpoints
-----------
``BANet_GoPro.pth`` / ``BANet_Plus_GoPro.pth``: flat state_dicts saved from an ``nn.DataParallel``
model (every key prefixed ``module.``); training resume files ``last_*.pth`` hold
``{epoch, model_state, scheduler_state, optimizer_state}``. ``deblurfast.models.load_pretrained``
strips the prefix and unwraps ``model_state``/``state_dict``; keys and shapes equal this module's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import BlurAwareAttention
from .registry import IOConvention, register_model

PAPER = ("Tsai, Peng, Tsai, Lin, Lin: BANet: A Blur-Aware Attention Network for Dynamic Scene Deblurring, "
         "IEEE TIP 2022")

PAD_MODES = (None, "replicate", "reflect")


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 conv with bias and 'same' zero padding (padding = dilation)."""
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation)


class BAM(nn.Module):
    """Blur-aware module (official ``BAM(C, C)``): BA and CPDC branches on LReLU(input_conv(t)),
    fused by ``final_conv`` over [CPDC, BA], plus the input t, then LReLU(0.2).

    Args:
        channels: C (even); every dilated conv outputs C/2.
        fuse_channels: the BA's fusion width (None: C/2 as BANet; C for BANet+).
        exact_integer_nearest: the BA's strip expansion index (see the module doc, quirk 2).
    """

    def __init__(self, channels: int = 128, fuse_channels: int | None = None, *,
                 exact_integer_nearest: bool = False):
        super().__init__()
        if not isinstance(channels, int) or channels < 2 or channels % 2:
            raise ValueError(f"BAM: channels must be an even int >= 2, got {channels!r}")
        m = channels // 2
        # Registration order is the authors' (it fixes the state_dict order); BA last.
        self.input_conv = _conv(channels, channels)
        self.input_relu = _lrelu()
        self.content_conv_d1 = _conv(channels, m, dilation=1)
        self.content_conv_d3 = _conv(channels, m, dilation=3)
        self.content_conv_d5 = _conv(channels, m, dilation=5)
        self.content_conv_d1_2 = _conv(channels, m, dilation=1)
        self.content_conv_d3_2 = _conv(channels, m, dilation=3)
        self.content_conv_d5_2 = _conv(channels, m, dilation=5)
        self.fuse_conv_1 = _conv(3 * m, channels)
        self.fuse_relu = _lrelu()
        self.final_conv = _conv(3 * m + channels, channels)
        self.fina_relu = _lrelu()
        self.BA = BlurAwareAttention(channels, fuse_channels, exact_integer_nearest=exact_integer_nearest,
                                     fused=False, backend="reference")

    def cpdc(self, a: torch.Tensor) -> torch.Tensor:
        """Cascaded parallel dilated convolution: two rows of (d1, d3, d5) convs, no activation on
        them, bridged by LReLU(fuse_conv_1(.)); returns the second row's concat (3C/2 channels)."""
        p1 = torch.cat([self.content_conv_d1(a), self.content_conv_d3(a), self.content_conv_d5(a)], 1)
        q = self.fuse_relu(self.fuse_conv_1(p1))
        return torch.cat([self.content_conv_d1_2(q), self.content_conv_d3_2(q), self.content_conv_d5_2(q)], 1)

    def forward(self, t: torch.Tensor, return_attention: bool = False):
        a = self.input_relu(self.input_conv(t))
        if return_attention:
            b, z = self.BA(a, return_attention=True)
        else:
            b, z = self.BA(a), None
        out = self.fina_relu(self.final_conv(torch.cat([self.cpdc(a), b], 1)) + t)  # CPDC first, BA second
        return (out, z) if return_attention else out


class BANet(nn.Module):
    """BANet (official ``BANet_model``). forward(x) -> x + r, x BGR in [-0.5, 0.5], H and W even.

    Args (defaults: the paper's BANet):
        channels: C, the width of the half-resolution BAMs (128; BANet+ 192). Even.
        fuse_channels: width of each BA's 1x1 fusion (None: C/2, BANet; BANet+ uses C).
        num_bams: number of blur-aware modules (10).
        stem_channels: width of the full-resolution features (64).
        in_channels: image channels (3).
        exact_integer_nearest: integer nearest index in the BA expansion (clean variant; default
            False = F.interpolate's float32 index, as the authors).
        pad_mode: None (default, as the official model: odd H or W raise), or "replicate"/"reflect":
            pad odd sizes by one row/column to even and crop the output back.
    """

    checkpoint_keys = ("model_state",)

    def __init__(self, channels: int = 128, fuse_channels: int | None = None, num_bams: int = 10,
                 stem_channels: int = 64, in_channels: int = 3, *, exact_integer_nearest: bool = False,
                 pad_mode: str | None = None):
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ValueError(f"{type(self).__name__}: pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if not isinstance(num_bams, int) or num_bams < 0:
            raise ValueError(f"{type(self).__name__}: num_bams must be an int >= 0, got {num_bams!r}")
        self.channels, self.fuse_channels, self.num_bams = channels, fuse_channels, num_bams
        self.pad_mode = pad_mode
        self.en_layer1 = nn.Sequential(_conv(in_channels, stem_channels), _lrelu())
        self.en_layer2 = nn.Sequential(_conv(stem_channels, channels, stride=2), _lrelu())
        for k in range(1, num_bams + 1):
            setattr(self, f"BAM_{k}", BAM(channels, fuse_channels, exact_integer_nearest=exact_integer_nearest))
        self.de_layer1 = nn.Sequential(nn.ConvTranspose2d(channels, stem_channels, 4, stride=2, padding=1), _lrelu())
        self.de_layer2 = nn.Sequential(_conv(2 * stem_channels, stem_channels), _lrelu())
        self.de_layer3 = nn.Sequential(_conv(stem_channels, in_channels))

    def bams(self) -> list[BAM]:
        return [getattr(self, f"BAM_{k}") for k in range(1, self.num_bams + 1)]

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"{type(self).__name__}: x must be (N, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        H, W = x.shape[-2:]
        if H % 2 or W % 2:
            if self.pad_mode is None:
                raise ValueError(f"{type(self).__name__}: H and W must be even, got {H}x{W} (deblurfast.deblur "
                                 "pads to even; or build the model with pad_mode='replicate' or 'reflect')")
            y = self(F.pad(x, (0, W % 2, 0, H % 2), mode=self.pad_mode), return_attention)
            if return_attention:
                return y[0][..., :H, :W], y[1]
            return y[..., :H, :W]
        e1 = self.en_layer1(x)
        f = self.en_layer2(e1)
        attention = []
        for bam in self.bams():
            if return_attention:
                f, z = bam(f, return_attention=True)
                attention.append(z)
            else:
                f = bam(f)
        u = self.de_layer1(f)
        r = self.de_layer3(self.de_layer2(torch.cat([u, e1], 1)))  # decoder feature first, skip second
        out = x + r  # no clamp (the authors' scripts clamp to [-0.5, 0.5])
        return (out, attention) if return_attention else out


class BANetPlus(BANet):
    """BANet+ (official ``BANet_Plus_model``): BANet with C = 192 and a C-wide BA fusion
    (``fuse_channels`` defaults to ``channels``). Same arguments as :class:`BANet`."""

    def __init__(self, channels: int = 192, fuse_channels: int | None = None, num_bams: int = 10,
                 stem_channels: int = 64, in_channels: int = 3, *, exact_integer_nearest: bool = False,
                 pad_mode: str | None = None):
        super().__init__(channels, channels if fuse_channels is None else fuse_channels, num_bams, stem_channels,
                         in_channels, exact_integer_nearest=exact_integer_nearest, pad_mode=pad_mode)


# Receptive field: 2 (stem) + 10 BAMs x 2 x (input conv 1 + CPDC 5 + 1 + 5 + final conv 1) + 4 (decoder),
# measured: 266.
IO = IOConvention(channel_order="BGR", value_range=(-0.5, 0.5), multiple=2, pad_mode="replicate", clamp=True,
                  output=None, min_size=2, receptive_field=266,
                  global_context="blur-aware attention pools whole rows and columns (strip pooling)")


@register_model("banet", IO, PAPER)
def banet(**config) -> BANet:
    return BANet(**config)


@register_model("banet_plus", IO, PAPER)
def banet_plus(**config) -> BANetPlus:
    return BANetPlus(**config)


__all__ = ["BAM", "BANet", "BANetPlus", "IO", "PAD_MODES"]
