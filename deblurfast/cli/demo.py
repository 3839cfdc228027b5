"""`deblurfast demo`: the bundled model on a real example, end to end.

Blurs the bundled sharp image (held out from training) twice, with a 15 px straight motion and
with a camera shake, deblurs both with the bundled default weights through the engine (fused
kernels), writes each blurred / deblurred image and a comparison (rows: motion, shake; columns:
blurred, deblurred, sharp), and prints PSNR and SSIM before and after, the latency, and the
model card's held-out table by blur family.
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
MOTION_LENGTH, MOTION_ANGLE = 15.0, 0.35  # pixels, radians
BLURS = ("motion", "shake")
OUTPUTS = ("sharp.png", "motion_blurred.png", "motion_deblurred.png", "shake_blurred.png", "shake_deblurred.png",
           "comparison.png", "crops.jpg")
CROP = 160  # crops.jpg: the comparison's centre CROP x CROP of each image (the README's picture)


def synthetic_blur(sharp: np.ndarray, kind: str = "motion", seed: int = DEMO_SEED) -> np.ndarray:
    """The demo's blur of `sharp` (uint8 RGB): "motion", a 15 px straight motion, or "shake", a
    fixed 18 px camera-shake draw of deblurfast.train.data; in linear light, noise sigma 0.005,
    8 bits, the image's borders reflected."""
    from ..train.data import BlurRecipe, MotionBlurGenerator, linear_motion_psf

    rng = np.random.default_rng(seed)
    generator = MotionBlurGenerator(length=(18.0, 18.0), varying_probability=0.0, noise=(0.005, 0.005))
    if kind == "motion":
        recipe = BlurRecipe([linear_motion_psf(MOTION_LENGTH, MOTION_ANGLE)], noise_sigma=0.005,
                            noise_seed=int(rng.integers(2**63)))
    elif kind == "shake":
        recipe = generator.sample(rng)
    else:
        raise ValueError(f"demo: kind must be one of {BLURS}, got {kind!r}")
    blurred = generator.blur_with(recipe, sharp.astype(np.float32) / 255.0)
    return (np.clip(blurred, 0, 1) * 255).round().astype(np.uint8)


def _scores(a: np.ndarray, sharp: np.ndarray) -> tuple[float, float]:
    return float(psnr(a, sharp)), float(ssim(a, sharp))


def run(out_dir: str, device: str | None = None, image: str | None = None, reps: int = 10) -> dict:
    if image and any(os.path.abspath(os.path.join(out_dir, n)) == os.path.abspath(image) for n in OUTPUTS):
        raise ValueError(f"demo: out_dir {out_dir!r} would overwrite the input image {image!r}; choose another folder")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    card = default_card()
    sharp = media.read_image(image) if image else demo_image()
    engine = Engine(default_model(), device=device, dtype=torch.float16 if device == "cuda" else None)
    blurred = {kind: synthetic_blur(sharp, kind) for kind in BLURS}
    engine.deblur(blurred["motion"])  # warm-up: kernel compilation, autotuning, graph capture
    deblurred, times = {}, []
    for kind in BLURS:
        for _ in range(reps):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            deblurred[kind] = engine.deblur(blurred[kind])  # returns host memory: the time includes the copies
            times.append((time.perf_counter() - t0) * 1e3)
    rows = [np.concatenate([blurred[k], deblurred[k], sharp], axis=1) for k in BLURS]
    h, w = sharp.shape[:2]
    top, left = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
    centre = lambda a: a[top:top + CROP, left:left + CROP]  # noqa: E731
    crops = [np.concatenate([centre(blurred[k]), centre(deblurred[k]), centre(sharp)], axis=1) for k in BLURS]
    images = {"sharp.png": sharp, "comparison.png": np.concatenate(rows, axis=0),
              "crops.jpg": np.concatenate(crops, axis=0)}
    for kind in BLURS:
        images[f"{kind}_blurred.png"], images[f"{kind}_deblurred.png"] = blurred[kind], deblurred[kind]
    for name in OUTPUTS:
        media.write_image(os.path.join(out_dir, name), images[name])  # atomic
    result = {"model": card["model"], "device": device, "image": image or "bundled demo image", "size": [h, w],
              "latency_ms_median": statistics.median(times), "latency_ms_min": min(times), "out_dir": out_dir}
    print(f"deblurfast demo: {card['model']} ({card['summary']}) on {device}")
    print(f"  image {w}x{h}")
    for kind, label in zip(BLURS, (f"{MOTION_LENGTH:g} px motion", "camera shake")):
        before, after = _scores(blurred[kind], sharp), _scores(deblurred[kind], sharp)
        result[kind] = {"psnr_blurred": before[0], "psnr_deblurred": after[0], "ssim_blurred": before[1],
                        "ssim_deblurred": after[1]}
        print(f"  {label:16s} PSNR {before[0]:6.2f} -> {after[0]:6.2f} dB (gain {after[0] - before[0]:+.2f})  "
              f"SSIM {before[1]:.4f} -> {after[1]:.4f}")
    print(f"  latency    {result['latency_ms_median']:.1f} ms median of {len(times)} (min {min(times):.1f} ms), "
          f"including host<->device copies")
    families = card.get("heldout", {}).get("families")
    if families:
        from ..train.evaluate import table

        print("  held-out benchmark by blur family (model card; `deblurfast train --evaluate` reproduces it):")
        print("\n".join("    " + line for line in table({"families": families}).splitlines()))
    print(f"  wrote {', '.join(OUTPUTS)} to {out_dir}")
    return result
