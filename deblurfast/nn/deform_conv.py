"""Drop-in modules for modulated deformable convolution (ops.md §1).

- DeformConv2d: torchvision.ops.DeformConv2d's constructor, parameters and forward.
- ModulatedDeformConv2d: mmcv.ops.ModulatedDeformConv2d's constructor (deform_groups
  included), parameter names and forward(x, offset, mask).
- PixelDependentFilter: SAPHNet's local branch (Suin et al., CVPR 2020, Eq. 11): a
  predicted per-pixel kernel V used as the mask of a deformable convolution with
  bounded predicted offsets.

Every module takes `backend` (None: deblurfast's dispatch rules; see
deblurfast.dispatch), so a model can pin or switch its implementation.

TorchScript: torch.jit.script(module) works for all three. Backend selection is
Python (Triton kernels and the reference are Python functions), so a scripted
module calls the compiled op torch.ops.deblurfast.deform_conv2d directly: the C++
(CPU, float32/float64) and CUDA kernels, with the compiled op's argument checks.
Its gradients are registered from Python, so a scripted module trains in a Python
process and runs forward only in LibTorch (load deblurfast/_C*.so there). A module
pinned to backend="reference" or "triton" refuses to be scripted. The functional
deblurfast.deform_conv2d is not scriptable for the same reason; script code calls
torch.ops.deblurfast.deform_conv2d. torch.export and torch.compile take the
modules as they are.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .. import _ext
from .._checks import ArgumentError, integer, pair
from ..dispatch import parse_backend
from ..ops import deform_conv2d


def _deform_conv(x: torch.Tensor, offset: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
                 stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                 mask: Optional[torch.Tensor], backend: Optional[str]) -> torch.Tensor:
    """deform_conv2d through the dispatcher; under TorchScript, the compiled op (see the module doc)."""
    if torch.jit.is_scripting():
        return torch.ops.deblurfast.deform_conv2d(x, offset, weight, bias, [stride[0], stride[1]],
                                                  [padding[0], padding[1]], [dilation[0], dilation[1]], mask)
    return _dispatched(x, offset, weight, bias, stride, padding, dilation, mask, backend)


@torch.jit.unused
def _dispatched(x: torch.Tensor, offset: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
                stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                mask: Optional[torch.Tensor], backend: Optional[str]) -> torch.Tensor:
    return deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask, backend=backend)


def _check_scriptable(module: nn.Module) -> None:
    """Why `module` (with a `backend`) cannot run under TorchScript, as an error; see the module doc."""
    name = type(module).__name__
    if not _ext.has_compiled_op("deform_conv2d"):
        raise RuntimeError(f"{name}: TorchScript runs torch.ops.deblurfast.deform_conv2d, which this build lacks: "
                           f"{_ext.EXTENSION_ERROR or 'rebuild the extension'}")
    if module.backend is not None and not set(parse_backend(module.backend)) & {"auto", "cpu", "cuda"}:
        raise RuntimeError(f"{name}: backend={module.backend!r} cannot be scripted: TorchScript runs the compiled "
                           "op (the cpu and cuda backends); set backend=None to script the module")


class _DeformConvBase(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, backend):
        super().__init__()
        name = type(self).__name__
        in_channels = integer(name, "in_channels", in_channels, 1)
        out_channels = integer(name, "out_channels", out_channels, 1)
        groups = integer(name, "groups", groups, 1)
        if in_channels % groups or out_channels % groups:
            raise ArgumentError(f"{name}: in_channels={in_channels} and out_channels={out_channels} must be "
                                f"divisible by groups={groups}")
        if backend is not None:
            parse_backend(backend)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(name, "kernel_size", kernel_size, 1)
        self.stride = pair(name, "stride", stride, 1)
        self.padding = pair(name, "padding", padding, 0)
        self.dilation = pair(name, "dilation", dilation, 1)
        self.groups = groups
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_channels)) if bias else None)

    def _conv(self, x: torch.Tensor, offset: Optional[torch.Tensor], mask: Optional[torch.Tensor]) -> torch.Tensor:
        return _deform_conv(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask,
                            self.backend)

    def __prepare_scriptable__(self):
        _check_scriptable(self)
        return self

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}, dilation={self.dilation}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.backend is not None:
            s += f", backend={self.backend!r}"
        return s


class DeformConv2d(_DeformConvBase):
    """torchvision.ops.DeformConv2d, with deblurfast's kernels.

    forward(input, offset, mask=None): offset (N, 2*G*kh*kw, Ho, Wo) or None (no
    interpolation), mask (N, G*kh*kw, Ho, Wo) or None. Same parameters
    (`weight`, `bias`) and initialization as torchvision's, so state_dicts load both ways.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, backend: str | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, backend)
        self.reset_parameters()

    def reset_parameters(self) -> None:  # torchvision's
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor, offset: Optional[torch.Tensor],
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._conv(input, offset, mask)


