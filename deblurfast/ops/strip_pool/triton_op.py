"""The Triton backends of strip_pool, strip_expand and blur_aware_mask as torch
custom ops (opaque to torch.compile, with fake kernels and autograd)."""

from typing import List, Optional, Tuple

import torch

from ..._registration import register_backward
from .buffer import pool_buffer_reference, pool_buffer_views
from .reference import blur_aware_mask_reference, strip_expand_reference


# -- strip_pool: one output buffer holding every pooled map (see .buffer) ---------------------------------


@torch.library.custom_op("deblurfast::strip_pool_triton", mutates_args=())
def strip_pool_triton_op(x: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    from deblurfast.kernels import strip_pool as kernels

    return kernels.pool_forward(x, tuple(sizes))


@strip_pool_triton_op.register_fake
def _(x, sizes):
    N, C, H, W = x.shape
    K = sum(sizes)
    return x.new_empty((N, C, H * K + K * W))


@torch.library.custom_op("deblurfast::strip_pool_triton_backward", mutates_args=())
def strip_pool_triton_backward(
    grad_buf: torch.Tensor, x: torch.Tensor, sizes: List[int], output_mask: List[bool]
) -> List[torch.Tensor]:
    from deblurfast.kernels import strip_pool as kernels

    return [kernels.pool_backward(grad_buf, x, tuple(sizes)) if output_mask[0] else x.new_empty(0)]


@strip_pool_triton_backward.register_fake
def _(grad_buf, x, sizes, output_mask):
    return [x.new_empty(x.shape if output_mask[0] else (0,))]


register_backward(strip_pool_triton_op, strip_pool_triton_backward, num_tensors=1,
                  reference=pool_buffer_reference)


def strip_pool_triton(x: torch.Tensor, sizes: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return pool_buffer_views(strip_pool_triton_op(x, list(sizes)), x.shape, sizes)


# -- strip_expand ------------------------------------------------------------------------------------------


@torch.library.custom_op("deblurfast::strip_expand_triton", mutates_args=())
def strip_expand_triton_op(v: torch.Tensor, h: torch.Tensor, H: int, W: int) -> torch.Tensor:
    from deblurfast.kernels import strip_pool as kernels

    return kernels.expand_forward(v, h, H, W)


@strip_expand_triton_op.register_fake
def _(v, h, H, W):
    return v.new_empty((v.shape[0], v.shape[1], H, W))


@torch.library.custom_op("deblurfast::strip_expand_triton_backward", mutates_args=())
def strip_expand_triton_backward(
    grad_out: torch.Tensor, v: torch.Tensor, h: torch.Tensor, H: int, W: int, output_mask: List[bool]
) -> Tuple[torch.Tensor, torch.Tensor]:
    from deblurfast.kernels import strip_pool as kernels

    # one pass computes both gradients; an unneeded one is dropped
    grad_v, grad_h = kernels.expand_backward(grad_out, v.shape[3], h.shape[2])
    return grad_v if output_mask[0] else v.new_empty(0), grad_h if output_mask[1] else h.new_empty(0)


@strip_expand_triton_backward.register_fake
def _(grad_out, v, h, H, W, output_mask):
    return v.new_empty(v.shape if output_mask[0] else (0,)), h.new_empty(h.shape if output_mask[1] else (0,))


register_backward(strip_expand_triton_op, strip_expand_triton_backward, num_tensors=2,
                  reference=lambda v, h, H, W: strip_expand_reference(v, h, (H, W)))


def strip_expand_triton(v: torch.Tensor, h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return strip_expand_triton_op(v, h, size[0], size[1])


# -- blur_aware_mask ----------------------------------------------------------------------------------------


@torch.library.custom_op("deblurfast::blur_aware_mask_triton", mutates_args=())
def blur_aware_mask_triton_op(
    x: torch.Tensor,
    row_table: torch.Tensor,
    col_table: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    col_index: torch.Tensor,
    row_index: torch.Tensor,
) -> torch.Tensor:
    from deblurfast.kernels import strip_pool as kernels

    return kernels.mask_forward(x, row_table, col_table, col_index, row_index, weight, bias)


@blur_aware_mask_triton_op.register_fake
def _(x, row_table, col_table, weight, bias, col_index, row_index):
    return x.new_empty(x.shape)


@torch.library.custom_op("deblurfast::blur_aware_mask_triton_backward", mutates_args=())
def blur_aware_mask_triton_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    row_table: torch.Tensor,
    col_table: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    col_index: torch.Tensor,
    row_index: torch.Tensor,
    output_mask: List[bool],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from deblurfast.kernels import strip_pool as kernels

    grads = kernels.mask_backward(grad_out, x, row_table, col_table, col_index, row_index, weight, bias, output_mask)
    # the index maps take no gradient
    return (*grads, col_index.new_empty(0), row_index.new_empty(0))


@blur_aware_mask_triton_backward.register_fake
def _(grad_out, x, row_table, col_table, weight, bias, col_index, row_index, output_mask):
    like = (x, row_table, col_table, weight, bias if bias is not None else x)
    grads = [t.new_empty(t.shape if m else (0,)) for t, m in zip(like, output_mask[:5])]
    return (*grads, col_index.new_empty(0), row_index.new_empty(0))


register_backward(
    blur_aware_mask_triton_op, blur_aware_mask_triton_backward, num_tensors=7,
    reference=lambda x, row_table, col_table, weight, bias, col_index, row_index: blur_aware_mask_reference(
        x, row_table, col_index, col_table, row_index, weight, bias),
)


def blur_aware_mask_triton(x, row_table, col_index, col_table, row_index, weight, bias=None):
    return blur_aware_mask_triton_op(x, row_table, col_table, weight, bias, col_index, row_index)
