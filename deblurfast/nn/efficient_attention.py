"""SAPHNet's global branch: spatially masked efficient (linear) attention with a channel gate."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import ArgumentError, integer
from ..dispatch import parse_backend
from ..ops.efficient_attention import efficient_attention


def spatially_masked(x: torch.Tensor, mask_conv: nn.Module) -> torch.Tensor:
    """x * sigmoid(mask_conv(x)): SAPHNet's spatial mask (mask_conv: C -> 1)."""
    return x * torch.sigmoid(mask_conv(x))


def gated_attention(layer: nn.Module, value: torch.Tensor, query_source: torch.Tensor,
                    gate_source: torch.Tensor) -> torch.Tensor:
    """efficient_attention(value, key = layer.key_conv(value), query = layer.query_conv(query_source),
    gate = sigmoid(layer.gate_fc(mean over H, W of gate_source)) / layer.maps) on layer.backend:
    the attention every SAPHNet module shares (the paper's 1/C2 average folded into the gate)."""
    gate = torch.sigmoid(layer.gate_fc(gate_source.mean(dim=(2, 3)))) / layer.maps
    return efficient_attention(value, layer.key_conv(value), layer.query_conv(query_source), gate,
                               backend=layer.backend)


class EfficientAttention(nn.Module):
    """The global branch of SAPHNet's content-aware module (Suin et al., CVPR 2020,
    Sec. 3.1.1; shared/specs/models/saphnet.md), self- or cross-attention.

    Self-attention, ``forward(x)``::

        m1    = sigmoid(mask_conv(x))                    (N, 1, H, W)  spatial mask
        xm    = x * m1
        value = xm                                       (N, C, H, W)
        key   = key_conv(xm)                             (N, C2, H, W)  softmax over the H*W positions
        query = query_conv(xm)                           (N, C2, H, W)  softmax over the C2 maps
        gate  = sigmoid(gate_fc(mean over H, W of xm))   (N, C)
        y     = efficient_attention(value, key, query, gate) / C2

    Cross-attention, ``forward(x, enc)`` (decoder attending to the encoder;
    needs ``cross=True``): the attended map ``enc`` (N, C, He, We), of any
    spatial size, gives value and key, while query and gate still come from x::

        value = enc * sigmoid(enc_mask_conv(enc));  key = key_conv(value)

    The output always has x's shape (N, C, H, W). The 1/C2 (the paper's average
    over the C2 maps, Eq. 9) is folded into the gate, so it costs no extra pass.

    SAPHNet released no code, so these names are deblurfast's. Parameters:
        mask_conv: Conv2d(C, 1, 1), the spatial mask m1 of x.
        enc_mask_conv: Conv2d(C, 1, 1), the mask m1e of ``enc`` (only when cross=True;
            separate from mask_conv because encoder and decoder features differ).
        key_conv: Conv2d(C, C2, 1), the key projection (shared by self and cross use).
        query_conv: Conv2d(C, C2, 1), the query projection.
        gate_fc: Linear(C, C), the channel gate from the global average pool.
    All have biases; default PyTorch initialization.

    Args:
        channels: C, channels of x (and of enc). Default 128.
        maps: C2, number of attention maps. Default 32.
        cross: also build ``enc_mask_conv`` so that ``forward`` accepts ``enc``.
            A cross module called without ``enc`` does self-attention.
        backend: backend of the attention op: None (deblurfast's normal dispatch:
            ``use_backend`` blocks, DEBLURFAST_BACKEND, then "auto"), "auto", a
            backend name or a comma-separated list; the 1x1 convolutions are PyTorch's.
    """

    def __init__(self, channels: int = 128, maps: int = 32, cross: bool = False, backend: str | None = None):
        super().__init__()
        channels = integer("EfficientAttention", "channels", channels, 1)
        maps = integer("EfficientAttention", "maps", maps, 1)
        if backend is not None:
            parse_backend(backend)
        self.channels, self.maps, self.cross, self.backend = channels, maps, cross, backend
        self.mask_conv = nn.Conv2d(channels, 1, 1)
        self.enc_mask_conv = nn.Conv2d(channels, 1, 1) if cross else None
        self.key_conv = nn.Conv2d(channels, maps, 1)
        self.query_conv = nn.Conv2d(channels, maps, 1)
        self.gate_fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, enc: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, H, W); enc: (N, C, He, We) or None. Returns (N, C, H, W)."""
        self._check("x", x)
        xm = spatially_masked(x, self.mask_conv)
        if enc is None:
            value = xm
        else:
            if not self.cross:
                raise ArgumentError("EfficientAttention: enc was given but the module was built with cross=False")
            self._check("enc", enc)
            if enc.shape[0] != x.shape[0]:
                raise ArgumentError(
                    f"EfficientAttention: enc must have x's batch size {x.shape[0]}, got {enc.shape[0]}")
            value = spatially_masked(enc, self.enc_mask_conv)
        return gated_attention(self, value, xm, xm)

    def _check(self, name: str, t) -> None:
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] != self.channels:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ArgumentError(f"EfficientAttention: {name} must be (N, C={self.channels}, H, W), got {shape}")

    def extra_repr(self) -> str:
        return f"channels={self.channels}, maps={self.maps}, cross={self.cross}, backend={self.backend!r}"
