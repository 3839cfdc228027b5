"""Inference engine: a model prepared for fast deblurring of frames.

    engine = deblurfast.engine.Engine(model, device="cuda", dtype=torch.float16)
    sharp = engine.deblur(frame_rgb_uint8)              # one frame, any size
    for sharp in engine.stream(frames):                 # a video: copies overlap compute
        ...

Preparation: eval mode, no autograd, every deblurfast layer on the fused backend
(accelerate), channels_last, and optionally fp16/bf16 weights and activations —
normalization layers (InstanceNorm, GroupNorm, LayerNorm, BatchNorm) stay
float32 islands, since their mean/variance reductions are what breaks first in
16-bit; deblurfast's own kernels accumulate in float32. Optionally
torch.compile, and on CUDA a CUDA graph captured per padded frame size (the
graph replays all kernel launches at once; inputs are copied into its static
buffer). The stream overlaps the host->device copy of the next frame and the
device->host copy of the previous result with the compute of the current one,
through pinned buffers and a copy stream. On CPU everything falls back to
plain eager execution.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .accelerate import accelerate
from .inference import from_model, image_to_unit, pad_to_model, plan_tiles, run_tiled, to_model, unit_to_image
from .models.registry import IOConvention

FLOAT32_ISLANDS = (nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._BatchNorm)


class Float32Island(nn.Module):
    """Runs `module` in float32 inside a 16-bit model: casts the input up and the output back."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float()).to(x.dtype)