class ModulatedDeformConv2d(_DeformConvBase):
    """mmcv.ops.ModulatedDeformConv2d, with deblurfast's kernels.

    forward(x, offset, mask): offset (N, 2*deform_groups*kh*kw, Ho, Wo), mask
    (N, deform_groups*kh*kw, Ho, Wo) — used as given (mmcv's callers apply the
    sigmoid). Same constructor, parameter names (`weight`, `bias`) and
    initialization as mmcv's, so mmcv checkpoints load with strict=True.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, deform_groups: int = 1, bias: bool = True, *, backend: str | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, backend)
        deform_groups = integer("ModulatedDeformConv2d", "deform_groups", deform_groups, 1)
        if self.in_channels % deform_groups:
            raise ArgumentError(f"ModulatedDeformConv2d: in_channels={in_channels} must be divisible by "
                                f"deform_groups={deform_groups}")
        self.deform_groups = deform_groups
        self.init_weights()

    def init_weights(self) -> None:  # mmcv's
        n = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        stdv = 1.0 / math.sqrt(n)
        self.weight.data.uniform_(-stdv, stdv)
        if self.bias is not None:
            self.bias.data.zero_()

    def forward(self, x: torch.Tensor, offset: Optional[torch.Tensor], mask: Optional[torch.Tensor]) -> torch.Tensor:
        K = self.kernel_size[0] * self.kernel_size[1]
        if offset is not None and offset.dim() == 4 and offset.shape[1] != 2 * self.deform_groups * K:
            raise ArgumentError(f"ModulatedDeformConv2d: offset must have 2*deform_groups*kh*kw = "
                                f"{2 * self.deform_groups * K} channels, got {offset.shape[1]}")
        return self._conv(x, offset, mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", deform_groups={self.deform_groups}" if self.deform_groups != 1 else "")


class PixelDependentFilter(nn.Module):
    """SAPHNet's pixel-dependent filtering (local branch of the content-aware module).

        V = kernel_conv(x)                         per-pixel k x k kernel, no activation
        D = max_offset * tanh(offset_conv(x))      bounded (dy, dx) per tap (offsets=True)
        y = deform_conv2d(x, D, weight, bias, padding=k//2, mask=V)

    With offsets=False (variant (a) of the paper's Table 1) there is no offset
    branch and the op runs with offset=None: pixel-adaptive convolution.

    Parameters: `kernel_conv` (C -> k*k, 3x3), `offset_conv` (C -> 2*k*k, 3x3;
    only with offsets=True, initialized to zero so training starts from the
    regular grid, as DCN implementations do), `weight` (C_out, C, k, k), `bias`.
    """

    def __init__(self, channels: int = 128, out_channels: int | None = None, kernel_size: int = 5,
                 max_offset: float = 4.0, offsets: bool = True, bias: bool = True, *, backend: str | None = None):
        super().__init__()
        name = "PixelDependentFilter"
        channels = integer(name, "channels", channels, 1)
        kernel_size = integer(name, "kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ArgumentError(f"{name}: kernel_size must be odd, got {kernel_size}")
        out_channels = channels if out_channels is None else integer(name, "out_channels", out_channels, 1)
        if backend is not None:
            parse_backend(backend)
        k2 = kernel_size * kernel_size
        self.kernel_size, self.max_offset, self.backend = kernel_size, float(max_offset), backend
        self.kernel_conv = nn.Conv2d(channels, k2, 3, padding=1)
        self.offset_conv = nn.Conv2d(channels, 2 * k2, 3, padding=1) if offsets else None
        if self.offset_conv is not None:
            nn.init.zeros_(self.offset_conv.weight)
            nn.init.zeros_(self.offset_conv.bias)
        self.weight = nn.Parameter(torch.empty(out_channels, channels, kernel_size, kernel_size))
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_channels)) if bias else None)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def offsets(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The bounded offsets (N, 2*k*k, H, W), or None without the offset branch."""
        if self.offset_conv is None:
            return None
        return self.max_offset * torch.tanh(self.offset_conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        return _deform_conv(x, self.offsets(x), self.weight, self.bias, (1, 1), (pad, pad), (1, 1),
                            self.kernel_conv(x), self.backend)

    def __prepare_scriptable__(self):
        _check_scriptable(self)
        return self

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, max_offset={self.max_offset}, "
                f"offsets={self.offset_conv is not None}" + (f", backend={self.backend!r}" if self.backend else ""))
