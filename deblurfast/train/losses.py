"""The papers' training losses, one per model: ``build_loss(model_name, **options) -> Loss``.

A Loss is called as ``loss(model, batch) -> (loss_tensor, logs)``: ``batch`` holds "blur" and
"sharp", (N, 3, H, W) float RGB in [0, 1] (the trainer's format); the loss maps both to the model's
convention (``model.io.to_model``: colour order, value range), runs
the model itself (so it can ask for intermediate outputs) and evaluates the authors' loss in the
model's own value range, as their code did. ``logs`` maps each term (and "psnr", of the final
output against the sharp image in [0, 1]) to a float. All loss arithmetic runs in float32, also
under autocast. The model may be wrapped (DistributedDataParallel, torch.compile).

Losses (sources: shared/specs/models/<model>.md §7 and the papers in shared/papers):

``attentive_msnet`` (Xu et al., CVIU 2021; spec §7, paper Eqs. 7-9), o_0..o_2 coarse to fine::

    L = sum_i w_i mean((R(G, size_i) - o_i)^2)
        + 2.5 [mean((Dx g(G) - Dx g(o_2))^2) + mean((Dy g(G) - Dy g(o_2))^2)]

  R = the model's own resize (TF1 legacy bilinear by default), g = 0.2989 R + 0.5870 G + 0.1140 B,
  Dx f = f[:, x] - f[:, x+1], Dy likewise (valid differences); w_i = 1. Options: grad_weight
  (2.5), scale_weights.

``rdafnet_ss`` / ``rdafnet_ms`` (spec §7; paper Eq. 10, lambda = 0.1), in [-1, 1], summed over
the stages' outputs (MS: 3, SS: 1) with weight 1 each::

    L = sum_s w_s [ mean|o_s - T| + 0.1 mean|rfft2(o_s) - rfft2(T)| (+ 0.01 VGG, code only) ]

  rfft2 over (H, W), one-sided, unnormalized ("backward"); the L1 is the mean of the complex
  modulus of the difference (what ``nn.L1Loss`` does on complex tensors). The outputs are the
  model's, already clamped inside its forward (the authors' code). The code's extra VGG19-conv3_3
  MSE term is off by default (the paper has none and its ImageNet weights are not bundled):
  ``perceptual_weight=0.01, perceptual=<module mapping [-1, 1] images to features>`` adds it.
  Options: fft_weight (0.1), stage_weights, perceptual_weight (0), perceptual.

``aspdc`` (Huo et al., CVPRW 2022; spec §7, paper Eqs. 5-7), in [-1, 1]::

    L = PL(I_d, I_s) + 0.1 PL(I_b, reblur(I_b, I_d))

  I_d = the deblurred image (output 0), I_b the blurred input, reblur the frozen reblurring
  network (``reblur_model=``: a BlurringNet, or a path to its checkpoint) called with the blurred
  image first and the deblurred one in the "sharp" slot; gradients flow through it to I_d, its
  weights never change (requires_grad False, eval mode). Without reblur_model only the first
  term (the initial training stage). PL (``pixel=``): "imagenet" (default, the released code):
  MSE after mapping both images to [0, 1] and normalizing with the ImageNet mean/std per channel,
  i.e. mean(((a - b) / (2 std_c))^2); "mse": plain MSE in [-1, 1] (the paper's Eq. 5).
  Options: reblur_model, reblur_weight (0.1), pixel.

``aspdc_reblur`` (paper Eq. 6): the reblurring network's own training,
``PL(reblur(I_b, I_s), I_b)``. Option: pixel.

``saphnet`` (Suin et al., CVPR 2020): the paper states no loss; it trains "following [26]"
(DMPHN, Zhang et al. CVPR 2019), whose code optimizes the MSE of the final output only. Default:
``level_weights=(1.0, 0.0, 0.0)`` = weights of (B + r1, B + r2, B + r3), level 1 (the output)
first; non-zero lower-level weights supervise ``forward(x, return_all=True)``'s full-size
intermediate images with the same MSE (the spec's "B_half + r3 and B + r2 may be supervised")::

    L = sum_l w_l mean((I_l - S)^2)

``banet`` / ``banet_plus`` (Tsai et al., TIP 2022; spec §7, the 2022 code), BGR in [-0.5, 0.5],
on the output clamped to [-0.5, 0.5] (the code clamps before the loss)::

    L = mean(sqrt((o - T)^2 + 1e-6)) + 0.01 mean|view_as_real(fft2(o)) - view_as_real(fft2(T))|

  fft2: full two-sided, unnormalized 2-D DFT; L1 over real and imaginary parts separately.
  Options: fft_weight (0.01), eps (1e-3), clamp (True).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn


GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale (attentive_msnet)
IMAGENET_STD = (0.229, 0.224, 0.225)  # the ImageNet mean cancels in a difference


# -- helpers ----------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def model_io(model: nn.Module, model_name: str | None = None):
    """The model's IOConvention: `model.io` (also through wrappers), else the registry's."""
    io = getattr(model, "io", None) or getattr(unwrap(model), "io", None)
    if io is None and model_name is not None:
        from ..models import model_entry

        io = model_entry(model_name).io
    if io is None:
        raise ValueError("loss: the model has no `io` convention (build it with deblurfast.models.create)")
    return io


def _check_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, dict) or "blur" not in batch or "sharp" not in batch:
        raise ValueError("loss: batch must be a dict with 'blur' and 'sharp' tensors")
    blur, sharp = batch["blur"], batch["sharp"]
    for name, t in (("blur", blur), ("sharp", sharp)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"loss: batch[{name!r}] must be (N, 3, H, W) RGB in [0, 1], got {shape}")
    if blur.shape != sharp.shape:
        raise ValueError(f"loss: batch['blur'] {tuple(blur.shape)} and batch['sharp'] {tuple(sharp.shape)} differ")
    return blur, sharp


def _outputs(y) -> list[torch.Tensor]:
    """A model output (tensor, or tuple/list of images) as a list of float32 tensors."""
    ys = list(y) if isinstance(y, (list, tuple)) else [y]
    return [o.float() for o in ys]


def _select(y, io) -> torch.Tensor:
    """The image of a model output (io.output indexes tuple/list outputs), as float32."""
    if isinstance(y, (list, tuple)):
        y = y[io.output if io.output is not None else -1]
    return y.float()


def _psnr01(pred01: torch.Tensor, sharp01: torch.Tensor) -> float:
    mse = (pred01.detach().float().clamp(0, 1) - sharp01.detach().float()).square().mean().item()
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def _weights(given, n: int, default, what: str) -> list[float]:
    w = list(default(n) if given is None else given)
    if len(w) != n:
        raise ValueError(f"loss: {what} has {len(w)} entries but the model gives {n} outputs")
    return [float(v) for v in w]


def l1_fft_complex(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over N*C*H*(W//2+1) of |rfft2(a) - rfft2(b)| (complex modulus; RDAFNet)."""
    return (torch.fft.rfft2(a.float()) - torch.fft.rfft2(b.float())).abs().mean()