def to_low_precision(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Casts `model` to dtype in place, keeping normalization layers as float32 islands."""
    for name, child in list(model.named_children()):
        if isinstance(child, FLOAT32_ISLANDS):
            setattr(model, name, Float32Island(child))
        elif not isinstance(child, Float32Island):
            to_low_precision(child, dtype)
    for name, p in model.named_parameters(recurse=False):
        p.data = p.data.to(dtype)
    for name, b in model.named_buffers(recurse=False):
        if b.is_floating_point():
            setattr(model, name, b.to(dtype))
    return model


class Engine:
    """A model prepared for inference on one device (see the module docstring).

    model: built by deblurfast.models.create (its `io` convention is used) or any
        module with an `io` attribute or an `io` argument. The engine takes it over:
        it is modified in place (eval, accelerated, cast).
    dtype: None keeps float32; torch.float16 / torch.bfloat16 for 16-bit inference.
    channels_last: None: on CUDA only.
    compile: torch.compile the model (mode "max-autotune-no-cudagraphs" when CUDA
        graphs are on, since the engine captures its own).
    cuda_graph: capture a CUDA graph per padded frame size (CUDA only).
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cuda", dtype: torch.dtype | None = None,
                 backend: str = "auto", channels_last: bool | None = None, compile: bool = False,
                 cuda_graph: bool = True, io: IOConvention | None = None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("Engine: device cuda requested but no CUDA device is visible")
        self.io = io or getattr(model, "io", None)
        if self.io is None:
            raise ValueError("Engine: the model has no `io` convention (build it with deblurfast.models.create) "
                             "and none was given")
        if dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"Engine: dtype must be None, float32, float16 or bfloat16, got {dtype}")
        self.dtype = dtype or torch.float32
        # channels_last pays on GPUs (tensor-core convolutions); on CPU it can slow plain convolutions
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        model = model.eval().requires_grad_(False).to(self.device)
        accelerate(model, backend=backend, channels_last=self.channels_last)
        if self.dtype != torch.float32:
            to_low_precision(model, self.dtype)
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
        self.model = model
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        self._forward = model
        if compile:
            mode = "max-autotune-no-cudagraphs" if self.cuda_graph else "max-autotune"
            self._forward = torch.compile(model, mode=mode)
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    # -- the model on a batch already in its convention ------------------------------------

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output image for a padded batch in the model's convention."""
        x = self._prepare_input(x)
        if not self.cuda_graph:
            return from_model(self._forward(x), self.io)
        key = tuple(x.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: torch.Tensor):
        static_in = x.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm up outside the graph: autotuning, lazy allocations
            for _ in range(3):
                from_model(self._forward(static_in), self.io)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = from_model(self._forward(static_in), self.io)
        return graph, static_in, static_out

    # -- images -------------------------------------------------------------------------------

    def _to_model(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8/uint16 (N, H, W, 3) RGB on any device -> padded batch in the model's convention."""
        x = image_to_unit(frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2))
        return pad_to_model(to_model(x, self.io), self.io)

    def _to_image(self, y: torch.Tensor, size: tuple[int, int], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        H, W = size
        return unit_to_image(y[..., :H, :W], dtype).permute(0, 2, 3, 1)

    def deblur(self, image: np.ndarray, tile: int | None = None, overlap: int | None = None) -> np.ndarray:
        """One RGB uint8 or uint16 frame (H, W, 3) or batch (N, H, W, 3) -> the same shape and dtype,
        deblurred; with `tile`, in overlapping tiles (deblurfast.inference.plan_tiles: `overlap`
        defaults to one that follows the model's receptive field)."""
        image = np.asarray(image)
        if image.dtype not in (np.uint8, np.uint16) or image.shape[-1] != 3 or image.ndim not in (3, 4) \
                or 0 in image.shape:
            raise ValueError(f"Engine.deblur: image must be uint8 or uint16 (H, W, 3) or (N, H, W, 3), at least "
                             f"1x1, got {image.dtype} {image.shape}")
        plan = None if tile is None else plan_tiles(self.io, tile, overlap)
        batch = torch.from_numpy(np.array(image if image.ndim == 4 else image[None]))  # a writable copy
        x, size = self._to_model(batch)
        y = self.run(x) if plan is None else run_tiled(self.run, x, plan)
        out = self._to_image(y, size, batch.dtype).cpu().numpy()
        return out if image.ndim == 4 else out[0]

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Deblurs a sequence of same-size RGB uint8 frames (H, W, 3), yielding them in order.

        On CUDA, frame i+1's upload (one stream) and frame i-1's download (another)
        run while frame i computes, through two pinned buffers each way; the host
        only waits for a download when it hands that frame out. On CPU: one by one."""
        if self.device.type != "cuda":
            for frame in frames:
                yield self.deblur(frame)
            return
        compute = torch.cuda.current_stream(self.device)
        upload, download = torch.cuda.Stream(self.device), torch.cuda.Stream(self.device)
        pinned_in: list[torch.Tensor] = []
        pinned_out: list[torch.Tensor] = []
        uploaded: list[torch.cuda.Event | None] = [None, None]
        pending = None  # (download event, pinned result) of the previous frame
        for i, frame in enumerate(frames):
            frame = np.asarray(frame)
            slot = i % 2
            if not pinned_in:
                pinned_in = [torch.empty(frame.shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
                pinned_out = [torch.empty(frame.shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
            elif frame.shape != tuple(pinned_in[0].shape):
                raise ValueError(f"Engine.stream: all frames must have one size, got {frame.shape} after "
                                 f"{tuple(pinned_in[0].shape)}")
            if uploaded[slot] is not None:
                uploaded[slot].synchronize()  # the upload that last read this pinned buffer is done
            pinned_in[slot].numpy()[...] = frame
            with torch.cuda.stream(upload):
                gpu_frame = pinned_in[slot].to(self.device, non_blocking=True)
                uploaded[slot] = torch.cuda.Event()
                uploaded[slot].record(upload)
            compute.wait_event(uploaded[slot])
            gpu_frame.record_stream(compute)
            x, size = self._to_model(gpu_frame[None])
            result = self._to_image(self.run(x), size)[0]
            computed = torch.cuda.Event()
            computed.record(compute)
            with torch.cuda.stream(download):
                download.wait_event(computed)
                result.record_stream(download)
                pinned_out[slot].copy_(result, non_blocking=True)
                downloaded = torch.cuda.Event()
                downloaded.record(download)
            if pending is not None:  # hand out the previous frame while this one computes
                pending[0].synchronize()
                yield pending[1].numpy().copy()
            pending = (downloaded, pinned_out[slot])
        if pending is not None:
            pending[0].synchronize()
            yield pending[1].numpy().copy()
