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
    `softmax`; xpad is `input` padded by d*(k-1)/2 on every side. Arguments are
    assumed valid (deblurfast.ops.dynamic_filter2d checks them). Differentiable;
    memory stays a few times the input's (the taps are strided views of xpad).
    """
    N, C, H, W = input.shape
    k, d = kernel_size, dilation
    taps = k * k
    groups = kernel.shape[1] // taps
    pad = d * (k - 1) // 2
    # F.pad refuses reflect/replicate on a tensor with no channels; nothing is read then anyway.
    mode = "constant" if padding_mode == "zeros" or C == 0 else padding_mode
    xpad = F.pad(input, (pad, pad, pad, pad), mode=mode) if pad else input
    xg = xpad.reshape(N, groups, C // groups, H + 2 * pad, W + 2 * pad)
    w = kernel.reshape(N, groups, taps, H, W)
    if softmax:
        w = w.softmax(dim=2)
    out = None
    for t in range(taps):
        i, j = divmod(t, k)
        term = xg[..., i * d : i * d + H, j * d : j * d + W] * w[:, :, t : t + 1]
        out = term if out is None else out + term
    return out.reshape(N, C, H, W)
