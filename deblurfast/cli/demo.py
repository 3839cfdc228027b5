"""`deblurfast demo`: the bundled model on a real example, end to end.

Blurs the bundled sharp image (held out from training) with a synthetic camera
shake, deblurs it with the bundled default weights through the engine
(fused kernels), writes sharp / blurred / deblurred images and a side-by-side
comparison, and prints PSNR and SSIM before and after, and the latency.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from .. import media
from ..engine import Engine
from ..metrics import psnr, ssim
from ..weights import default_card, default_model, demo_image

DEMO_SEED = 2024
OUTPUTS = ("sharp.png", "blurred.png", "deblurred.png", "comparison.png")


def synthetic_blur(sharp: np.ndarray, seed: int = DEMO_SEED) -> np.ndarray:
    """The demo's camera shake: a fixed draw of deblurfast.train.data's generator (uniform blur)."""
    from ..train.data import MotionBlurGenerator

    generator = MotionBlurGenerator(length=(18.0, 18.0), varying_probability=0.0, noise=(0.005, 0.005))
    blurred = generator.blur(sharp.astype(np.float32) / 255.0, np.random.default_rng(seed))
    return (np.clip(blurred, 0, 1) * 255).round().astype(np.uint8)


def _scores(a: np.ndarray, sharp: np.ndarray) -> tuple[float, float]:
    return float(psnr(a, sharp)), float(ssim(a, sharp))


def run(out_dir: str, device: str | None = None, image: str | None = None, reps: int = 10) -> dict:
    if image and any(os.path.abspath(os.path.join(out_dir, n)) == os.path.abspath(image) for n in OUTPUTS):
        raise ValueError(f"demo: out_dir {out_dir!r} would overwrite the input image {image!r}; choose another folder")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    card = default_card()
    sharp = media.read_image(image) if image else demo_image()
    blurred = synthetic_blur(sharp)
    engine = Engine(default_model(), device=device, dtype=torch.float16 if device == "cuda" else None)
    engine.deblur(blurred)  # warm-up: kernel compilation, autotuning, graph capture
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        deblurred = engine.deblur(blurred)  # returns host memory: the time includes the copies
        times.append((time.perf_counter() - t0) * 1e3)
    before, after = _scores(blurred, sharp), _scores(deblurred, sharp)
    names = dict(zip(OUTPUTS, (sharp, blurred, deblurred, np.concatenate([blurred, deblurred, sharp], axis=1))))
    for name, img in names.items():
        media.write_image(os.path.join(out_dir, name), img)  # atomic
    result = {"model": card["model"], "device": device, "image": image or "bundled demo image",
              "size": list(sharp.shape[:2]), "psnr_blurred": before[0], "psnr_deblurred": after[0],
              "ssim_blurred": before[1], "ssim_deblurred": after[1], "latency_ms_median": statistics.median(times),
              "latency_ms_min": min(times), "out_dir": out_dir}
    h, w = sharp.shape[:2]
    print(f"deblurfast demo: {card['model']} ({card['summary']}) on {device}")
    print(f"  image {w}x{h}, synthetic camera shake (seed {DEMO_SEED})")
    print(f"  blurred    PSNR {before[0]:6.2f} dB  SSIM {before[1]:.4f}")
    print(f"  deblurred  PSNR {after[0]:6.2f} dB  SSIM {after[1]:.4f}   gain {after[0] - before[0]:+.2f} dB")
    print(f"  latency    {result['latency_ms_median']:.1f} ms median of {reps} (min {min(times):.1f} ms), "
          f"including host<->device copies")
    held = card.get("heldout", {})
    if held:
        print(f"  held-out synthetic set ({held['images']} images x {held['blurs_per_image']} blurs): PSNR "
              f"{held['psnr_blurred']:.2f} -> {held['psnr_deblurred']:.2f} dB, SSIM {held['ssim_blurred']:.4f} -> "
              f"{held['ssim_deblurred']:.4f} (model card)")
    print(f"  wrote {', '.join(names)} to {out_dir}")
    return result
