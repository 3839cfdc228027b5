"""Trains the bundled default model and writes its weights and model card.

    python -m deblurfast.train.default_weights --steps 4000 --out deblurfast/weights

The model: a narrow ASPDC deblurring network (deblurfast.models.aspdc with
channels (16, 32, 48), one residual block per group, the clean "padded" d0
mask layout). Why: its hot path is deblurfast's heaviest fused kernel (the
modulated deformable convolution, 24 layers), so the demo exercises the fast
path; it works at 1/4 resolution, so it trains in minutes on two CPU cores; and
it has 1.8 M parameters (7 MB in float32, far under the 20 MB budget).
The data: synthetic camera-shake blur (deblurfast.train.data) of scikit-image's
bundled sample images, available offline; two images are held out for the
evaluation and the demo.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import numpy as np
import torch

from .._files import atomic_path, write_text
from ..engine import Engine
from ..media import read_image
from ..metrics import psnr, ssim
from ..models import num_parameters
from .data import MotionBlurGenerator, SyntheticBlurDataset, sample_images
from .trainer import TrainConfig, Trainer

MODEL = "aspdc"
MODEL_CONFIG = {"channels": [16, 32, 48], "head_res_blocks": 1, "group_res_blocks": 1, "mask_res_blocks": 1,
                "d0_mask_layout": "padded", "batch_independent": True}
HELDOUT = ("astronaut", "coffee")  # never trained on; astronaut's crop is the demo image
BLURS_PER_IMAGE = 4
EVAL_SEED = 1000


def heldout_scores(model, images: dict[str, np.ndarray], device: str) -> dict:
    """Mean PSNR/SSIM (RGB, [0, 1]) of blurred and deblurred held-out images, BLURS_PER_IMAGE
    fixed synthetic blurs each (the generator's default ranges, spatially varying included)."""
    engine = Engine(model, device=device)
    generator = MotionBlurGenerator()
    rows = []
    for name, sharp in images.items():
        for k in range(BLURS_PER_IMAGE):
            blurred = generator.blur(sharp, np.random.default_rng([EVAL_SEED, k, len(name)]))
            blurred = (blurred * 255).round().astype(np.uint8)
            deblurred = engine.deblur(blurred)
            rows.append((float(psnr(blurred, sharp)), float(psnr(deblurred, sharp)),
                         float(ssim(blurred, sharp)), float(ssim(deblurred, sharp))))
    m = np.mean(rows, axis=0)
    return {"images": len(images), "blurs_per_image": BLURS_PER_IMAGE, "psnr_blurred": m[0],
            "psnr_deblurred": m[1], "ssim_blurred": m[2], "ssim_deblurred": m[3]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deblurfast.train.default_weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(__file__)), "weights"))
    p.add_argument("--work", default="runs/default_weights", help="images, checkpoints and logs")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--resume", help="a checkpoint of an interrupted run (WORK/run/last.pt)")
    args = p.parse_args(argv)

    from safetensors.torch import save_file

    image_dir = os.path.join(args.work, "images")
    paths = sample_images(image_dir)
    names = [os.path.splitext(os.path.basename(q))[0] for q in paths]
    train_files = [os.path.basename(q) for q, n in zip(paths, names) if n not in HELDOUT]
    # 12 training images: repeat them so that an epoch holds many distinct crops and blurs
    repeat = max(1, (args.batch_size * 64) // len(train_files))
    train_set = SyntheticBlurDataset(image_dir, crop=args.crop, seed=args.seed, files=train_files, cache=True,
                                     repeat=repeat)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = TrainConfig(model=MODEL, model_config=MODEL_CONFIG, data=image_dir, data_kind="synthetic", crop=args.crop,
                      batch_size=args.batch_size, workers=args.workers, steps=args.steps, lr=args.lr,
                      schedule="cosine", warmup=min(200, args.steps // 10), clip_grad=0.1, loss={"pixel": "mse"},
                      out=os.path.join(args.work, "run"), checkpoint_every=250, val_every=0, log_every=50,
                      seed=args.seed, device=device, backend="auto")
    trainer = Trainer(cfg, train_set=train_set)
    resumed_at = None
    if args.resume:
        trainer.resume(args.resume)
        resumed_at = trainer.step
    start = time.perf_counter()
    trainer.run()
    minutes = (time.perf_counter() - start) / 60

    model = trainer.module.eval()
    heldout = {n: read_image(q) for q, n in zip(paths, names) if n in HELDOUT}
    scores = heldout_scores(copy.deepcopy(model), heldout, device)  # the engine takes its model over
    os.makedirs(args.out, exist_ok=True)
    weights = "default.safetensors"
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(os.path.join(args.out, weights)) as tmp:
        save_file(state, tmp, metadata={"model": MODEL})
    card = {
        "model": MODEL, "model_config": MODEL_CONFIG, "weights": weights, "parameters": num_parameters(model),
        "summary": "narrow ASPDC deblurring network, 1.8 M parameters",
        "data": {"source": "scikit-image sample images, synthetic camera-shake blur (deblurfast.train.data)",
                 "train_images": sorted(train_files), "heldout_images": list(HELDOUT), "crop": args.crop},
        "training": {"steps": trainer.step, "batch_size": args.batch_size, "lr": args.lr, "schedule": "cosine",
                     "loss": "MSE in [-1, 1] (ASPDC's first stage)", "minutes": round(minutes, 1),
                     "resumed_at_step": resumed_at,  # minutes count this process only
                     "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
                     + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
                     "torch": torch.__version__, "final_loss": trainer.history[-1]["loss"]},
        "heldout": scores,
    }
    write_text(os.path.join(args.out, "default.json"), json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["heldout"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
