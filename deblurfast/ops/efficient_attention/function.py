"""Public efficient_attention: argument checks, then the backend the dispatcher picks (declaration.py)."""

from __future__ import annotations

import math

import torch

from ..._checks import ArgumentError, autocast_inputs, check_like, check_shape, check_tensor
from .._fx import fx_leaf
from .declaration import OP


@fx_leaf
def efficient_attention(
    value: torch.Tensor,
    key: torch.Tensor,
    query: torch.Tensor,
    gate: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Efficient (linear) attention of SAPHNet, Eq. 10 (ops.md §3), self or cross.

    ctx = value @ softmax_over_positions(key)^T            (N, C, C2)
    out = gate * (ctx @ softmax_over_channels(query))      (N, C, Lout)

    Args:
        value: (N, C, Lin) or (N, C, Hin, Win).
        key: (N, C2, Lin) or (N, C2, Hin, Win): softmax over its Lin positions.
        query: (N, C2, Lout) or (N, C2, Hout, Wout): softmax over its C2 maps per position.
        gate: (N, C) or None: scales the output per channel.
        backend: None (see deblurfast.dispatch), "auto", a backend name or a comma-separated list.

    Returns:
        (N, C, *query's spatial shape). Memory is O(N (C + C2) L); no L x L matrix.
    """
    op = "efficient_attention"
    value, key, query, gate = autocast_inputs(value, key, query, gate)
    check_tensor(op, "value", value, (3, 4), "(N, C, Lin) or (N, C, Hin, Win)")
    check_tensor(op, "key", key, (3, 4), "(N, C2, Lin) or (N, C2, Hin, Win)")
    check_tensor(op, "query", query, (3, 4), "(N, C2, Lout) or (N, C2, Hout, Wout)")
    check_like(op, "key", key, "value", value)
    check_like(op, "query", query, "value", value)
    N, C = value.shape[:2]
    C2 = key.shape[1]
    Lin = math.prod(value.shape[2:])
    if key.shape[0] != N or math.prod(key.shape[2:]) != Lin:
        raise ArgumentError(
            f"{op}: key must be (N, C2, Lin) with N={N} and Lin={Lin} positions of value "
            f"{tuple(value.shape)}, got {tuple(key.shape)}"
        )
    if query.shape[0] != N or query.shape[1] != C2:
        raise ArgumentError(
            f"{op}: query must be (N, C2, ...) with N={N} and C2={C2} of key, got {tuple(query.shape)}"
        )
    if gate is not None:
        check_tensor(op, "gate", gate, 2, "(N, C)")
        check_like(op, "gate", gate, "value", value)
        check_shape(op, "gate", gate, (N, C), "(N, C)")
    return OP(backend, value, key, query, gate)
