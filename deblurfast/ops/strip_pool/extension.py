"""Fake kernels and autograd for the compiled torch.ops.deblurfast.strip_pool, strip_expand and
blur_aware_mask (C++ on CPU; schemas in csrc/deblurfast.cpp)."""

import torch

from ... import _ext
from ..._registration import register_backward
from .buffer import pool_buffer_reference, pool_buffer_views
from .reference import blur_aware_mask_reference, strip_expand_reference

if _ext.has_compiled_op("strip_pool"):

    @torch.library.register_fake("deblurfast::strip_pool")
    def _(x, sizes):
        N, C, H, W = x.shape
        K = sum(sizes)
        return x.new_empty((N, C, H * K + K * W))

    @torch.library.register_fake("deblurfast::strip_pool_backward")
    def _(grad_buf, x, sizes, output_mask):
        return [x.new_empty(x.shape if output_mask[0] else (0,))]

    register_backward("deblurfast::strip_pool", torch.ops.deblurfast.strip_pool_backward.default, num_tensors=1,
                      reference=pool_buffer_reference)

    @torch.library.register_fake("deblurfast::strip_expand")
    def _(v, h, H, W):
        return v.new_empty((v.shape[0], v.shape[1], H, W))

    @torch.library.register_fake("deblurfast::strip_expand_backward")
    def _(grad_out, v, h, H, W, output_mask):
        return v.new_empty(v.shape if output_mask[0] else (0,)), h.new_empty(h.shape if output_mask[1] else (0,))

    register_backward("deblurfast::strip_expand", torch.ops.deblurfast.strip_expand_backward.default, num_tensors=2,
                      reference=lambda v, h, H, W: strip_expand_reference(v, h, (H, W)))

    @torch.library.register_fake("deblurfast::blur_aware_mask")
    def _(x, row_table, col_table, weight, bias, col_index, row_index):
        return x.new_empty(x.shape)

    @torch.library.register_fake("deblurfast::blur_aware_mask_backward")
    def _(grad_out, x, row_table, col_table, weight, bias, col_index, row_index, output_mask):
        like = (x, row_table, col_table, weight, bias if bias is not None else x)
        grads = [t.new_empty(t.shape if m else (0,)) for t, m in zip(like, output_mask[:5])]
        return (*grads, col_index.new_empty(0), row_index.new_empty(0))

    register_backward(
        "deblurfast::blur_aware_mask", torch.ops.deblurfast.blur_aware_mask_backward.default, num_tensors=7,
        reference=lambda x, row_table, col_table, weight, bias, col_index, row_index: blur_aware_mask_reference(
            x, row_table, col_index, col_table, row_index, weight, bias),
    )


def strip_pool_compiled(x, sizes):
    return pool_buffer_views(torch.ops.deblurfast.strip_pool.default(x, list(sizes)), x.shape, sizes)


def strip_expand_compiled(v, h, size):
    return torch.ops.deblurfast.strip_expand.default(v, h, size[0], size[1])


def blur_aware_mask_compiled(x, row_table, col_index, col_table, row_index, weight, bias=None):
    return torch.ops.deblurfast.blur_aware_mask.default(x, row_table, col_table, weight, bias, col_index, row_index)
