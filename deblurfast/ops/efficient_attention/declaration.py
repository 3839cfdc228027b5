"""efficient_attention's one declaration: schema (the public argument order), reference, output
shape and backends with their limits. The compiled kernel is csrc/cpu/efficient_attention.cpp,
the Triton ones kernels/efficient_attention.py."""

from __future__ import annotations

import math

import torch

from ..._registration import Compiled, OpSpec, Triton, register_op
from ...kernels.layout import memory_format
from ...kernels.limits import EFFICIENT_ATTENTION_MAX_MAPS, int32_overflow
from .reference import efficient_attention_reference


def _triton_limits(value, key, query, gate) -> str | None:
    if key.shape[1] > EFFICIENT_ATTENTION_MAX_MAPS:
        return (f"C2 = {key.shape[1]} maps > {EFFICIENT_ATTENTION_MAX_MAPS} (a query column's softmax over the "
                "maps is kept in one tile)")
    return int32_overflow(("value's positions", math.prod(value.shape[2:])),
                          ("query's positions", math.prod(query.shape[2:])))


OP = register_op(OpSpec(
    "efficient_attention",
    "(Tensor value, Tensor key, Tensor query, Tensor? gate) -> Tensor",
    reference=efficient_attention_reference,
    output_shape=lambda value, key, query, gate: (*value.shape[:2], *query.shape[2:]),
    backends={
        "cpu": Compiled((torch.float32, torch.float64)),
        "triton": Triton("efficient_attention", can_run=_triton_limits,
                          # the output keeps the query's layout
                          memory_format=lambda value, key, query, gate: memory_format(query)),
    },
))
