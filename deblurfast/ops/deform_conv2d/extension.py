"""Fake kernels and autograd for the compiled torch.ops.deblurfast.deform_conv2d
(C++ on CPU, CUDA on GPU; schemas in csrc/deblurfast.cpp)."""

import torch

from ... import _ext
from ..._registration import register_backward
from .reference import deform_conv2d_reference_op_order, output_size

if _ext.has_compiled_op("deform_conv2d"):

    @torch.library.register_fake("deblurfast::deform_conv2d")
    def _(input, offset, weight, bias, mask, stride, padding, dilation):
        N, _, H, W = input.shape
        Cout, _, kh, kw = weight.shape
        Ho = output_size(H, kh, stride[0], padding[0], dilation[0])
        Wo = output_size(W, kw, stride[1], padding[1], dilation[1])
        return input.new_empty((N, Cout, Ho, Wo))

    @torch.library.register_fake("deblurfast::deform_conv2d_backward")
    def _(grad_output, input, offset, weight, bias, mask, stride, padding, dilation, output_mask):
        def like(wanted, t):
            return input.new_empty(t.shape if wanted and t is not None else (0,))

        return (like(output_mask[0], input), like(output_mask[1], offset), like(output_mask[2], weight),
                like(output_mask[3], bias), like(output_mask[4], mask))

    register_backward(
        "deblurfast::deform_conv2d", torch.ops.deblurfast.deform_conv2d_backward.default, num_tensors=5,
        reference=deform_conv2d_reference_op_order,
    )


def deform_conv2d_compiled(input, offset, weight, bias, stride, padding, dilation, mask):
    return torch.ops.deblurfast.deform_conv2d.default(
        input, offset, weight, bias, mask, list(stride), list(padding), list(dilation)
    )
