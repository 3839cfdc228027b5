"""attentive_msnet: Xu, Zhu, Quan, Ji, "Attentive deep network for blind motion deblurring on
dynamic scenes", CVIU 205 (2021) — the authors' code calls the network "RDAN".

One encoder-decoder (the per-scale network, 6,907,057 parameters) runs coarse to fine at the scales
1/4, 1/2 and 1 with the SAME weights. Its 6-channel input at each level is the blurred image resized
to that level, followed by the previous level's output resized to it (at the coarsest level: the
resized blurred image twice). Encoder: 5x5 conv stem and three groups (conv, stride 2 in groups 2 and
3, then three residual attention blocks "RDAB"; 32/64/128 channels); decoder: three groups of three
RDABs, 4x4 stride-2 transposed convs whose ReLU output is *added* to the encoder feature, and a 5x5
output conv predicting the sharp image directly (no residual, no clamp). An RDAB is
conv5x5-ReLU-conv5x5, then a per-pixel spatial ("blur") attention gate, then an SE-style channel
attention gate, then the skip addition. forward returns the list of the three levels' outputs,
coarse to fine; the image is the last one. Spec: shared/specs/models/attentive_msnet.md.

What is accelerated: nothing yet. The network has no deformable conv, dynamic filter, efficient
attention or strip pooling; its two attention gates (BlurAttention, ChannelAttention) are small
modules of their own so a fused kernel can replace them later, if the benchmark shows it pays
(shared/specs/ops.md §5). accelerate() therefore only changes the dtype and memory format.

Conventions (the registered IOConvention): RGB in [0, 1]; H and W multiples of 16 (every level must
be divisible by 4), padded by edge replication and cropped back, as the authors; output clamped to
[0, 1]. The authors' test then truncates to uint8 where deblurfast.deblur rounds; `official_test`
in this module reproduces their whole test protocol (landscape transpose, fixed 720x1280 canvas,
bicubic fit of larger images, truncation) as an opt-in.

Faithful behaviour (defaults) and the flags for the alternatives:
- resize="tf_legacy": TF1 bilinear resize without half-pixel centres (downscaling by k picks every
  k-th pixel, x2 upscaling averages neighbours and repeats the last one); "torch_bilinear" uses
  F.interpolate(bilinear, align_corners=False) — for experiments, never for the converted weights.
- padding="tf_same": TensorFlow "SAME" padding computed from the actual size; the two 5x5 stride-2
  convs pad 1 before / 2 after on even lengths. "symmetric" pads k//2 on both sides.
- attention="sequential": the channel attention is computed from the spatially re-weighted features
  (the code). "parallel": both gates computed from the block's features, as the paper's equation.
- detach_previous=True: the previous level's output enters the next level without gradient (TF
  stop_gradient); False lets gradients flow through the whole pyramid.
- init: Xavier-uniform weights and zero biases (slim's arg_scope in the authors' code).

Loading the authors' weights: they are a TensorFlow 1 checkpoint (`deblur.model-675000.index` +
`.data-00000-of-00001`); convert them once with `deblurfast convert attentive_msnet PREFIX -o
rdan.safetensors` (`deblurfast convert`, no TensorFlow needed), then `load_pretrained(model,
"rdan.safetensors")`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import IOConvention, register_model

PAPER = ("Xu, Zhu, Quan, Ji, \"Attentive deep network for blind motion deblurring on dynamic scenes\", "
         "Computer Vision and Image Understanding 205, 2021")
# Receptive field: the coarser scales' outputs feed the finer ones, so it spans the 1/4 scale's reach at
# 4x; measured (gradient support of one output pixel, the channel gates held constant, the previous
# scale not detached): 1276.
IO = IOConvention(channel_order="RGB", value_range=(0.0, 1.0), multiple=16, pad_mode="replicate", clamp=True,
                  output=-1, min_size=16, receptive_field=1276,
                  global_context="channel attention gates on the mean over the whole image")

RESIZE_MODES = ("tf_legacy", "torch_bilinear")
PADDING_MODES = ("tf_same", "symmetric")
ATTENTION_MODES = ("sequential", "parallel")


# ----------------------------------------------------------------------------------------------
# TF1 legacy bilinear resize and TF "SAME" padding
# ----------------------------------------------------------------------------------------------

def _legacy_axis(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices j0, j1 and weights for one axis, in TF's float32 arithmetic. Built on `device`
    from the sizes alone: no host data is copied per forward, so the model can be captured into a
    CUDA graph (a blocking host-to-device copy is illegal during capture)."""
    # The float32 quotient as a tensor, so that sizes may be symbolic (ONNX export with dynamic axes).
    scale = torch.full((), n_in, dtype=torch.float32, device=device) / n_out
    src = torch.arange(n_out, dtype=torch.float32, device=device) * scale
    j0 = src.floor()
    lam = src - j0
    j0 = j0.to(torch.int64)
    return j0, (j0 + 1).clamp_(max=n_in - 1), lam


