"""Drop-in module for per-pixel dynamic filtering (ops.md §2)."""

from __future__ import annotations

import torch
from torch import nn

from ..dispatch import parse_backend
from ..ops import dynamic_filter2d
from ..ops.dynamic_filter2d.function import check_arguments


class DynamicFilter2d(nn.Module):
    """Filters `x` with per-pixel kernels predicted elsewhere (kernel-prediction
    networks, involution, ASPDC's reblurring network): forward(x, kernel) with
    x (N, C, H, W) and kernel (N, G*k*k, H, W), one k x k kernel per pixel shared
    by the C/G channels of each group. normalize="softmax" (ASPDC's default)
    applies a softmax over the k*k taps, fused in the kernel. No parameters.
    """

    def __init__(self, kernel_size: int = 3, dilation: int = 1, padding_mode: str = "reflect",
                 normalize: str | None = "softmax", *, backend: str | None = None):
        super().__init__()
        kernel_size, dilation = check_arguments(kernel_size, dilation, padding_mode, normalize, "DynamicFilter2d")
        if backend is not None:
            parse_backend(backend)
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding_mode, self.normalize, self.backend = padding_mode, normalize, backend

    def forward(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        return dynamic_filter2d(x, kernel, self.kernel_size, self.dilation, self.padding_mode, self.normalize,
                                backend=self.backend)

    def extra_repr(self) -> str:
        s = (f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding_mode={self.padding_mode!r}, "
             f"normalize={self.normalize!r}")
        return s + (f", backend={self.backend!r}" if self.backend is not None else "")
