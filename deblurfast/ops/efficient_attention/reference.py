"""Efficient (linear) attention in plain PyTorch: the executable form of ops.md §3."""

from __future__ import annotations

import math

import torch


def efficient_attention_reference(
    value: torch.Tensor, key: torch.Tensor, query: torch.Tensor, gate: torch.Tensor | None = None
) -> torch.Tensor:
    """ctx[n, c, k] = sum_i value[n, c, i] softmax_i(key[n, k, :])[i]
    out[n, c, j] = gate[n, c] * sum_k ctx[n, c, k] softmax_k(query[n, :, j])[k]

    Spatial dimensions are flattened; the output takes query's spatial shape
    and value's channels. Never forms an L x L matrix. Arguments are assumed
    valid (deblurfast.ops.efficient_attention checks them).
    """
    N, C = value.shape[:2]
    v = value.reshape(N, C, math.prod(value.shape[2:]))
    k = key.reshape(N, key.shape[1], math.prod(key.shape[2:]))
    q = query.reshape(N, query.shape[1], math.prod(query.shape[2:]))
    ctx = torch.bmm(v, k.softmax(dim=2).transpose(1, 2))  # (N, C, C2)
    out = torch.bmm(ctx, q.softmax(dim=1))  # (N, C, Lout)
    if gate is not None:
        out = out * gate.reshape(N, C, 1)
    return out.reshape(N, C, *query.shape[2:])
