"""deform_conv2d's Triton backend as torch custom ops (opaque to torch.compile,
with fake kernels and autograd)."""

from typing import List, Optional, Tuple

import torch

from ..._registration import register_backward
from .reference import deform_conv2d_reference_op_order, output_size


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last output for a channels_last input, as torch's convolutions do."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@torch.library.custom_op("deblurfast::deform_conv2d_triton", mutates_args=())
def deform_conv2d_triton(
    input: torch.Tensor,
    offset: Optional[torch.Tensor],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
) -> torch.Tensor:
    from deblurfast.kernels import deform_conv2d as kernels

    return kernels.forward(input, offset, weight, bias, mask, stride, padding, dilation, output_memory_format(input))


@deform_conv2d_triton.register_fake
def _(input, offset, weight, bias, mask, stride, padding, dilation):
    N, _, H, W = input.shape
    Cout, _, kh, kw = weight.shape
    shape = (N, Cout, output_size(H, kh, stride[0], padding[0], dilation[0]),
             output_size(W, kw, stride[1], padding[1], dilation[1]))
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=output_memory_format(input))


@torch.library.custom_op("deblurfast::deform_conv2d_triton_backward", mutates_args=())
def deform_conv2d_triton_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    offset: Optional[torch.Tensor],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    output_mask: List[bool],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from deblurfast.kernels import deform_conv2d as kernels

    return kernels.backward(grad_output, input, offset, weight, bias, mask, stride, padding, dilation, output_mask)


@deform_conv2d_triton_backward.register_fake
def _(grad_output, input, offset, weight, bias, mask, stride, padding, dilation, output_mask):
    def like(wanted, t):
        return input.new_empty(t.shape if wanted and t is not None else (0,))

    # grad_input keeps the input's layout (kernels.backward)
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device,
                             memory_format=output_memory_format(input)) if output_mask[0] else like(False, input)
    return (grad_input, like(output_mask[1], offset), like(output_mask[2], weight),
            like(output_mask[3], bias), like(output_mask[4], mask))


register_backward(deform_conv2d_triton, deform_conv2d_triton_backward, num_tensors=5,
                  reference=deform_conv2d_reference_op_order)


def deform_conv2d_triton_backend(input, offset, weight, bias, stride, padding, dilation, mask):
    return deform_conv2d_triton(input, offset, weight, bias, mask, list(stride), list(padding), list(dilation))