def l1_fft_real_imag(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over N*C*H*W*2 of |dRe| and |dIm| of the full 2-D DFT (BANet's torch.rfft(2, onesided=False))."""
    return (torch.view_as_real(torch.fft.fft2(a.float())) - torch.view_as_real(torch.fft.fft2(b.float()))).abs().mean()


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((a - b)^2 + eps^2))."""
    return torch.sqrt((a - b).square() + eps * eps).mean()


def imagenet_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ASPDC's pixel loss on [-1, 1] images: MSE after (x + 1) / 2 and ImageNet mean/std
    normalization = mean(((a - b) / (2 std_c))^2)."""
    std = a.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((a - b) / (2.0 * std)).square().mean()


def gray(x: torch.Tensor) -> torch.Tensor:
    """tf.image.rgb_to_grayscale of an RGB (N, 3, H, W) batch -> (N, H, W)."""
    return (x * x.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)).sum(1)


def finite_differences(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Dx, Dy) valid forward differences: g[:, x] - g[:, x+1] and g[y] - g[y+1]."""
    return g[..., :, :-1] - g[..., :, 1:], g[..., :-1, :] - g[..., 1:, :]


# -- the losses --------------------------------------------------------------------------------------


class Loss(nn.Module):
    """loss(model, batch) -> (scalar loss tensor, {term: float}). Subclasses implement `compute`."""

    model_name: str = ""

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        blur, sharp = _check_batch(batch)
        io = model_io(model, self.model_name or None)
        x = io.to_model(blur)
        t = io.to_model(sharp.to(blur.dtype))
        loss, logs, final = self.compute(model, x, t, io)
        if final is not None:
            logs["psnr"] = _psnr01(_without_output(io).from_model(final.detach()), sharp)
        return loss, logs

    def compute(self, model, x, t, io) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        raise NotImplementedError


def _without_output(io):
    """`io` for an already selected image (from_model must not index it again)."""
    return replace(io, output=None)


class AttentiveMSNetLoss(Loss):
    """Xu et al.: multi-scale MSE + grad_weight x gradient loss on the finest output (module doc)."""

    model_name = "attentive_msnet"

    def __init__(self, grad_weight: float = 2.5, scale_weights: Sequence[float] | None = None):
        super().__init__()
        self.grad_weight = float(grad_weight)
        self.scale_weights = None if scale_weights is None else tuple(float(w) for w in scale_weights)

    def resize(self, model, target: torch.Tensor, size) -> torch.Tensor:
        core = unwrap(model)
        if hasattr(core, "resize_to"):
            return core.resize_to(target, tuple(size))
        from ..models.attentive_msnet import tf_legacy_resize

        return tf_legacy_resize(target, tuple(size))

    def compute(self, model, x, t, io):
        outs = _outputs(model(x))
        w = _weights(self.scale_weights, len(outs), lambda n: [1.0] * n, "scale_weights")
        t = t.float()
        logs, total = {}, t.new_zeros(())
        for i, (o, wi) in enumerate(zip(outs, w)):
            target = self.resize(model, t, o.shape[-2:])
            mse = (target - o).square().mean()
            logs[f"mse_{i}"] = mse.item()
            total = total + wi * mse
        dx_t, dy_t = finite_differences(gray(t))
        dx_o, dy_o = finite_differences(gray(outs[-1]))
        grad = (dx_t - dx_o).square().mean() + (dy_t - dy_o).square().mean()
        logs["grad"] = grad.item()
        return total + self.grad_weight * grad, logs, outs[-1]


class RDAFNetLoss(Loss):
    """RDAFNet: per stage L1 + fft_weight x FFT-L1 (+ optional perceptual term); module doc."""

    model_name = "rdafnet_ms"

    def __init__(self, fft_weight: float = 0.1, stage_weights: Sequence[float] | None = None,
                 perceptual_weight: float = 0.0, perceptual: nn.Module | None = None):
        super().__init__()
        if perceptual_weight and perceptual is None:
            raise ValueError("rdafnet loss: perceptual_weight > 0 needs `perceptual`, a module mapping [-1, 1] "
                             "images to features (the authors: torchvision VGG19 features[:15], ImageNet "
                             "weights, no input normalization); its weights are not bundled")
        self.fft_weight = float(fft_weight)
        self.stage_weights = None if stage_weights is None else tuple(float(w) for w in stage_weights)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual = perceptual
        if perceptual is not None:
            perceptual.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.eval()
        return self

    def compute(self, model, x, t, io):
        outs = _outputs(model(x))
        w = _weights(self.stage_weights, len(outs), lambda n: [1.0] * n, "stage_weights")
        t = t.float()
        feats_t = None
        logs, total = {}, t.new_zeros(())
        for s, (o, ws) in enumerate(zip(outs, w), start=1):
            l1 = (o - t).abs().mean()
            fft = l1_fft_complex(o, t)
            term = l1 + self.fft_weight * fft
            logs[f"l1_{s}"], logs[f"fft_{s}"] = l1.item(), fft.item()
            if self.perceptual_weight:
                if feats_t is None:
                    with torch.no_grad():
                        feats_t = self.perceptual(t)
                vgg = F.mse_loss(self.perceptual(o).float(), feats_t.float())
                logs[f"perceptual_{s}"] = vgg.item()
                term = term + self.perceptual_weight * vgg
            total = total + ws * term
        return total, logs, outs[-1]


def _frozen_reblur(reblur_model) -> nn.Module:
    if isinstance(reblur_model, str):
        from ..models import create, load_pretrained

        reblur_model = load_pretrained(create("aspdc_reblur"), reblur_model)
    if not isinstance(reblur_model, nn.Module):
        raise TypeError(f"aspdc loss: reblur_model must be a BlurringNet or a checkpoint path, "
                        f"got {type(reblur_model).__name__}")
    return reblur_model.requires_grad_(False).eval()


class ASPDCLoss(Loss):
    """ASPDC: PL(I_d, I_s) + reblur_weight x PL(I_b, reblur(I_b, I_d)) with a frozen reblurring net."""

    model_name = "aspdc"
    PIXEL = ("imagenet", "mse")

    def __init__(self, reblur_model: nn.Module | str | None = None, reblur_weight: float = 0.1,
                 pixel: str = "imagenet"):
        super().__init__()
        if pixel not in self.PIXEL:
            raise ValueError(f"aspdc loss: pixel must be one of {self.PIXEL}, got {pixel!r}")
        self.pixel = pixel
        self.reblur_weight = float(reblur_weight)
        self.reblur = None if reblur_model is None else _frozen_reblur(reblur_model)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reblur is not None:
            self.reblur.eval()  # frozen: never in training mode
        return self

    def pl(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return imagenet_mse(a, b) if self.pixel == "imagenet" else (a - b).square().mean()

    def compute(self, model, x, t, io):
        deblurred = _select(model(x), io)
        t = t.float()
        deblur_term = self.pl(deblurred, t)
        logs = {"deblur": deblur_term.item()}
        total = deblur_term
        if self.reblur is not None and self.reblur_weight:
            param = next(self.reblur.parameters(), None)
            if param is not None and param.device != x.device:
                self.reblur.to(x.device)
            self.reblur.eval()
            reblurred = self.reblur(x, deblurred.to(x.dtype)).float()
            reblur_term = self.pl(x.float(), reblurred)
            logs["reblur"] = reblur_term.item()
            total = total + self.reblur_weight * reblur_term
        return total, logs, deblurred


class ASPDCReblurLoss(ASPDCLoss):
    """The reblurring network's own training: PL(reblur(I_b, I_s), I_b) (paper Eq. 6)."""

    model_name = "aspdc_reblur"

    def __init__(self, pixel: str = "imagenet"):
        super().__init__(reblur_model=None, pixel=pixel)

    def compute(self, model, x, t, io):
        reblurred = model(x, t).float()
        term = self.pl(reblurred, x.float())
        return term, {"reblur": term.item()}, None


