"""dynamic_filter2d in plain PyTorch: the executable form of ops.md §2."""

import torch
import torch.nn.functional as F


def dynamic_filter2d_reference(
    input: torch.Tensor,
    kernel: torch.Tensor,
    kernel_size: int = 3,
    dilation: int = 1,
    padding_mode: str = "reflect",
    softmax: bool = False,
) -> torch.Tensor:
    """out[n, c, h, w] = sum_{i,j} w[n, g*k*k + i*k + j, h, w] * xpad[n, c, h + i*d, w + j*d].

    g = c // (C / G); w is `kernel`, softmax-normalized over its k*k taps when
    `softmax`; xpad is `input` padded by d*(k-1)/2 on every side. With zeros
    padding a tap that reads the padding contributes nothing: its kernel value is
    not read (so a NaN there stays out, as in the compiled kernels). Arguments are
    assumed valid (deblurfast.ops.dynamic_filter2d checks them). Differentiable;
    memory stays a few times the input's, whatever the dilation (no padded copy
    larger than the image is formed).
    """
    N, C, H, W = input.shape
    k, d = kernel_size, dilation
    taps = k * k
    groups = kernel.shape[1] // taps
    pad = d * (k - 1) // 2
    w = kernel.reshape(N, groups, taps, H, W)
    if softmax:
        w = w.softmax(dim=2)
    x = input.reshape(N, groups, C // groups, H, W)
    if padding_mode != "zeros" and C > 0 and pad > 0:
        # Reflect needs pad < H, W (checked), so nothing is capped there; replicate reads the edge
        # for every shift of at least H - 1 (W - 1), so a pad capped there reads the same values.
        ph, pw = min(pad, H - 1), min(pad, W - 1)
        x = F.pad(input, (pw, pw, ph, ph), mode=padding_mode).reshape(N, groups, C // groups, H + 2 * ph, W + 2 * pw)
    else:
        ph = pw = 0  # zeros: each tap reads the image part of its window only
    center = (k // 2) * k + k // 2  # shift (0, 0): every output pixel reads the image
    out = x[..., ph : ph + H, pw : pw + W] * w[:, :, center : center + 1]
    for t in range(taps):
        if t == center:
            continue
        i, j = divmod(t, k)
        dy, dx = i * d - pad, j * d - pad  # output pixel (h, w) of tap t reads input (h + dy, w + dx)
        if padding_mode == "zeros" or C == 0:
            h0, h1, w0, w1 = max(0, -dy), min(H, H - dy), max(0, -dx), min(W, W - dx)
            if h0 >= h1 or w0 >= w1:
                continue  # the tap reads padding only
            sy, sx = h0 + dy, w0 + dx
        else:
            h0, h1, w0, w1 = 0, H, 0, W
            sy, sx = ph + max(-ph, min(ph, dy)), pw + max(-pw, min(pw, dx))
        term = x[..., sy : sy + h1 - h0, sx : sx + w1 - w0] * w[:, :, t : t + 1, h0:h1, w0:w1]
        out[..., h0:h1, w0:w1] += term
    return out.reshape(N, C, H, W)
