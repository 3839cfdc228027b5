"""The held-out deblurring benchmark, by blur family: ``deblurfast train --evaluate``.

Images, never trained on: scikit-image's ``astronaut`` and ``coffee`` (centre crops) and
procedural scenes drawn from seeds outside the training stream (``heldout_scene_rng``: the
training samples' generators are ``SeedSequence([seed, epoch, index])`` without a spawn key,
these have one), each at two sizes (``SIZES``).

Families (fixed draws per image, so every run blurs the same way): straight motion of 5, 10, 15
and 20 px at an angle drawn per image; camera shake (random-walk trajectories of 10-25 px);
spatially varying blur (regions of different linear / shake / no motion, smooth borders, as in
training); and already-sharp input. Blur is rendered in linear light (gamma 2.2) with real
context around the crop, then mild Gaussian noise (sigma 0.005) and 8-bit quantization. For the
sharp family the input is the sharp image itself and the score is PSNR(output, input): a
deblurrer must not damage it.

PSNR and SSIM are over RGB in [0, 1] (deblurfast.metrics). The result (a JSON file: per image
rows and per family means) is what the README table and the model card are generated from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Callable

import numpy as np
import torch

from .._files import write_text
from ..metrics import psnr, ssim
from .data import (BlurFamilyGenerator, BlurRecipe, MotionBlurGenerator, _unit, crop_window, linear_motion_psf,
                   sample_images)
from .scenes import scene

HELDOUT_PHOTOS = ("astronaut", "coffee")
HELDOUT_SCENES = 4  # per size
SIZES = (192, 384)
FAMILIES = ("linear 5 px", "linear 10 px", "linear 15 px", "linear 20 px", "camera shake", "spatially varying",
            "sharp")
SCENE_SPAWN_KEY = (0xE7A1,)  # training never spawns: these seeds are outside its stream
CONTEXT = 40  # pixels of scene painted around each crop: the blur reads real content, not padding
NOISE_SIGMA = 0.005


def default_image_dir() -> str:
    """Where the held-out photos are written (scikit-image's bundled images, no download)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "deblurfast", "images")


def heldout_scene_rng(size: int, k: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([size, k], spawn_key=SCENE_SPAWN_KEY))


def family_recipe(family: str, rng: np.random.Generator) -> BlurRecipe:
    """The benchmark's blur of `family` (FAMILIES), drawn from `rng`."""
    if family.startswith("linear"):
        length = float(family.split()[1])
        recipe = BlurRecipe([linear_motion_psf(length, rng.uniform(0, 2 * math.pi))], family=family)
    elif family == "camera shake":
        kernel, traj = MotionBlurGenerator(length=(10.0, 25.0)).kernel(rng)
        recipe = BlurRecipe([kernel], trajectories=[traj], family=family)
    elif family == "spatially varying":
        recipe = BlurFamilyGenerator().family_kernels("varying", rng)
        recipe.family = family
    elif family == "sharp":
        return BlurRecipe([np.ones((1, 1))], family=family)
    else:
        raise ValueError(f"unknown benchmark family {family!r}; known: {', '.join(FAMILIES)}")
    recipe.gamma, recipe.noise_sigma, recipe.noise_seed = 2.2, NOISE_SIGMA, int(rng.integers(2**63))
    return recipe


def heldout_images(image_dir: str, sizes=SIZES, photos=HELDOUT_PHOTOS, scenes: int = HELDOUT_SCENES) -> list:
    """[(name, size, canvas)]: each canvas is the (size + 2 CONTEXT)^2 region around the crop
    (uint8 RGB); the photos' crops are centred, reflected only where the photo is smaller."""
    paths = dict(zip(photos, sample_images(image_dir, photos)))
    from ..media import read_image

    out = []
    for size in sizes:
        for name in photos:
            img = read_image(paths[name])
            top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
            out.append((name, size, crop_window(img, top - CONTEXT, left - CONTEXT, size + 2 * CONTEXT,
                                                size + 2 * CONTEXT)))
        for k in range(scenes):
            out.append((f"scene-{k}", size, scene(heldout_scene_rng(size, k), size + 2 * CONTEXT, size + 2 * CONTEXT)))
    return out


def blur_pair(canvas: np.ndarray, family: str, seed_words) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) uint8 crops of one benchmark case: the family's blur of the canvas' centre."""
    rng = np.random.default_rng(list(seed_words))
    recipe = family_recipe(family, rng)
    size = canvas.shape[0] - 2 * CONTEXT
    sharp = canvas[CONTEXT:CONTEXT + size, CONTEXT:CONTEXT + size]
    if family == "sharp":
        return sharp.copy(), sharp
    R = recipe.radius
    if R > CONTEXT:
        raise ValueError(f"blur radius {R} exceeds the benchmark's context of {CONTEXT} px")
    region = canvas[CONTEXT - R:CONTEXT + size + R, CONTEXT - R:CONTEXT + size + R]
    generator = MotionBlurGenerator(gamma=2.2, quantize=True)
    blurred = generator.render(recipe, _unit(region))
    return (blurred * 255.0).round().astype(np.uint8), sharp


def evaluate(deblur: Callable[[np.ndarray], np.ndarray], image_dir: str, sizes=SIZES, photos=HELDOUT_PHOTOS,
             scenes: int = HELDOUT_SCENES, families=FAMILIES, progress: Callable | None = None) -> dict:
    """Runs `deblur` (uint8 RGB -> uint8 RGB) on every (image, size, family) case; returns
    {"rows": [...], "families": {family: means}}."""
    rows = []
    images = heldout_images(image_dir, sizes, photos, scenes)
    cases = [(name, size, canvas, f) for name, size, canvas in images for f in families]
    for name, size, canvas, family in (progress(cases) if progress else cases):
        words = [int.from_bytes(hashlib.sha256(f"{name}|{size}|{family}".encode()).digest()[:8], "little")]
        blurred, sharp = blur_pair(canvas, family, words)
        out = deblur(blurred)
        row = {"image": name, "size": size, "family": family, "psnr_deblurred": float(psnr(out, sharp)),
               "ssim_deblurred": float(ssim(out, sharp))}
        if family != "sharp":  # the sharp input is the target itself: only the output is scored
            row.update(psnr_blurred=float(psnr(blurred, sharp)), ssim_blurred=float(ssim(blurred, sharp)))
        rows.append(row)
    return {"rows": rows, "families": family_means(rows)}


def family_means(rows: list[dict]) -> dict:
    out = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        sel = [r for r in rows if r["family"] == family]
        m = {k: float(np.mean([r[k] for r in sel])) for k in ("psnr_blurred", "psnr_deblurred", "ssim_blurred",
                                                                "ssim_deblurred") if k in sel[0]}
        if "psnr_blurred" in m:
            m["gain_db"] = m["psnr_deblurred"] - m["psnr_blurred"]
        m["cases"] = len(sel)
        out[family] = m
    return out


def table(result: dict) -> str:
    """The per-family markdown table of an evaluation result."""
    lines = ["| blur | cases | PSNR blurred | PSNR deblurred | gain | SSIM blurred | SSIM deblurred |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for family, m in result["families"].items():
        if family == "sharp":
            lines.append(f"| sharp input (PSNR vs input) | {m['cases']} | - | {m['psnr_deblurred']:.2f} | - | - | "
                         f"{m['ssim_deblurred']:.4f} |")
        else:
            lines.append(f"| {family} | {m['cases']} | {m['psnr_blurred']:.2f} | {m['psnr_deblurred']:.2f} | "
                         f"{m['gain_db']:+.2f} | {m['ssim_blurred']:.4f} | {m['ssim_deblurred']:.4f} |")
    return "\n".join(lines)


def engine_deblur(model: torch.nn.Module, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """uint8 RGB -> uint8 RGB through the inference engine (fused kernels, float32)."""
    from ..engine import Engine

    engine = Engine(model, device=device)
    return engine.deblur


def result_meta(label: str, digest: str, device: str, sizes=SIZES, photos=HELDOUT_PHOTOS,
                scenes: int = HELDOUT_SCENES) -> dict:
    """What an evaluation result was computed with."""
    from ..bench.core import git_commit

    return {"model": label, "weights_sha256_16": digest, "device": device, "commit": git_commit(),
            "hardware": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
            "sizes": list(sizes), "photos": list(photos), "scenes_per_size": scenes, "noise_sigma": NOISE_SIGMA,
            "gamma": 2.2}


def weights_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def run_command(args) -> int:
    """`deblurfast train --evaluate`: the bundled model, or --model/--model-config/--weights."""
    import sys

    from .._progress import progress
    from ..models import create, load_pretrained

    if args.weights:
        model = load_pretrained(create(args.model or "banet", **(args.model_config or {})), args.weights)
        label, digest = f"{args.model or 'banet'} {args.weights}", weights_digest(args.weights)
    else:
        from ..weights import default_card, default_model, weights_path

        model, card = default_model(), default_card()
        label = f"bundled default ({card['model']})"
        with weights_path() as path:
            digest = weights_digest(str(path))
    subset = args.evaluate_subset
    photos, scenes = (HELDOUT_PHOTOS, HELDOUT_SCENES) if subset is None else (HELDOUT_PHOTOS[:subset[0]], subset[1])
    sizes = SIZES if subset is None else SIZES[:1]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate(engine_deblur(model.eval(), device), args.evaluate_images or default_image_dir(), sizes,
                      photos, scenes, progress=lambda cases: progress(cases, desc="evaluating", unit="cases"))
    result["meta"] = result_meta(label, digest, device, sizes, photos, scenes)
    print(table(result))
    if args.evaluate_output:
        write_text(args.evaluate_output, json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.evaluate_output}", file=sys.stderr)
    return 0


__all__ = ["FAMILIES", "HELDOUT_PHOTOS", "SIZES", "blur_pair", "evaluate", "family_means", "family_recipe",
           "heldout_images", "heldout_scene_rng", "result_meta", "run_command", "table", "weights_digest"]
