"""Training: the papers' losses (deblurfast.train.losses) and data (deblurfast.train.data)."""

from .data import MotionBlurGenerator, PairedDataset, SyntheticBlurDataset, build_dataset, sample_images
from .losses import Loss, build_loss

__all__ = ["Loss", "MotionBlurGenerator", "PairedDataset", "SyntheticBlurDataset", "build_dataset", "build_loss",
           "sample_images"]
