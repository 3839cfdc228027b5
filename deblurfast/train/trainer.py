"""`deblurfast train`: training any deblurfast model, fused or reference layers.

Reproducibility is by construction: the data order of epoch e is a permutation
drawn from (seed, e), every augmentation of sample i in epoch e derives from
(seed, e, i) (deblurfast.train.data), and the CPU kernels are deterministic, so
a run resumed from a checkpoint continues with bit-for-bit the same losses as
an uninterrupted one. Checkpoints hold the model, optimizer, schedule, AMP
scaler, step and RNG state, are written atomically (temporary file + rename)
and are read back with torch.load(weights_only=True).

Multi-process data parallel: launch with torchrun; each rank reads its slice
of every global batch and DistributedDataParallel averages the gradients, so
N ranks with batch b equal one process with batch N*b.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from .._files import atomic_path, remove_stale_temporaries, write_text
from .._progress import note, progress
from ..engine import accelerate
from ..models import CheckpointError, create, list_models, load_pretrained
from ..models.checkpoints import load_file


SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("none", "bf16", "fp16")


def _option(default, help: str, choices=None):
    """A TrainConfig field with its --help text (and allowed values, where they are a list)."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a run depends on (YAML keys and --flags have these names)."""

    model: str = _option("banet", "network to train (a deblurfast.models name)", "models")
    model_config: dict = _option({}, "constructor keywords of the model, e.g. narrower widths")
    weights: str | None = _option(None, "initial weights (a checkpoint load_pretrained reads)")
    fused: bool = _option(True, "train with deblurfast's fused kernels (accelerate); --no-fused: the reference "
                          "layers")
    backend: str = _option("auto", "kernel backend request of the fused layers, e.g. cpu,reference")
    channels_last: bool | None = _option(None, "train the fused model in channels_last (default: on CUDA; on CPU "
                                         "it also speeds up PyTorch's convolutions)")
    # data
    data: str | None = _option(None, "dataset root (a folder of sharp images for --data-kind synthetic)")
    data_kind: str = _option("synthetic", "dataset layout", "data_kinds")
    data_options: dict = _option({}, "training set options of deblurfast.train.data.build_dataset, e.g. "
                                 '{"repeat": 4}')
    val_data: str | None = _option(None, "validation set root (none: no validation)")
    val_kind: str | None = _option(None, "validation set layout (default: that of --data-kind)", "data_kinds")
    crop: int = _option(256, "training crop size, pixels")
    batch_size: int = _option(8, "global batch size (split over the processes)")
    workers: int = _option(2, "data loader processes (0: load in the training process)")
    # optimization
    steps: int = _option(1000, "train until this step (with --resume: the total, not the steps to add)")
    lr: float = _option(1e-4, "peak learning rate (Adam)")
    betas: tuple[float, float] = _option((0.9, 0.999), "Adam betas, JSON list")
    weight_decay: float = _option(0.0, "Adam weight decay")
    schedule: str = _option("cosine", "learning-rate schedule after the warm-up", SCHEDULES)
    warmup: int = _option(0, "steps of linear learning-rate warm-up")
    min_lr: float = _option(1e-7, "final learning rate of the cosine schedule")
    step_size: int = _option(1000, "steps between learning-rate drops (--schedule step)")
    gamma: float = _option(0.5, "learning-rate factor at each drop (--schedule step)")
    clip_grad: float | None = _option(None, "clip the gradient norm to this (none: no clipping)")
    amp: str = _option("none", "mixed precision", AMP_MODES)
    loss: dict = _option({}, "options of the model's training loss (deblurfast.train.losses.build_loss)")
    # bookkeeping
    out: str = _option("runs/train", "folder of the checkpoint (last.pt) and the log (log.jsonl)")
    checkpoint_every: int = _option(500, "steps between checkpoints (0: only at the end)")
    val_every: int = _option(1000, "steps between validations (0: none)")
    log_every: int = _option(10, "steps between log lines")
    seed: int = _option(0, "seed of the initialization, the data order and the augmentations")
    device: str | None = _option(None, "default: cuda when visible, else cpu", ("cpu", "cuda"))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}; known: {sorted(known)}")
        if "betas" in d:
            d = {**d, "betas": tuple(d["betas"])}
        return cls(**d)


# -- distributed --------------------------------------------------------------------------


