"""Modulated deformable convolution (DCNv2) in plain PyTorch: the executable
form of ops.md §1, equal to torchvision.ops.deform_conv2d.

Output rows are processed in chunks whose sampled columns (N, Cin, K, rows*Wo)
stay under CHUNK_ELEMENTS elements, so memory stays bounded at any image size;
with autograd each chunk is checkpointed (recomputed in backward) for the same
reason.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

CHUNK_ELEMENTS = 1 << 24  # sampled-column elements per chunk (64 MB in float32)


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _flat_planes(x: torch.Tensor, groups: int) -> torch.Tensor:
    """x (N, Cin, H, W) as (N, G, Cin/G, H*W + 1): each plane flattened, then one zero
    appended, which every sample outside the image reads (a gather from index 0 times
    a zero weight would carry x[..., 0, 0] along when it is NaN or inf)."""
    N, Cin, H, W = x.shape
    planes = x.reshape(N, groups, Cin // groups, H * W)
    return torch.cat([planes, planes.new_zeros(N, groups, Cin // groups, 1)], dim=3)


def _sample_rows(
    xg: torch.Tensor,
    H: int,
    W: int,
    offset: torch.Tensor | None,
    mask: torch.Tensor | None,
    rows: torch.Tensor,
    Wo: int,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Modulated samples (N, Cin, K, R*Wo) of output rows `rows` (R of them).

    xg: _flat_planes of the input; offset: (N, 2*G*K, R, Wo) or None; mask: (N, G*K, R, Wo) or None.
    """
    N, G, Cg = xg.shape[:3]
    K, R = kh * kw, rows.numel()
    dev = xg.device
    tap_i = torch.arange(kh, device=dev).repeat_interleave(kw)  # [K] kernel row of tap t
    tap_j = torch.arange(kw, device=dev).repeat(kh)  # [K] kernel column of tap t
    base_y = (rows * stride[0] - padding[0])[None, :, None] + (tap_i * dilation[0])[:, None, None]  # [K, R, 1]
    base_x = (torch.arange(Wo, device=dev) * stride[1] - padding[1])[None, None, :] + (tap_j * dilation[1])[
        :, None, None
    ]  # [K, 1, Wo]

    def gather(yi: torch.Tensor, xi: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # yi, xi, valid: broadcastable to [N, G, K, R, Wo] -> samples [N, G, Cg, K, R, Wo]; invalid reads the zero
        idx = torch.where(valid, yi * W + xi, H * W).expand(N, G, K, R, Wo)
        idx = idx.reshape(N, G, 1, K * R * Wo).expand(N, G, Cg, K * R * Wo)
        return torch.gather(xg, 3, idx).reshape(N, G, Cg, K, R, Wo)

    if offset is None:  # integer positions: no interpolation
        yi, xi = base_y.expand(K, R, Wo), base_x.expand(K, R, Wo)
        samples = gather(yi, xi, (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W))
    else:
        # Positions in float32 at least: float16/bfloat16 cannot hold 720p coordinates to a pixel fraction.
        pos = torch.promote_types(xg.dtype, torch.float32)
        off = offset.reshape(N, G, K, 2, R, Wo).to(pos)
        py = base_y.to(pos) + off[:, :, :, 0]  # [N, G, K, R, Wo]
        px = base_x.to(pos) + off[:, :, :, 1]
        # torchvision's rule: a sample at or beyond one pixel outside reads 0. Written so that a
        # NaN position is outside too (every comparison with NaN is False).
        inside = (py > -1) & (py < H) & (px > -1) & (px < W)
        py = torch.where(inside, py, torch.zeros_like(py))
        px = torch.where(inside, px, torch.zeros_like(px))
        y0f, x0f = torch.floor(py), torch.floor(px)
        ly, lx = py - y0f, px - x0f  # differentiable: the floor's gradient is zero
        y0, x0 = y0f.long(), x0f.long()
        samples = None
        for dy, dx, wgt in (
            (0, 0, (1 - ly) * (1 - lx)),
            (0, 1, (1 - ly) * lx),
            (1, 0, ly * (1 - lx)),
            (1, 1, ly * lx),
        ):
            yc, xc = y0 + dy, x0 + dx
            valid = inside & (yc >= 0) & (yc < H) & (xc >= 0) & (xc < W)
            wgt = torch.where(valid, wgt, torch.zeros_like(wgt)).to(xg.dtype)
            term = gather(yc, xc, valid) * wgt[:, :, None]
            samples = term if samples is None else samples + term
    if mask is not None:
        samples = samples * mask.reshape(N, G, 1, K, R, Wo)
    return samples.reshape(N, G * Cg, K, R * Wo)


def _conv_rows(xg, H, W, offset, mask, weight, rows, Wo, stride, padding, dilation):
    """Output rows `rows` without bias: (N, Cout, R*Wo). xg: _flat_planes of the input."""
    N, Cin = xg.shape[0], xg.shape[1] * xg.shape[2]
    Cout, Cin_g, kh, kw = weight.shape
    groups = Cin // Cin_g
    P = rows.numel() * Wo
    cols = _sample_rows(xg, H, W, offset, mask, rows, Wo, kh, kw, stride, padding, dilation)
    cols = cols.reshape(N, groups, Cin_g * kh * kw, P)  # weight's (c, i, j) order
    w = weight.reshape(groups, Cout // groups, Cin_g * kh * kw)
    return torch.einsum("gok,ngkp->ngop", w, cols).reshape(N, Cout, P)


def deform_conv2d_reference(
    input: torch.Tensor,
    offset: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """ops.md §1; arguments assumed valid (deblurfast.ops.deform_conv2d checks them)."""
    N, Cin, H, W = input.shape
    Cout, _, kh, kw = weight.shape
    Ho = output_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = output_size(W, kw, stride[1], padding[1], dilation[1])
    per_row = max(1, N * Cin * kh * kw * Wo)
    rows_per_chunk = max(1, min(Ho, CHUNK_ELEMENTS // per_row))
    track = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, offset, weight, mask)
    )
    if offset is not None:
        G = offset.shape[1] // (2 * kh * kw)
    else:
        G = mask.shape[1] // (kh * kw) if mask is not None else 1
    xg = _flat_planes(input, G)
    chunks = []
    for r0 in range(0, Ho, rows_per_chunk):
        r1 = min(Ho, r0 + rows_per_chunk)
        rows = torch.arange(r0, r1, device=input.device)
        off = offset[:, :, r0:r1] if offset is not None else None
        msk = mask[:, :, r0:r1] if mask is not None else None
        args = (xg, H, W, off, msk, weight, rows, Wo, stride, padding, dilation)
        if track and rows_per_chunk < Ho:
            chunks.append(checkpoint(_conv_rows, *args, use_reentrant=False))
        else:
            chunks.append(_conv_rows(*args))
    if chunks:
        out = torch.cat(chunks, dim=2).reshape(N, Cout, Ho, Wo)
    else:  # Ho == 0 cannot happen for valid arguments; keep the shape anyway
        out = input.new_zeros(N, Cout, Ho, Wo)
    if bias is not None:
        out = out + bias.reshape(1, Cout, 1, 1)
    return out