class SAPHNetLoss(Loss):
    """SAPHNet: MSE of the output (DMPHN's training), optionally of the lower levels' images too."""

    model_name = "saphnet"

    def __init__(self, level_weights: Sequence[float] = (1.0, 0.0, 0.0)):
        super().__init__()
        self.level_weights = tuple(float(w) for w in level_weights)
        if not self.level_weights:
            raise ValueError("saphnet loss: level_weights must give at least the output's weight")

    def compute(self, model, x, t, io):
        t = t.float()
        lower = any(self.level_weights[1:])
        if lower:
            images = _outputs(model(x, return_all=True))[::-1]  # level 1 (the output) first
            if len(images) != len(self.level_weights):
                raise ValueError(f"saphnet loss: level_weights has {len(self.level_weights)} entries but the model "
                                 f"has {len(images)} levels")
        else:
            images = _outputs(model(x))[:1]
        logs, total = {}, t.new_zeros(())
        for level, (img, w) in enumerate(zip(images, self.level_weights), start=1):
            mse = (img - t).square().mean()
            logs[f"mse_level{level}"] = mse.item()
            total = total + w * mse
        return total, logs, images[0]


class BANetLoss(Loss):
    """BANet (2022 code): Charbonnier + fft_weight x L1 of the full DFT's real/imag parts, clamped output."""

    model_name = "banet"

    def __init__(self, fft_weight: float = 0.01, eps: float = 1e-3, clamp: bool = True):
        super().__init__()
        self.fft_weight, self.eps, self.clamp = float(fft_weight), float(eps), bool(clamp)

    def compute(self, model, x, t, io):
        o = _select(model(x), io)
        if self.clamp:
            o = o.clamp(*io.value_range)
        t = t.float()
        charb = charbonnier(o, t, self.eps)
        fft = l1_fft_real_imag(o, t)
        return charb + self.fft_weight * fft, {"charbonnier": charb.item(), "fft": fft.item()}, o


