"""The one tiny network the plumbing tests (registry, checkpoints, accelerate, engine, trainer)
share: a convolution, an InstanceNorm (a float32 island in 16-bit), a deformable convolution
with predicted offsets (the deblurfast layer accelerate switches) and a residual."""

import torch
from torch import nn

from deblurfast.nn import DeformConv2d


class TinyDeblurNet(nn.Module):
    def __init__(self, width: int = 4, multiple: int = 4):
        super().__init__()
        self.multiple = multiple
        self.head = nn.Conv2d(3, width, 3, padding=1, bias=False)  # the norm's shift replaces a bias
        self.norm = nn.InstanceNorm2d(width, affine=True)
        self.offsets = nn.Conv2d(width, 18, 3, padding=1)
        self.dcn = DeformConv2d(width, width, 3, padding=1, backend="reference")
        self.tail = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x):
        assert x.shape[-2] % self.multiple == 0 and x.shape[-1] % self.multiple == 0, "pad to the multiple first"
        f = torch.relu(self.norm(self.head(x)))
        return x + 0.1 * self.tail(torch.relu(self.dcn(f, 0.5 * torch.tanh(self.offsets(f)))))


def tiny_flops(height: int, width: int, channels: int = 4) -> int:
    """Multiply-adds x 2 of TinyDeblurNet's convolutions and deformable product (3x3 taps each)."""
    return 2 * height * width * 9 * (3 * channels + channels * 18 + channels * channels + channels * 3)
