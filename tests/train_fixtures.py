"""A tiny model, dataset and loss for the trainer tests (also imported by the DDP
subprocesses of test_train.py)."""

import torch

from deblurfast.models import IOConvention
from tiny_model import TinyDeblurNet

TRAIN_IO = IOConvention(value_range=(-1.0, 1.0), multiple=4)


# (name, io, builder): tests register it with the model_registry fixture; a DDP subprocess, which
# ends with its test, with register_model
TRAIN_TINY = ("_train_tiny", TRAIN_IO, lambda width=6: TinyDeblurNet(width))


class NoisyPairs(torch.utils.data.Dataset):
    """Sharp images are fixed random textures; the blur is a box blur plus noise whose draw
    depends on (seed, epoch, index) only, like deblurfast.train.data's datasets."""

    def __init__(self, n=12, size=16, seed=0):
        g = torch.Generator().manual_seed(123)
        self.sharp = torch.rand(n, 3, size, size, generator=g)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.sharp)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1009 + i)
        sharp = self.sharp[i]
        blur = torch.nn.functional.avg_pool2d(sharp[None], 3, 1, 1, count_include_pad=False)[0]
        blur = (blur + 0.02 * torch.randn(blur.shape, generator=g)).clamp(0, 1)
        if torch.rand((), generator=g) < 0.5:  # a random flip, of both
            blur, sharp = blur.flip(-1), sharp.flip(-1)
        return {"blur": blur, "sharp": sharp, "name": str(i)}


def l1_loss(model, batch):
    """L1 in [0, 1] image space, through the model's conventions."""
    y = model.io.from_model(model(model.io.to_model(batch["blur"])))
    loss = (y - batch["sharp"]).abs().mean()
    return loss, {"l1": float(loss.detach())}
