"""BANet's blur-aware attention block (BA_Block of shared/specs/models/banet.md),
with the authors' parameter names and a fused fast path."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import ArgumentError, as_int
from .._device_constants import device_constant_cache
from ..dispatch import parse_backend
from ..ops.strip_pool import blur_aware_mask, strip_pool
from ..ops.strip_pool.reference import interpolate_nearest_index, nearest_index

SIZES = (1, 3, 5, 7)


@device_constant_cache(maxsize=128)
def strip_segments(
    length: int, dim: int, exact_integer_nearest: bool, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """How the nearest expansions of the strips of every size in SIZES partition axis `dim`
    (2: rows, 3: columns) of `length` positions.

    Returns (index, sources): index [length] (int32) gives each position's segment, a
    maximal run of positions that read the same source bin in every size; sources
    [len(SIZES), K] (int64) gives, for each size and segment, that source bin. So
    sum_i expand(s_i)[p] == sum_i s_i[sources[i, index[p]]]. The expansion is
    F.interpolate's (for `dtype` on `device`, as the reference path runs it) or, with
    exact_integer_nearest, floor(p * n / length). Cached per shape.
    """
    if exact_integer_nearest:
        src = [nearest_index(length, n, device) for n in SIZES]
    else:
        src = [interpolate_nearest_index(length, n, dim, dtype, device) for n in SIZES]
    src = torch.stack(src).cpu()  # [S, length]
    starts = torch.cat([torch.ones(1, dtype=torch.bool), (src[:, 1:] != src[:, :-1]).any(0)])
    index = torch.cumsum(starts.to(torch.int64), 0) - 1
    return index.to(device=device, dtype=torch.int32), src[:, starts].contiguous().to(device)


@device_constant_cache(maxsize=128)
def _segment_maps(length: int, dim: int, exact_integer_nearest: bool, dtype: torch.dtype, device: torch.device):
    """strip_segments' index and, per size n, the one-hot [n, K] matrix picking each segment's
    source bin (a matmul rather than index_select: inductor's CPU code for index_select's
    backward followed by a conv corrupts memory in PyTorch 2.13)."""
    index, sources = strip_segments(length, dim, exact_integer_nearest, dtype, device)
    return index, tuple(F.one_hot(sources[i], n).T.to(dtype) for i, n in enumerate(SIZES))


# torch.compile: the maps are constants of the traced graph (they depend on the shape only),
# not a data-dependent computation to trace.
_constant_segment_maps = torch.compiler.assume_constant_result(lambda *args: _segment_maps(*args))


class BlurAwareAttention(nn.Module):
    """The blur-aware attention (BA) block of BANet (Tsai et al., TIP 2022): multi-kernel
    strip pooling (sizes 1, 3, 5, 7) -> strip convs -> nearest expansion -> 1x1 fuse conv,
    ReLU -> 1x1 conv, sigmoid -> multiply the input -> attention refinement (3x3 conv,
    ReLU, 3x3 conv, sigmoid, multiply again). Parameter names and state_dict keys are the
    authors' BA_Block (banet.md §2, §4), so checkpoints load with strict=True.

    Args:
        channels: C (BANet 128, BANet+ 192); even (the strip convs map C -> C/2).
        fuse_channels: F, the output width of `fuse_conv`: C/2 in BANet (the default),
            C in BANet+ (`BlurAwareAttention(192, fuse_channels=192)`).
        exact_integer_nearest: False (default) expands with F.interpolate's float32 index,
            as the authors; True uses floor(i * n / L) in integers, which differs by one
            source bin at a few sizes (first L = 123, n = 3; none of the models' sizes).
        fused: True (default) runs the fused path — strip_pool once over x, the strip
            convs and the 1x1 fuse conv on the small strip maps, then blur_aware_mask
            (expansion, ReLU, conv_final, sigmoid and product in one pass over x); False
            runs the authors' composition in plain PyTorch (how BANet builds its blocks).
            deblurfast.accelerate() sets it, deaccelerate() restores it.
        backend: the request for the fused path's ops, as for every deblurfast layer
            (None: see deblurfast.dispatch; "reference": the fused algorithm on the ops'
            reference implementations). deblurfast.accelerate() switches it.

    forward(x, return_attention=False) returns the block's output, or (output, z') with
    z' = ReLU(fuse_conv(...)), the auxiliary map the authors return (never formed by the
    fused path unless asked for).
    """

    def __init__(
        self,
        channels: int,
        fuse_channels: int | None = None,
        *,
        exact_integer_nearest: bool = False,
        fused: bool = True,
        backend: str | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        c = as_int(channels)
        if c is None or c < 2 or c % 2:
            raise ArgumentError(f"BlurAwareAttention: channels must be an even int >= 2, got {channels!r}")
        channels, m = c, c // 2
        f = m if fuse_channels is None else as_int(fuse_channels)
        if f is None or f < 1:
            raise ArgumentError(f"BlurAwareAttention: fuse_channels must be a positive int, got {fuse_channels!r}")
        fuse_channels = f
        if backend is not None:
            parse_backend(backend)
        kw = {"device": device, "dtype": dtype}
        self.channels, self.fuse_channels = channels, fuse_channels
        self.exact_integer_nearest, self.fused, self.backend = exact_integer_nearest, bool(fused), backend
        # Registration order is the authors' (it fixes the state_dict order).
        self.pool_1_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_1_w = nn.AdaptiveAvgPool2d((1, None))
        self.conv_1_h = nn.Conv2d(channels, m, (3, 1), padding=(1, 0), bias=False, **kw)
        self.conv_1_w = nn.Conv2d(channels, m, (1, 3), padding=(0, 1), bias=False, **kw)
        self.pool_3_h = nn.AdaptiveAvgPool2d((None, 3))
        self.pool_3_w = nn.AdaptiveAvgPool2d((3, None))
        self.conv_3 = nn.Conv2d(channels, m, 3, padding=1, bias=False, **kw)
        self.pool_5_h = nn.AdaptiveAvgPool2d((None, 5))
        self.pool_5_w = nn.AdaptiveAvgPool2d((5, None))
        self.conv_5 = nn.Conv2d(channels, m, 3, padding=1, bias=False, **kw)
        self.pool_7_h = nn.AdaptiveAvgPool2d((None, 7))
        self.pool_7_w = nn.AdaptiveAvgPool2d((7, None))
        self.conv_7 = nn.Conv2d(channels, m, 3, padding=1, bias=False, **kw)
        self.fuse_conv = nn.Conv2d(4 * m, fuse_channels, 1, bias=False, **kw)
        self.relu = nn.ReLU()
        self.conv_final = nn.Conv2d(fuse_channels, channels, 1, bias=True, **kw)
        self.mask_conv_1 = nn.Conv2d(channels, channels, 3, padding=1, bias=True, **kw)
        self.mask_relu = nn.ReLU()
        self.mask_conv_2 = nn.Conv2d(channels, channels, 3, padding=1, bias=True, **kw)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, fuse_channels={self.fuse_channels}, fused={self.fused}, "
                f"exact_integer_nearest={self.exact_integer_nearest}")

    def _strip_convs(self, x_h: list[torch.Tensor], x_w: list[torch.Tensor]):
        """The convs on the pooled strips: x_h[i] (N, C, H, n), x_w[i] (N, C, n, W) for n in SIZES."""
        g_h = [self.conv_1_h(x_h[0]), self.conv_3(x_h[1]), self.conv_5(x_h[2]), self.conv_7(x_h[3])]
        g_w = [self.conv_1_w(x_w[0]), self.conv_3(x_w[1]), self.conv_5(x_w[2]), self.conv_7(x_w[3])]
        return g_h, g_w

    def _expand(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if not self.exact_integer_nearest:
            return F.interpolate(t, size=size, mode="nearest")
        iy = nearest_index(size[0], t.shape[2], t.device)
        ix = nearest_index(size[1], t.shape[3], t.device)
        return t.index_select(2, iy).index_select(3, ix)

    def _reference(self, x: torch.Tensor):
        """The authors' BA_Block forward (banet.md §3), plain PyTorch."""
        h, w = x.shape[-2:]
        # The pool_n_h / pool_n_w layers' adaptive average pools, all sizes in one op: the same
        # PyTorch pooling in eager, and one exact node in an ONNX export with dynamic H and W (torch's
        # own export of a non-dividing adaptive pool is fixed to the traced size).
        pooled = strip_pool(x, SIZES, backend="reference")
        g_h, g_w = self._strip_convs([v for v, _ in pooled], [t for _, t in pooled])
        y = [g_h[0].expand(-1, -1, h, w) + g_w[0].expand(-1, -1, h, w)]
        y += [self._expand(a, (h, w)) + self._expand(b, (h, w)) for a, b in zip(g_h[1:], g_w[1:])]
        z = self.relu(self.fuse_conv(torch.cat(y, 1)))
        x1 = x * torch.sigmoid(self.conv_final(z))
        return x1, z

    def _fused(self, x: torch.Tensor, return_attention: bool):
        """The same function: strip_pool once, the linear part of the chain on the small maps,
        then blur_aware_mask over x."""
        H, W = x.shape[-2:]
        pooled = strip_pool(x, SIZES, backend=self.backend)
        g_h, g_w = self._strip_convs([v for v, _ in pooled], [h for _, h in pooled])
        col_index, col_sel = _constant_segment_maps(W, 3, self.exact_integer_nearest, x.dtype, x.device)
        row_index, row_sel = _constant_segment_maps(H, 2, self.exact_integer_nearest, x.dtype, x.device)
        # fuse_conv is linear: apply it to the strips gathered per segment instead of the expanded sum
        row_table = self.fuse_conv(torch.cat([g @ s for g, s in zip(g_h, col_sel)], 1))  # (N, F, H, KA)
        col_table = self.fuse_conv(torch.cat([s.T @ g for g, s in zip(g_w, row_sel)], 1))  # (N, F, KB, W)
        x1 = blur_aware_mask(x, row_table, col_index, col_table, row_index, self.conv_final.weight,
                             self.conv_final.bias, backend=self.backend)
        z = None
        if return_attention:
            z = self.relu(row_table.index_select(3, col_index) + col_table.index_select(2, row_index))
        return x1, z

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ArgumentError(f"BlurAwareAttention: x must be (N, {self.channels}, H, W), got {shape}")
        x1, z = self._fused(x, return_attention) if self.fused else self._reference(x)
        out = x1 * torch.sigmoid(self.mask_conv_2(self.mask_relu(self.mask_conv_1(x1))))
        return (out, z) if return_attention else out