def tf_legacy_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 `tf.image.resize_images(method=BILINEAR)`: align_corners=False, no half-pixel centres.

    x: (..., H, W). Source position of output index j is j * (n_in / n_out) (float32); the value is
    v[j0] + (v[j1] - v[j0]) * frac, j1 clamped to the last index; width first, then height, as TF."""
    if x.dim() < 2:
        raise ValueError(f"tf_legacy_resize: x must have at least 2 dimensions (..., H, W), got {tuple(x.shape)}")
    h_out, w_out = size  # not int(): a symbolic size (export) must stay symbolic
    h_in, w_in = x.shape[-2:]
    if h_out < 1 or w_out < 1:
        raise ValueError(f"tf_legacy_resize: size must be positive, got {size}")
    if (h_in, w_in) == (h_out, w_out):
        return x
    x0, x1, lx = _legacy_axis(w_in, w_out, x.device)
    y0, y1, ly = _legacy_axis(h_in, h_out, x.device)
    left, right = x.index_select(-1, x0), x.index_select(-1, x1)
    rows = left + (right - left) * lx.to(x.dtype)
    top, bottom = rows.index_select(-2, y0), rows.index_select(-2, y1)
    return top + (bottom - top) * ly.to(x.dtype)[:, None]


def _round_halved(n: int, k: int) -> int:
    """round(n * 0.5**k) as Python rounds it (half to even) for an int n >= 0."""
    d = 2**k
    q, r = n // d, n % d
    return q + 1 if 2 * r > d or (2 * r == d and q % 2 == 1) else q


def tf_same_pads(n: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow "SAME" for one axis of length n."""
    n_out = -(-n // stride)
    total = max((n_out - 1) * stride + kernel_size - n, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow "SAME" padding computed from the input size (asymmetric when the
    total is odd: the extra pixel goes to the bottom/right), or symmetric k//2 padding."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, tf_padding="tf_same"):
        if tf_padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {tf_padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=True)
        self.tf_padding = tf_padding

    def forward(self, x):
        kh, kw = self.kernel_size
        sh, sw = self.stride
        if self.tf_padding == "symmetric":
            return F.conv2d(x, self.weight, self.bias, self.stride, (kh // 2, kw // 2))
        top, bottom = tf_same_pads(x.shape[-2], kh, sh)
        left, right = tf_same_pads(x.shape[-1], kw, sw)
        if top == bottom and left == right:  # the common stride-1 case: let the conv pad
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride)


# ----------------------------------------------------------------------------------------------
# Residual attention block
# ----------------------------------------------------------------------------------------------

class BlurAttention(nn.Module):
    """Per-pixel spatial gate: sigmoid(conv1x1(ReLU(conv1x1(u)))) with f -> r -> 1 channels."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, reduced, 1)
        self.conv2 = nn.Conv2d(reduced, 1, 1)

    def gate(self, u: torch.Tensor) -> torch.Tensor:
        """The (N, 1, H, W) attention map."""
        return torch.sigmoid(self.conv2(F.relu(self.conv1(u))))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.gate(u)


class ChannelAttention(nn.Module):
    """SE-style channel gate on the spatial mean: sigmoid(conv1x1(ReLU(conv1x1(mean_HW(u))))),
    f -> r -> f channels."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, reduced, 1)
        self.conv2 = nn.Conv2d(reduced, channels, 1)

    def gate(self, u: torch.Tensor) -> torch.Tensor:
        """The (N, f, 1, 1) channel weights."""
        q = u.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.conv2(F.relu(self.conv1(q))))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.gate(u)


class RDAB(nn.Module):
    """Residual attention block: t + CA(BA(conv2(ReLU(conv1(t))))).

    attention="sequential" (the code): the channel gate sees the spatially gated features;
    "parallel" (the paper's equation): both gates are computed from conv2's output."""

    def __init__(self, channels: int, kernel_size: int = 5, reduction: int = 16, attention: str = "sequential",
                 padding: str = "tf_same"):
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        reduced = channels // reduction
        if reduced < 1:
            raise ValueError(f"RDAB: channels // reduction must be >= 1, got {channels} // {reduction}")
        self.attention = attention
        self.conv1 = SameConv2d(channels, channels, kernel_size, tf_padding=padding)
        self.conv2 = SameConv2d(channels, channels, kernel_size, tf_padding=padding)
        self.blur_attention = BlurAttention(channels, reduced)
        self.channel_attention = ChannelAttention(channels, reduced)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        u = self.conv2(F.relu(self.conv1(t)))
        if self.attention == "sequential":
            u = self.channel_attention(self.blur_attention(u))
        else:
            u = u * self.blur_attention.gate(u) * self.channel_attention.gate(u)
        return u + t


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

class AttentiveMSNet(nn.Module):
    """Xu et al.'s attentive multi-scale network (RDAN); see the module docstring.

    in_channels: image channels (the per-scale net sees 2 x in_channels).
    widths: channels of the three encoder/decoder groups (32, 64, 128).
    num_blocks: RDABs per group (3); kernel_size: conv size (5); reduction: attention reduction (16).
    num_scales: pyramid levels (3), scale factor 1/2 between levels.
    resize / padding / attention / detach_previous: faithful defaults, see the module docstring.

    forward(x): x (N, in_channels, H, W) RGB in [0, 1], H and W multiples of 4 * 2**(num_scales-1)
    (16). Returns [o_0, ..., o_{S-1}] coarse to fine; o_{S-1} (N, in_channels, H, W) is the image.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, int, int] = (32, 64, 128), num_blocks: int = 3,
                 kernel_size: int = 5, reduction: int = 16, num_scales: int = 3, resize: str = "tf_legacy",
                 padding: str = "tf_same", attention: str = "sequential", detach_previous: bool = True):
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if len(widths) != 3:
            raise ValueError(f"widths must give the three group widths, got {widths}")
        if num_blocks < 1 or num_scales < 1:
            raise ValueError(f"num_blocks and num_scales must be >= 1, got {num_blocks}, {num_scales}")
        self.in_channels, self.widths, self.num_blocks = in_channels, tuple(widths), num_blocks
        self.num_scales, self.resize, self.detach_previous = num_scales, resize, detach_previous
        self.size_multiple = 4 * 2 ** (num_scales - 1)
        c1, c2, c3 = widths

        def blocks(prefix, channels, indices):
            for i in indices:
                self.add_module(f"{prefix}_{i}", RDAB(channels, kernel_size, reduction, attention, padding))

        # Registration order = forward order = the spec's recommended state_dict order.
        enc, dec = range(2, num_blocks + 2), range(num_blocks, 0, -1)  # enc?_2.. and dec?_3, dec?_2, dec?_1
        self.enc1_1 = SameConv2d(2 * in_channels, c1, kernel_size, 1, padding)
        blocks("enc1", c1, enc)
        self.enc2_1 = SameConv2d(c1, c2, kernel_size, 2, padding)
        blocks("enc2", c2, enc)
        self.enc3_1 = SameConv2d(c2, c3, kernel_size, 2, padding)
        blocks("enc3", c3, enc)
        blocks("dec3", c3, dec)
        # the transposed convs continue the numbering: dec2_4 / dec1_4 with the paper's 3 blocks
        self.add_module(f"dec2_{num_blocks + 1}", nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1))
        blocks("dec2", c2, dec)
        self.add_module(f"dec1_{num_blocks + 1}", nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1))
        blocks("dec1", c1, dec)
        self.dec1_0 = SameConv2d(c1, in_channels, kernel_size, 1, padding)
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform weights, zero biases (the authors' initialisation)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _blocks(self, prefix: str, indices) -> list[nn.Module]:
        return [getattr(self, f"{prefix}_{i}") for i in indices]

    def scale_forward(self, z: torch.Tensor) -> torch.Tensor:
        """The per-scale encoder-decoder on z (N, 2*in_channels, h, w), h and w divisible by 4."""
        nb = self.num_blocks
        enc, dec = range(2, nb + 2), range(nb, 0, -1)
        c1 = F.relu(self.enc1_1(z))
        for block in self._blocks("enc1", enc):
            c1 = block(c1)
        c2 = F.relu(self.enc2_1(c1))
        for block in self._blocks("enc2", enc):
            c2 = block(c2)
        d = F.relu(self.enc3_1(c2))
        for block in self._blocks("enc3", enc) + self._blocks("dec3", dec):
            d = block(d)
        up2, up1 = getattr(self, f"dec2_{nb + 1}"), getattr(self, f"dec1_{nb + 1}")
        d = F.relu(up2(d)) + c2
        for block in self._blocks("dec2", dec):
            d = block(d)
        d = F.relu(up1(d)) + c1
        for block in self._blocks("dec1", dec):
            d = block(d)
        return self.dec1_0(d)

    def resize_to(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.resize == "tf_legacy":
            return tf_legacy_resize(x, size)
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def level_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(h_i, w_i) of every level, coarse to fine: Python round(H * 0.5**(S-1-i)), ties to even,
        in integer arithmetic (so that sizes may be symbolic: ONNX export with dynamic axes)."""
        levels = [self.num_scales - 1 - i for i in range(self.num_scales)]
        return [(_round_halved(height, k), _round_halved(width, k)) for k in levels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"AttentiveMSNet: x must be (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        m = self.size_multiple
        if H % m or W % m:
            raise ValueError(f"AttentiveMSNet: H and W must be multiples of {m}, got {H}x{W} "
                             "(pad first; deblurfast.deblur does it)")
        outputs = []
        prev = x
        for size in self.level_sizes(H, W):
            blurred = self.resize_to(x, size)
            previous = self.resize_to(prev.detach() if self.detach_previous else prev, size)
            prev = self.scale_forward(torch.cat([blurred, previous], dim=1))
            outputs.append(prev)
        return outputs


# ----------------------------------------------------------------------------------------------
# Training loss and the authors' test protocol
# ----------------------------------------------------------------------------------------------



def _pil_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """scipy.misc.imresize(image, size, 'bicubic') on uint8: PIL's bicubic resampling."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("official_test needs Pillow to resize images larger than the canvas the way the "
                          "authors did (scipy.misc.imresize): pip install pillow, or pass resize_fn") from e
    h, w = size
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))


@torch.no_grad()
def official_test(model: nn.Module, image: np.ndarray, height: int = 720, width: int = 1280,
                  resize_fn=None) -> np.ndarray:
    """The authors' test protocol on one RGB uint8 image (H, W, 3); returns uint8 (H, W, 3).

    Portrait images are transposed first (and back at the end); an image larger than the
    height x width canvas is resized (bicubic, like scipy.misc.imresize) by min(height/h, width/w)
    with int() truncated sizes, and the result resized back; the image is edge-padded at the
    bottom/right to the canvas, run, and the last output clipped to [0, 1], multiplied by 255 and
    truncated to uint8, then cropped. resize_fn(uint8 image, (h, w)) replaces the bicubic resize
    (default: Pillow's, as scipy.misc.imresize)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"official_test: image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    if height % 16 or width % 16:
        raise ValueError(f"official_test: the canvas must be a multiple of 16, got {height}x{width}")
    resize_fn = resize_fn or _pil_bicubic
    rot = image.shape[0] > image.shape[1]
    blur = image.transpose(1, 0, 2) if rot else image
    h, w = blur.shape[:2]
    resized = h > height or w > width
    if resized:
        scale = min(1.0 * height / h, 1.0 * width / w)
        new_h, new_w = int(h * scale), int(w * scale)
        blur = resize_fn(blur, (new_h, new_w))
    else:
        new_h, new_w = h, w
    canvas = np.pad(blur, ((0, height - new_h), (0, width - new_w), (0, 0)), mode="edge")
    param = next(model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(canvas)).to(param.device).permute(2, 0, 1)[None]
    x = (x.to(torch.float32) / 255.0).to(param.dtype)
    was_training = model.training
    model.eval()
    try:
        y = model(x)[-1][0]
    finally:
        model.train(was_training)
    res = (y.float().clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # truncates
    res = res[:new_h, :new_w]
    if resized:
        res = resize_fn(np.ascontiguousarray(res), (h, w))
    if rot:
        res = res.transpose(1, 0, 2)
    return np.ascontiguousarray(res)


@register_model("attentive_msnet", IO, PAPER)
def attentive_msnet(**config) -> AttentiveMSNet:
    """Xu et al.'s attentive multi-scale network (RDAN); keywords as AttentiveMSNet."""
    return AttentiveMSNet(**config)


__all__ = ["AttentiveMSNet", "RDAB", "BlurAttention", "ChannelAttention", "SameConv2d", "tf_legacy_resize",
           "tf_same_pads", "official_test", "attentive_msnet", "IO"]
