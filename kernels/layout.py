"""Memory layout of the tensors the Triton launchers take: which layout an output keeps."""

import torch


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether t is a 4-D channels_last tensor (and not also contiguous, as when C or H*W is 1):
    the launchers index it as it lies rather than copying it to NCHW."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """The layout of an output computed from t: channels_last if t is, else contiguous."""
    return torch.channels_last if is_channels_last(t) else torch.contiguous_format
