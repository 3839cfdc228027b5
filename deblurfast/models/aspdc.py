"""ASPDC: the deblurring network and the reblurring network of Huo, Masoumzadeh and Yang,
"Blind Non-Uniform Motion Deblurring using Atrous Spatial Pyramid Deformable Convolution and
Deblurring-Reblurring Consistency" (CVPRW 2022). Spec: shared/specs/models/aspdc.md.

Registered models
-----------------
- ``aspdc`` -> :class:`DeblurringNet` (15,016,503 parameters at paper size). forward(I) with I an
  RGB batch in [-1, 1], H and W multiples of 4 (and >= 12), returns ``(I + r, r)``; the deblurred
  image is element 0. ``deblurfast.deblur`` applies to this model.
- ``aspdc_reblur`` -> :class:`BlurringNet` (998,802 parameters). forward(blurred, sharp) returns the
  reblurred image (used by the deblurring-reblurring consistency loss during fine-tuning, with the
  deblurred image in the ``sharp`` slot). It takes two images, so ``deblurfast.deblur`` does not apply
  to it; its registered IOConvention only records its conventions (RGB, [-1, 1], multiple of 8, no
  clamp).

What is accelerated
-------------------
- Every ASPDC module's four branch convolutions are ``deblurfast.nn.ModulatedDeformConv2d`` (mmcv's
  parameter names ``weight`` / ``bias``): the three DCNv2 branches with predicted offsets and masks,
  and the zero-offset branch ``d0`` through the op's ``offset=None`` path (no bilinear sampling), fed
  with the quirk mask below.
- The reblurring network's seven per-pixel filters are one ``deblurfast.nn.DynamicFilter2d(3,
  padding_mode="reflect", normalize="softmax")`` (softmax over the 9 taps fused in the kernel).
- All are built with ``backend="reference"``; ``deblurfast.accelerate(model)`` switches them. The
  plain convolutions, transposed convolutions and activations stay PyTorch's.

Conventions
-----------
RGB, values x/127.5 - 1 in [-1, 1] for input and output. The authors' test script clamps the
deblurred image to [-1, 1]; the model itself does not clamp. DeblurringNet needs H, W multiples of 4
with H/4, W/4 >= 3; BlurringNet multiples of 8 with H/8, W/8 >= 2. The registered convention pads
(replicate) to the multiple and crops back — note that padding changes the d0 quirk's mask layout,
so a padded run is not the official unpadded run plus border effects.

Quirks of the authors' code (faithful by default)
-------------------------------------------------
1. d0 mask layout (spec §3.1), ``d0_mask_layout``:
   ``"mmcv"`` (default, checkpoint-faithful): the d0 mask conv has no padding, so its sigmoid output
   is (N, 9, h-2, w-2), yet mmcv reads it as if it were (N, 9, h, w) starting at sample b's own
   offset b*9*(h-2)*(w-2) in the flat buffer. deblurfast reproduces exactly that read (a strided,
   overlapping view of the flat buffer), with every read past the end of the buffer taken as 0 (mmcv
   reads undefined memory there). With N > 1 the mask of sample b therefore contains values of
   sample b+1: the output for one image depends on the next image in the batch.
   ``batch_independent=True`` gives every sample the N = 1 semantics (its own buffer followed by
   zeros) — what the official test script (batch 1) computes; recommended for inference on batches.
   Clean variants (not checkpoint-faithful, for experiments/retraining): ``"aligned"`` zero-pads the
   (h-2)x(w-2) mask by one pixel on each side so each mask pixel sits at the centre of its receptive
   field (the spec's suggestion; border pixels of the d0 branch then get mask 0), and ``"padded"``
   runs the same mask conv with padding 1 (one mask per output pixel, computed like the other
   branches' masks).
2. Offsets of the DCNv2 branches are used raw (no clamp, no scaling); positions far outside the image
   read 0.
3. The official constructors zero the offset/mask predictors (``p_conv``, ``m_conv``); the training
   script then applies Xavier-normal to the weights of every conv (see :func:`xavier_init_`).
4. ``norm_layer`` in the official code is never used: no normalization layers here (and no buffers).
5. Training note: autograd through the d0 strided view accumulates the mask gradient where mmcv's
   backward overwrites it; only the forward pass is faithful bit-for-bit.

Checkpoints
-----------
``DeblurringNet_NF.pth`` / ``DeblurringNet_FT.pth``: ``{'epoch': int, 'deblurring_state_dict': ...}``;
``ReBlurringNet.pth``: ``{'blurring_state_dict': ...}``. Keys have no prefix and equal this module's
state_dict keys; ``deblurfast.models.load_pretrained(model, path)`` loads them (strict).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import DynamicFilter2d, ModulatedDeformConv2d
from .registry import IOConvention, register_model

PAPER = ("Huo, Masoumzadeh, Yang: Blind Non-Uniform Motion Deblurring using Atrous Spatial Pyramid "
         "Deformable Convolution and Deblurring-Reblurring Consistency, CVPRW 2022")

D0_MASK_LAYOUTS = ("mmcv", "aligned", "padded")


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.1)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int | None = None, dilation: int = 1):
    return nn.Conv2d(cin, cout, k, stride, k // 2 * dilation if padding is None else padding, dilation)


def _convT(cin: int, cout: int) -> nn.ConvTranspose2d:
    """Exact x2 upsampling: kernel 3, stride 2, padding 1, output_padding 1."""
    return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)


class ResBlock(nn.Module):
    """y = x + conv(LReLU(conv(x))), no activation after the addition (attribute ``model``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(_conv(channels, channels), _lrelu(), _conv(channels, channels))

    def forward(self, x):
        return x + self.model(x)


class DeformBranch(nn.Module):
    """One DCNv2 branch (official ``DeformConv``): offsets and mask predicted by convs dilated by
    ``dilation``; the deformable conv itself is 3x3, dilation 1, padding 1."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.p_conv = _conv(channels, 18, dilation=dilation)
        self.m_conv = _conv(channels, 9, dilation=dilation)
        self.dconv = ModulatedDeformConv2d(channels, channels, 3, 1, 1, backend="reference")
        for conv in (self.p_conv, self.m_conv):  # the official constructor's init
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        offset = self.p_conv(x)  # raw: no clamp, no scaling
        return self.dconv(x, offset, torch.sigmoid(self.m_conv(x))), offset


class DilatedBranch(nn.Module):
    """Official ``hallucination_module`` wrapper: the attribute ``hallucination_conv`` holds the branch."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.hallucination_conv = DeformBranch(channels, dilation)

    def forward(self, x):
        return self.hallucination_conv(x)


def d0_mask_mmcv(mask: torch.Tensor, h: int, w: int, batch_independent: bool = False) -> torch.Tensor:
    """The mask mmcv's d0 call reads (spec §3.1): `mask` (N, 9, h-2, w-2) viewed as (N, 9, h, w).

    Sample b reads the flat buffer from b*9*(h-2)*(w-2) on, 9*h*w elements; reads past the end of the
    buffer are 0. With batch_independent each sample reads only its own buffer (then zeros)."""
    N, K = mask.shape[:2]
    P = mask.shape[2] * mask.shape[3]
    span = K * h * w
    if batch_independent:
        return F.pad(mask.reshape(N, K * P), (0, span - K * P)).reshape(N, K, h, w)
    flat = F.pad(mask.reshape(N * K * P), (0, span - K * P))  # length (N-1)*K*P + K*h*w
    # Overlapping windows, one per sample, gathered (Tensor.unfold does not export with dynamic sizes).
    starts = torch.arange(N, device=mask.device) * (K * P)
    return flat[starts[:, None] + torch.arange(span, device=mask.device)].reshape(N, K, h, w)


class ZeroOffsetBranch(nn.Module):
    """The d0 branch (official ``hallucination_module`` with dilation 0): a modulated 3x3 conv with
    zero offsets, its mask predicted by an **unpadded** 3x3 conv and laid out per ``layout``."""

    def __init__(self, channels: int, layout: str = "mmcv", batch_independent: bool = False):
        super().__init__()
        if layout not in D0_MASK_LAYOUTS:
            raise ValueError(f"d0_mask_layout must be one of {D0_MASK_LAYOUTS}, got {layout!r}")
        self.layout, self.batch_independent = layout, batch_independent
        self.m_conv = _conv(channels, 9, padding=0)
        self.dconv = ModulatedDeformConv2d(channels, channels, 3, 1, 1, backend="reference")
        nn.init.zeros_(self.m_conv.weight)
        nn.init.zeros_(self.m_conv.bias)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 9, h, w) mask the deformable conv uses."""
        h, w = x.shape[-2:]
        if self.layout == "padded":
            return torch.sigmoid(F.conv2d(x, self.m_conv.weight, self.m_conv.bias, padding=1))
        raw = torch.sigmoid(self.m_conv(x))  # (N, 9, h-2, w-2)
        if self.layout == "aligned":
            return F.pad(raw, (1, 1, 1, 1))
        return d0_mask_mmcv(raw.contiguous(), h, w, self.batch_independent)

    def forward(self, x):
        return self.dconv(x, None, self.mask(x).contiguous())

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, batch_independent={self.batch_independent}"


class ASPDC(nn.Module):
    """The ASPDC module (official ``hallucination_res_block``): branches d0 (zero offsets) and
    d1..dn (DCNv2 with offset predictors dilated by `dilations`), blended by a per-pixel softmax
    attention predicted from the module input, then a 3x3 conv and the residual."""

    def __init__(self, channels: int = 128, dilations=(1, 2, 4), mask_res_blocks: int = 2,
                 d0_mask_layout: str = "mmcv", batch_independent: bool = False):
        super().__init__()
        self.res_conv = nn.Sequential(_conv(channels, channels), _lrelu())
        self.hallucination_d0 = ZeroOffsetBranch(channels, d0_mask_layout, batch_independent)
        self.num_dcn = len(dilations)
        for i, d in enumerate(dilations, start=1):
            setattr(self, f"hallucination_d{i}", DilatedBranch(channels, d))
        self.mask_conv = nn.Sequential(_conv(channels, channels), _lrelu(),
                                       *(ResBlock(channels) for _ in range(mask_res_blocks)),
                                       _conv(channels, 1 + len(dilations), k=1))
        self.fusion_conv = _conv(channels, channels)

    def forward(self, x: torch.Tensor, return_offsets: bool = False):
        s = self.res_conv(x)  # conv + LReLU
        branches = [self.hallucination_d0(s)]
        offsets = []
        for i in range(1, self.num_dcn + 1):
            f, off = getattr(self, f"hallucination_d{i}")(s)
            branches.append(f)
            offsets.append(off)
        alpha = torch.softmax(self.mask_conv(x), dim=1)  # from the module input x, not s
        blend = sum(alpha[:, i : i + 1] * f for i, f in enumerate(branches))
        out = self.fusion_conv(blend) + x
        return (out, torch.cat(offsets, 1)) if return_offsets else out


GROUPS = ("en_res_group1", "en_res_group2", "en_res_group3", "de_res_group3", "de_res_group2", "de_res_group1")


class DeblurringNet(nn.Module):
    """ASPDC's deblurring network (official ``DeblurringNet``). forward(I) -> (I + r, r).

    Args (defaults: the paper's):
        channels: (c1, c2, c3) widths at full, 1/2 and 1/4 resolution.
        head_res_blocks: ResBlocks in the head at full resolution.
        group_res_blocks: ResBlocks before each of the six ASPDC modules.
        mask_res_blocks: ResBlocks in each ASPDC attention predictor.
        dilations: dilations of the DCN branches' offset/mask predictors.
        d0_mask_layout: "mmcv" (faithful quirk), "aligned" or "padded" (clean variants); see module doc.
        batch_independent: with "mmcv", N = 1 semantics for every sample of a batch.
    """

    checkpoint_keys = ("deblurring_state_dict",)

    def __init__(self, channels=(32, 64, 128), in_channels: int = 3, head_res_blocks: int = 2,
                 group_res_blocks: int = 2, mask_res_blocks: int = 2, dilations=(1, 2, 4),
                 d0_mask_layout: str = "mmcv", batch_independent: bool = False):
        super().__init__()
        c1, c2, c3 = channels
        self.head = nn.Sequential(_conv(in_channels, c1), _lrelu(), *(ResBlock(c1) for _ in range(head_res_blocks)),
                                  _conv(c1, c2, stride=2), _lrelu(), _conv(c2, c3, stride=2), _lrelu())
        for g in GROUPS:
            setattr(self, f"{g}_1", nn.Sequential(*(ResBlock(c3) for _ in range(group_res_blocks))))
            setattr(self, f"{g}_2", ASPDC(c3, dilations, mask_res_blocks, d0_mask_layout, batch_independent))
        self.dense_conv = nn.Sequential(_conv(len(GROUPS) * c3, c3), _lrelu())
        self.tail = nn.Sequential(_convT(c3, c2), _lrelu(), _convT(c2, c1), _lrelu(), _conv(c1, in_channels))

    def forward(self, x: torch.Tensor):
        H, W = x.shape[-2:]
        if H % 4 or W % 4 or H < 12 or W < 12:
            raise ValueError(f"aspdc: H and W must be multiples of 4 and at least 12, got {H}x{W} "
                             "(deblurfast.deblur pads to the multiple)")
        f = self.head(x)
        outs = []
        for g in GROUPS:
            f = getattr(self, f"{g}_2")(getattr(self, f"{g}_1")(f))
            outs.append(f)
        r = self.tail(self.dense_conv(torch.cat(outs, 1)))
        return x + r, r


class BlurringNet(nn.Module):
    """ASPDC's reblurring network (official ``BlurringNet``). forward(blurred, sharp) -> reblurred.

    One encoder-decoder run twice with the same weights: on concat(blurred, sharp) it predicts a
    k x k per-pixel kernel after each of its seven stages; on concat(sharp, sharp) it filters its own
    features after each stage with those kernels (softmax over taps, reflection padding).

    Args (defaults: the paper's): channels (c1, c2, c3, c4); kernel_size k; in_channels per image.
    """

    checkpoint_keys = ("blurring_state_dict",)

    def __init__(self, channels=(16, 32, 64, 128), kernel_size: int = 3, in_channels: int = 3):
        super().__init__()
        c1, c2, c3, c4 = channels
        kk = kernel_size * kernel_size
        self.head_conv = nn.Sequential(_conv(2 * in_channels, c1), _lrelu())
        self.kernel_head_conv = _conv(c1, kk)
        self.body_conv_1 = nn.Sequential(_conv(c1, c2, stride=2), ResBlock(c2), _lrelu())
        self.kernel_conv_1 = _conv(c2, kk)
        self.body_conv_2 = nn.Sequential(_conv(c2, c3, stride=2), ResBlock(c3), _lrelu())
        self.kernel_conv_2 = _conv(c3, kk)
        self.body_conv_3 = nn.Sequential(_conv(c3, c4, stride=2), ResBlock(c4), _lrelu())
        self.kernel_conv_3 = _conv(c4, kk)
        self.body_dconv_3 = nn.Sequential(ResBlock(c4), _convT(c4, c3), _lrelu())
        self.kernel_dconv_3 = _conv(c3, kk)
        self.body_dconv_2 = nn.Sequential(ResBlock(c3), _convT(c3, c2), _lrelu())
        self.kernel_dconv_2 = _conv(c2, kk)
        self.body_dconv_1 = nn.Sequential(ResBlock(c2), _convT(c2, c1), _lrelu())
        self.kernel_dconv_1 = _conv(c1, kk)
        self.tail = _conv(c1, in_channels)
        self.dynamic_conv = DynamicFilter2d(kernel_size, padding_mode="reflect", normalize="softmax",
                                            backend="reference")

    def kernels(self, blurred: torch.Tensor, sharp: torch.Tensor) -> list[torch.Tensor]:
        """Pass 1: the seven kernel-logit maps predicted from concat(blurred, sharp)."""
        h0 = self.head_conv(torch.cat([blurred, sharp], 1))
        e1 = self.body_conv_1(h0)
        e2 = self.body_conv_2(e1)
        e3 = self.body_conv_3(e2)
        u3 = self.body_dconv_3(e3) + e2
        u2 = self.body_dconv_2(u3) + e1
        u1 = self.body_dconv_1(u2)
        return [self.kernel_head_conv(h0), self.kernel_conv_1(e1), self.kernel_conv_2(e2), self.kernel_conv_3(e3),
                self.kernel_dconv_3(u3), self.kernel_dconv_2(u2), self.kernel_dconv_1(u1)]

    def forward(self, blurred: torch.Tensor, sharp: torch.Tensor | None = None) -> torch.Tensor:
        if sharp is None:
            raise TypeError("aspdc_reblur: forward(blurred, sharp) takes two images (it reblurs `sharp` like "
                            "`blurred`); deblurfast.deblur applies to 'aspdc' only")
        H, W = blurred.shape[-2:]
        if H % 8 or W % 8 or H < 16 or W < 16:
            raise ValueError(f"aspdc_reblur: H and W must be multiples of 8 and at least 16, got {H}x{W}")
        k_h, k1, k2, k3, kd3, kd2, kd1 = self.kernels(blurred, sharp)
        dc = self.dynamic_conv
        g0 = dc(self.head_conv(torch.cat([sharp, sharp], 1)), k_h)
        g1 = dc(self.body_conv_1(g0), k1)
        g2 = dc(self.body_conv_2(g1), k2)
        g3 = dc(self.body_conv_3(g2), k3)
        v3 = dc(self.body_dconv_3(g3) + g2, kd3)
        v2 = dc(self.body_dconv_2(v3) + g1, kd2)
        v1 = dc(self.body_dconv_1(v2), kd1)
        return self.tail(v1)


def xavier_init_(model: nn.Module) -> nn.Module:
    """The official training script's initialization: Xavier-normal on the weight of every module
    whose class name contains "Conv2d" (Conv2d, ConvTranspose2d, ModulatedDeformConv2d); biases are
    left as they are (the offset/mask predictors' biases stay 0)."""
    for m in model.modules():
        if "Conv2d" in type(m).__name__ and getattr(m, "weight", None) is not None:
            nn.init.xavier_normal_(m.weight)
    return model


def _configured_io(model: DeblurringNet, io: IOConvention) -> IOConvention:
    """The convention of a DeblurringNet of any depth: its receptive field and, with the "mmcv" d0 mask
    layout, its global context.

    Receptive field, in input pixels: the head, 1 + 2 per ResBlock + 1 + 2 (the two stride-2 convs);
    six groups at stride 4 of 4 x (2 per ResBlock + an ASPDC module: the larger of res_conv 1 + the
    offset predictors' largest dilation and the attention branch 1 + 2 per mask ResBlock, then the
    fusion conv 1); the dense conv 4 and the tail 4. It counts DCN offsets up to the largest
    dilation - 1 (12 input pixels); ASPDC's offsets are unbounded, and longer learned offsets reach
    further. Paper size: 256, the bundled model 206 (equal to the measured gradient reach,
    tests/test_tiling.py)."""
    head_blocks = sum(isinstance(m, ResBlock) for m in model.head)
    group_blocks = len(getattr(model, f"{GROUPS[0]}_1"))
    module = getattr(model, f"{GROUPS[0]}_2")
    mask_blocks = sum(isinstance(m, ResBlock) for m in module.mask_conv)
    reach = max([1] + [getattr(module, f"hallucination_d{i}").hallucination_conv.p_conv.dilation[0]
                       for i in range(1, module.num_dcn + 1)])
    aspdc_reach = max(1 + reach, 1 + 2 * mask_blocks) + 1
    field = (4 + 2 * head_blocks) + len(GROUPS) * 4 * (2 * group_blocks + aspdc_reach) + 4 + 4
    layout = module.hallucination_d0.layout
    context = (f"the d0 mask layout {layout!r} reads a mask laid out for the whole image's width "
               "(d0_mask_layout='padded' or 'aligned' is local)") if layout == "mmcv" else None
    return replace(io, receptive_field=field, global_context=context)


@register_model("aspdc", IOConvention(channel_order="RGB", value_range=(-1.0, 1.0), multiple=4,
                                      pad_mode="replicate", clamp=True, output=0, min_size=12,
                                      receptive_field=256), PAPER, configure=_configured_io)
def aspdc(**config) -> DeblurringNet:
    return DeblurringNet(**config)


# Two inputs: deblurfast.deblur does not apply; the convention documents the reblurring net's I/O.
@register_model("aspdc_reblur", IOConvention(channel_order="RGB", value_range=(-1.0, 1.0), multiple=8,
                                             pad_mode="replicate", clamp=False, output=None, min_size=16), PAPER,
                inputs=2)
def aspdc_reblur(**config) -> BlurringNet:
    return BlurringNet(**config)


__all__ = ["ASPDC", "BlurringNet", "D0_MASK_LAYOUTS", "DeblurringNet", "ResBlock", "d0_mask_mmcv", "xavier_init_"]
