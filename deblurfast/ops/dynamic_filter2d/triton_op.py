"""dynamic_filter2d's Triton backend as torch custom ops (opaque to
torch.compile, with fake kernels and autograd)."""

from typing import List, Tuple

import torch

from ..._registration import register_backward
from .reference import dynamic_filter2d_reference


@torch.library.custom_op("deblurfast::dynamic_filter2d_triton", mutates_args=())
def dynamic_filter2d_triton(
    input: torch.Tensor, kernel: torch.Tensor, kernel_size: int, dilation: int, padding_mode: str, softmax: bool
) -> torch.Tensor:
    from deblurfast.kernels import dynamic_filter2d as kernels

    return kernels.forward(input, kernel, kernel_size, dilation, padding_mode, softmax)


@dynamic_filter2d_triton.register_fake
def _(input, kernel, kernel_size, dilation, padding_mode, softmax):
    from deblurfast.kernels.layout import memory_format

    return torch.empty_like(input, memory_format=memory_format(input))


@torch.library.custom_op("deblurfast::dynamic_filter2d_triton_backward", mutates_args=())
def dynamic_filter2d_triton_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    kernel: torch.Tensor,
    kernel_size: int,
    dilation: int,
    padding_mode: str,
    softmax: bool,
    output_mask: List[bool],
) -> Tuple[torch.Tensor, torch.Tensor]:
    from deblurfast.kernels import dynamic_filter2d as kernels

    return kernels.backward(grad_output, input, kernel, kernel_size, dilation, padding_mode, softmax, output_mask)


@dynamic_filter2d_triton_backward.register_fake
def _(grad_output, input, kernel, kernel_size, dilation, padding_mode, softmax, output_mask):
    return (
        input.new_empty(input.shape if output_mask[0] else (0,)),
        kernel.new_empty(kernel.shape if output_mask[1] else (0,)),
    )


register_backward(dynamic_filter2d_triton, dynamic_filter2d_triton_backward, num_tensors=2,
                  reference=dynamic_filter2d_reference)
