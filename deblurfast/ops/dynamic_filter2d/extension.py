"""Fake kernels and autograd for the compiled torch.ops.deblurfast.dynamic_filter2d
(C++ on CPU, CUDA on GPU; schemas in csrc/deblurfast.cpp)."""

import torch

from ... import _ext
from ..._registration import register_backward
from .reference import dynamic_filter2d_reference

if _ext.has_compiled_op("dynamic_filter2d"):

    @torch.library.register_fake("deblurfast::dynamic_filter2d")
    def _(input, kernel, kernel_size, dilation, padding_mode, softmax):
        return input.new_empty(input.shape)

    @torch.library.register_fake("deblurfast::dynamic_filter2d_backward")
    def _(grad_output, input, kernel, kernel_size, dilation, padding_mode, softmax, output_mask):
        return (
            input.new_empty(input.shape if output_mask[0] else (0,)),
            kernel.new_empty(kernel.shape if output_mask[1] else (0,)),
        )

    register_backward(
        "deblurfast::dynamic_filter2d", torch.ops.deblurfast.dynamic_filter2d_backward.default, num_tensors=2,
        reference=dynamic_filter2d_reference,
    )


def dynamic_filter2d_compiled(input, kernel, kernel_size, dilation, padding_mode, softmax):
    return torch.ops.deblurfast.dynamic_filter2d.default(input, kernel, kernel_size, dilation, padding_mode, softmax)