def _dist_init(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initializes the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


# -- data order --------------------------------------------------------------------------


class EpochOrder:
    """The (deterministic) sample order: epoch e is a permutation drawn from (seed, e);
    rank r of W takes every W-th index of each global batch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int):
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes ({world})")
        if n < batch_size:
            raise ValueError(f"the dataset has {n} samples, fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.batches_per_epoch = n // batch_size  # the last incomplete batch is dropped

    def batch(self, step: int) -> tuple[int, list[int]]:
        """(epoch, this rank's sample indices) of global batch `step` (0-based)."""
        epoch, b = divmod(step, self.batches_per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        chunk = perm[b * self.batch_size:(b + 1) * self.batch_size]
        return epoch, chunk[self.rank::self.world].tolist()


# -- schedule ---------------------------------------------------------------------------


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of cfg.lr at `step` (0-based): linear warm-up, then the schedule."""
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step - cfg.warmup) // cfg.step_size)
    if cfg.schedule == "cosine":
        t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        low = cfg.min_lr / cfg.lr
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")


# -- checkpoints ------------------------------------------------------------------------------


CHECKPOINT_KEYS = ("model", "optimizer", "schedule", "scaler", "step", "rng", "config", "history")


def save_checkpoint(path: str, state: dict) -> None:
    """Atomic: written to a temporary file beside `path`, then renamed over it."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str) -> dict:
    """A checkpoint written by save_checkpoint; CheckpointError names the file when it is missing,
    empty, truncated or not a training checkpoint."""
    ckpt = load_file(path)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is not a deblurfast training checkpoint (it has no "
                              f"{', '.join(missing)}); --weights loads model weights")
    return ckpt


# -- the loop --------------------------------------------------------------------------------------


class EpochIndexed(torch.utils.data.Dataset):
    """Items are (epoch, index): the dataset's augmentations of sample i in epoch e depend on
    (seed, e, i) only, also inside DataLoader worker processes."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        epoch, i = item
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[i]


class StepBatches(torch.utils.data.Sampler):
    """This rank's batches of (epoch, index) for steps [start, end)."""

    def __init__(self, order: EpochOrder, start: int, end: int):
        self.order, self.start, self.end = order, start, end

    def __len__(self):
        return max(0, self.end - self.start)

    def __iter__(self):
        for step in range(self.start, self.end):
            epoch, indices = self.order.batch(step)
            yield [(epoch, i) for i in indices]


def collate(samples: list[dict]) -> dict:
    return {"blur": torch.stack([s["blur"] for s in samples]), "sharp": torch.stack([s["sharp"] for s in samples]),
            "name": [s.get("name") for s in samples]}


class Trainer:
    """Runs a TrainConfig. `loss` (a callable loss(model, batch) -> (tensor, logs)) and the
    datasets may be given directly (tests, notebooks); otherwise they come from the config."""

    def __init__(self, cfg: TrainConfig, loss: Callable | None = None, train_set=None, val_set=None,
                 log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.rank, self.world = _dist_init(self.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        self.log = log or (lambda s: note(s, sys.stdout) if self.rank == 0 else None)
        torch.manual_seed(cfg.seed)  # the same initialization on every rank
        model = create(cfg.model, **cfg.model_config)
        if cfg.weights:
            load_pretrained(model, cfg.weights)
        if cfg.fused:
            channels_last = self.device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
            accelerate(model, backend=cfg.backend, channels_last=channels_last)
        self.model = model.to(self.device).train()
        self.module = self.model  # unwrapped (checkpoints, validation)
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.model.io, self.model.model_name = self.module.io, self.module.model_name  # what losses read
        self.loss = loss or self._build_loss()
        self.train_set = train_set if train_set is not None else \
            self._dataset(cfg.data, cfg.data_kind, train=True, **cfg.data_options)
        self.val_set = val_set if val_set is not None else (
            self._dataset(cfg.val_data, cfg.val_kind or cfg.data_kind, train=False) if cfg.val_data else None)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(cfg, s))
        if cfg.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {cfg.amp!r}")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.order = EpochOrder(len(self.train_set), cfg.batch_size, cfg.seed, self.rank, self.world)
        self.step = 0
        self.history: list[dict] = []

    def _build_loss(self):
        from .losses import build_loss

        return build_loss(self.cfg.model, **self.cfg.loss)

    def _dataset(self, root, kind, train: bool, **options):
        from . import data

        if root is None:
            raise ValueError("no training data: set `data` (a dataset root, or a folder of sharp images for "
                             "data_kind='synthetic')")
        return data.build_dataset(kind, root, crop=self.cfg.crop if train else None, train=train,
                                  seed=self.cfg.seed, **options)

    # -- checkpoint state ---------------------------------------------------------------------

    def state(self) -> dict:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "config": json.dumps(dataclasses.asdict(self.cfg)),
                "history": json.dumps(self.history)}

    def resume(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        saved = json.loads(ckpt["config"])
        defaults = TrainConfig()
        for key in ("model", "model_config", "batch_size", "seed", "data_kind", "data_options", "crop"):  # fix the run
            ours = json.loads(json.dumps(getattr(self.cfg, key)))
            if saved.get(key, getattr(defaults, key)) != ours:
                raise ValueError(f"cannot resume {path}: it was trained with {key}={saved.get(key)!r}, "
                                 f"this run has {ours!r}")
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        torch.set_rng_state(ckpt["rng"])
        if ckpt.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.history = json.loads(ckpt["history"])
        self._trim_log()
        self.log(f"resumed {path} at step {self.step}")

    def _trim_log(self) -> None:
        """Drops the log records of steps after the checkpoint (the interrupted run's), which the
        resumed run writes again."""
        path = os.path.join(self.cfg.out, "log.jsonl")
        if self.rank != 0 or not os.path.isfile(path):
            return
        with open(path) as f:
            lines = [line for line in f if line.strip() and json.loads(line)["step"] <= self.step]
        write_text(path, "".join(lines))

    def checkpoint(self) -> str | None:
        if self.rank != 0:
            return None
        path = os.path.join(self.cfg.out, "last.pt")
        save_checkpoint(path, self.state())
        return path

    # -- one step -------------------------------------------------------------------------------

    def batches(self):
        """Batches from the current step to the last, through `workers` loader processes."""
        loader = torch.utils.data.DataLoader(
            EpochIndexed(self.train_set), batch_sampler=StepBatches(self.order, self.step, self.cfg.steps),
            num_workers=self.cfg.workers, collate_fn=collate, pin_memory=self.device.type == "cuda",
            persistent_workers=False)
        for batch in loader:
            yield {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                   for k, v in batch.items()}

    def train_step(self, batch: dict) -> dict:
        epoch = self.step // self.order.batches_per_epoch
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.amp)
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss, logs = self.loss(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.clip_grad))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        self.step += 1
        return {"step": self.step, "epoch": epoch, "loss": float(loss.detach()), "lr": self.schedule.get_last_lr()[0],
                **{k: float(v) for k, v in logs.items()}}

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean PSNR and SSIM (RGB, [0, 1]) of the model's outputs on the validation set."""
        from ..metrics import psnr, ssim

        if self.val_set is None:
            return {}
        io, was = self.module.io, self.module.training
        self.module.eval()
        scores = {"psnr": [], "ssim": []}
        for i in progress(range(len(self.val_set)), desc="validating", unit="images", disable=self.rank != 0,
                          leave=False):
            s = self.val_set[i]
            x, (h, w) = io.pad(io.to_model(s["blur"][None].to(self.device)))
            y = io.from_model(self.module(x))[..., :h, :w].clamp(0, 1)
            scores["psnr"].append(float(psnr(y, s["sharp"][None].to(self.device))))
            scores["ssim"].append(float(ssim(y, s["sharp"][None].to(self.device))))
        self.module.train(was)
        return {k: sum(v) / len(v) for k, v in scores.items()}

    def run(self, until: int | None = None) -> list[dict]:
        """Trains to cfg.steps (or stops after step `until`, as an interrupted run would)."""
        cfg = self.cfg
        log_path = os.path.join(cfg.out, "log.jsonl")
        if self.rank == 0:
            os.makedirs(cfg.out, exist_ok=True)
            for path in remove_stale_temporaries(cfg.out):
                self.log(f"removed {path}, left by an interrupted checkpoint or log write")
        bar = progress(total=cfg.steps, initial=self.step, desc="training", unit="steps", disable=self.rank != 0)
        for batch in self.batches():
            record = self.train_step(batch)
            bar.update()
            bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            self.history.append({k: record[k] for k in ("step", "loss", "lr")})
            if cfg.val_every and self.step % cfg.val_every == 0 and self.val_set is not None and self.rank == 0:
                record.update({f"val_{k}": v for k, v in self.validate().items()})
            if self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps or "val_psnr" in record):
                self.log(f"step {self.step}/{cfg.steps} loss {record['loss']:.5f} lr {record['lr']:.2e}"
                         + (f" val PSNR {record['val_psnr']:.2f} SSIM {record['val_ssim']:.4f}"
                            if "val_psnr" in record else ""))
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                self.checkpoint()
            if until is not None and self.step >= until:
                break
        bar.close()
        return self.history


# -- command line ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One --flag per TrainConfig field (JSON for the dict/tuple ones), with its description,
    allowed values and default; unset flags keep the YAML's or the default value."""
    from .data import DATASET_KINDS

    p.add_argument("--config", help="YAML file of training options, keys named like the flags with _ for - "
                   "(flags override it)")
    p.add_argument("--resume", help="OUT/last.pt of an interrupted run: continue it bit-for-bit up to --steps")
    p.add_argument("--evaluate", action="store_true",
                   help="instead of training: the held-out benchmark by blur family (deblurfast.train.evaluate) of "
                   "the bundled model, or of --model/--model-config with --weights")
    p.add_argument("--evaluate-output", metavar="FILE", help="write the evaluation (JSON, per case and family) here")
    p.add_argument("--evaluate-images", metavar="DIR", help="where the held-out photos are written "
                   "(default: ~/.cache/deblurfast/images)")
    p.add_argument("--evaluate-subset", type=int, nargs=2, metavar=("PHOTOS", "SCENES"),
                   help="evaluate only the first PHOTOS photos and SCENES scenes at the smaller size")
    defaults = TrainConfig()
    named_choices = {"models": list_models(), "data_kinds": DATASET_KINDS}
    for f in dataclasses.fields(TrainConfig):
        flag, default = f"--{f.name.replace('_', '-')}", getattr(defaults, f.name)
        choices = f.metadata["choices"]
        choices = named_choices.get(choices, choices) if isinstance(choices, str) else choices
        shown = "none" if default is None else json.dumps(default) if isinstance(default, (dict, tuple)) else default
        help = f.metadata["help"] + (f"; one of: {', '.join(choices)}" if choices else "")
        help += "" if "default:" in help else f" (default: {shown})"
        help = help.replace("%", "%%")
        base = f.type.split(" ")[0]  # "float | None" -> "float"
        if base in ("dict", "tuple[float,"):
            p.add_argument(flag, dest=f.name, type=json.loads, default=None, metavar="JSON", help=help)
        elif base == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            kind = {"int": int, "float": float}.get(base, str)
            # the model list is open (models registered at run time): checked when the model is built
            p.add_argument(flag, dest=f.name, type=kind, default=None, help=help,
                           choices=None if f.name == "model" else choices,
                           metavar=f.name.upper() if f.name == "model" else None)


def config_from_args(args) -> TrainConfig:
    options: dict[str, Any] = {}
    if args.config:
        import yaml

        with open(args.config) as f:
            try:
                options.update(yaml.safe_load(f) or {})
            except yaml.YAMLError as e:
                raise ValueError(f"--config {args.config!r} is not valid YAML: {e}") from None
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            options[f.name] = value
    return TrainConfig.from_dict(options)


def main(args) -> int:
    if getattr(args, "evaluate", False):
        from .evaluate import run_command

        return run_command(args)
    try:  # the set-up's errors are the user's (a file, an option): one line each
        cfg = config_from_args(args)
        trainer = Trainer(cfg)
        if args.resume:
            trainer.resume(args.resume)
    except (CheckpointError, OSError, ValueError, TypeError) as e:
        print(f"deblurfast train: error: {e}", file=sys.stderr)
        return 2
    if trainer.step >= cfg.steps:
        where = f"{args.resume} is at step {trainer.step}" if args.resume else f"the run starts at step {trainer.step}"
        print(f"deblurfast train: nothing to train: {where} and --steps is {cfg.steps} (the total number of "
              "steps; raise it to train further)", file=sys.stderr)
        if dist.is_initialized():
            dist.destroy_process_group()
        return 0
    trainer.run()
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
