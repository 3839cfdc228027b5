"""The one-buffer form of strip_pool's output that the Triton and C++ backends write:
[N, C, H*K + K*W] with K = sum(sizes), per plane the v maps [H, K] then the h maps [K, W]."""

from __future__ import annotations

from typing import List

import torch

from .reference import strip_pool_reference


def pool_buffer_reference(x: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    """The buffer computed by the reference (differentiable)."""
    N, C = x.shape[:2]
    pooled = strip_pool_reference(x, tuple(sizes))
    v = torch.cat([v for v, _ in pooled], dim=3).reshape(N, C, -1)
    h = torch.cat([h for _, h in pooled], dim=2).reshape(N, C, -1)
    return torch.cat([v, h], dim=2)


def pool_buffer_views(buf: torch.Tensor, shape, sizes) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(v_n, h_n)] as views of the buffer: v_n [N, C, H, n] (row stride K), h_n [N, C, n, W]."""
    views = _BufferViews.apply(buf, tuple(shape), tuple(sizes))
    return [(views[2 * i], views[2 * i + 1]) for i in range(len(sizes))]


def _views(buf: torch.Tensor, shape, sizes) -> list[torch.Tensor]:
    N, C, H, W = shape
    K = sum(sizes)
    v = buf[..., : H * K].view(N, C, H, K)
    h = buf[..., H * K :].view(N, C, K, W)
    out, off = [], 0
    for n in sizes:
        out += [v[..., off : off + n], h[:, :, off : off + n, :]]
        off += n
    return out


class _BufferViews(torch.autograd.Function):
    """The views, with a backward that concatenates the views' gradients into one buffer (autograd's
    own backward of 2 * len(sizes) slices fills and adds a buffer-sized tensor per slice, which cost
    more than the pooling kernel)."""

    @staticmethod
    def forward(ctx, buf, shape, sizes):
        ctx.shape, ctx.sizes, ctx.buf_shape = shape, sizes, buf.shape
        return tuple(_views(buf, shape, sizes))

    @staticmethod
    def backward(ctx, *grads):
        # out of place (cat), so that the backward is itself differentiable (double backward)
        N, C, H, W = ctx.shape
        like = next(g for g in grads if g is not None)
        shapes = [s for n in ctx.sizes for s in ((N, C, H, n), (N, C, n, W))]
        grads = [g if g is not None else like.new_zeros(s) for g, s in zip(grads, shapes)]
        K = sum(ctx.sizes)
        v = torch.cat(grads[0::2], dim=3).reshape(N, C, H * K)
        h = torch.cat(grads[1::2], dim=2).reshape(N, C, K * W)
        return torch.cat([v, h], dim=2), None, None
