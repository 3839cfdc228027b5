"""Fake kernels and autograd for the compiled torch.ops.deblurfast.efficient_attention
(C++ on CPU; schemas in csrc/deblurfast.cpp)."""

import torch

from ... import _ext
from ..._registration import register_backward
from .reference import efficient_attention_reference

if _ext.has_compiled_op("efficient_attention"):

    @torch.library.register_fake("deblurfast::efficient_attention")
    def _(value, key, query, gate):
        return value.new_empty((value.shape[0], value.shape[1], *query.shape[2:]))

    @torch.library.register_fake("deblurfast::efficient_attention_backward")
    def _(grad_output, value, key, query, gate, output_mask):
        wanted = (value, key, query, gate)
        return tuple(value.new_empty(t.shape if (m and t is not None) else (0,)) for t, m in zip(wanted, output_mask))

    register_backward("deblurfast::efficient_attention", torch.ops.deblurfast.efficient_attention_backward.default,
                      num_tensors=4, reference=efficient_attention_reference)


def efficient_attention_compiled(value, key, query, gate):
    return torch.ops.deblurfast.efficient_attention.default(value, key, query, gate)
