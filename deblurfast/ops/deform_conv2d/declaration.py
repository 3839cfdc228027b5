"""deform_conv2d's one declaration: schema (the public argument order), reference, output
shape and backends with their limits. The compiled kernels are csrc/{cpu,cuda}/deform_conv2d*,
the Triton ones kernels/deform_conv2d.py."""

from __future__ import annotations

import torch

from ..._registration import Compiled, OpSpec, Triton, register_op
from ...dispatch import FLOAT_DTYPES
from ...kernels.layout import memory_format
from ...kernels.limits import int32_overflow
from .reference import deform_conv2d_reference, output_size


def output_shape(input, offset, weight, bias, stride, padding, dilation, mask) -> tuple[int, int, int, int]:
    N, _, H, W = input.shape
    Cout, _, kh, kw = weight.shape
    return (N, Cout, output_size(H, kh, stride[0], padding[0], dilation[0]),
            output_size(W, kw, stride[1], padding[1], dilation[1]))


def _plane_limit(input, offset, weight, bias, stride, padding, dilation, mask) -> str | None:
    _, _, Ho, Wo = output_shape(input, offset, weight, bias, stride, padding, dilation, mask)
    H, W = input.shape[-2:]
    return int32_overflow(("H*W", H * W), ("Ho*Wo", Ho * Wo))


def _triton_limits(input, *args) -> str | None:
    _, C, H, W = input.shape
    # a sample's corners are 32-bit offsets within its (channels_last) image: (y * W + x) * C
    return _plane_limit(input, *args) or int32_overflow(("C*H*W", C * H * W))


def _cuda_limits(input, *args) -> str | None:
    if (torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
            and torch.is_grad_enabled() and input.requires_grad):
        return "its grad_input uses float atomics and torch.use_deterministic_algorithms(True) is set"
    return _plane_limit(input, *args)


OP = register_op(OpSpec(
    "deform_conv2d",
    "(Tensor input, Tensor? offset, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
    "Tensor? mask) -> Tensor",
    reference=deform_conv2d_reference,
    output_shape=output_shape,
    backends={
        "cpu": Compiled((torch.float32, torch.float64)),
        "cuda": Compiled(FLOAT_DTYPES, _cuda_limits),
        "triton": Triton("deform_conv2d", dtypes=(torch.float32, torch.float16, torch.bfloat16),
                         can_run=_triton_limits,
                         # channels_last in, channels_last out, as torch's convolutions do
                         memory_format=lambda input, *args: memory_format(input),
                         input_gradient_keeps_format=True),
    },
    # `auto` on CUDA: the default order (CUDA first) until measured on a GPU. In the static report
    # (bench/results/static-sm90) the CUDA deform kernels keep no stack frame, while several Triton
    # configurations (channels_last, float32, the backward at 5x5) still spill.
))