_LOSSES: dict[str, type[Loss]] = {
    "attentive_msnet": AttentiveMSNetLoss,
    "rdafnet_ss": RDAFNetLoss,
    "rdafnet_ms": RDAFNetLoss,
    "aspdc": ASPDCLoss,
    "aspdc_reblur": ASPDCReblurLoss,
    "saphnet": SAPHNetLoss,
    "banet": BANetLoss,
    "banet_plus": BANetLoss,
}


def list_losses() -> list[str]:
    return sorted(_LOSSES)


def build_loss(model_name: str, **options) -> Loss:
    """The training loss of `model_name` (a deblurfast.models name) with its paper's defaults;
    `options` are the loss class's keywords (see the module docstring)."""
    cls = _LOSSES.get(model_name)
    if cls is None:
        raise ValueError(f"no training loss for model {model_name!r}; available: {', '.join(list_losses())}")
    try:
        loss = cls(**options)
    except TypeError as e:
        raise TypeError(f"build_loss({model_name!r}): {e}") from None
    loss.model_name = model_name
    return loss


__all__ = [
    "ASPDCLoss", "ASPDCReblurLoss", "AttentiveMSNetLoss", "BANetLoss", "Loss", "RDAFNetLoss", "SAPHNetLoss",
    "build_loss", "charbonnier", "finite_differences", "gray", "imagenet_mse", "l1_fft_complex", "l1_fft_real_imag",
    "list_losses", "model_io", "unwrap",
]
