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
buffer): the `max_graphs` most recently used sizes are kept, all in one memory
pool, so a folder of images of many sizes does not grow GPU memory; if a capture
fails, the engine warns and runs eagerly. The stream overlaps the host->device
copy of the next frame and the device->host copy of the previous result with the
compute of the current one, through pinned buffers and a copy stream. On CPU
there are no graphs or streams, and the way to run the network (deblurfast's kernels
or the reference ops, NCHW or channels_last, compiled or not) is chosen by timing
each on the first input (deblurfast.engine.cpu_path).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .._device_constants import kept_alive
from ..models.registry import IOConvention
from .accelerate import accelerate
from .cpu_path import CpuPath, candidates, choose, configure
from .images import image_to_unit, unit_to_image
from .tiling import plan_tiles, run_tiled

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


def check_frame(image, what: str, batch: bool = False, dtypes=(np.uint8,)) -> np.ndarray:
    """image as a numpy array, if it is an RGB frame (H, W, 3) of one of `dtypes`, at least 1x1
    (or, with batch, a batch (N, H, W, 3)); a ValueError naming `what` otherwise: nothing is cast
    silently."""
    image = np.asarray(image)
    shapes = "(H, W, 3) or (N, H, W, 3)" if batch else "(H, W, 3)"
    names = " or ".join(np.dtype(d).name for d in dtypes)
    if (image.dtype not in dtypes or image.ndim not in ((3, 4) if batch else (3,)) or image.shape[-1] != 3
            or 0 in image.shape):
        raise ValueError(f"{what} must be {names} {shapes}, at least 1x1, got {image.dtype} {image.shape}")
    return image


def indexed_device(device: str | torch.device) -> torch.device:
    """The device with its index ("cuda" is the current CUDA device now), so that everything the
    engine does later happens on the device it was built for, whichever device is current then."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise RuntimeError("Engine: device cuda requested but no CUDA device is visible")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= count:
        raise ValueError(f"Engine: device must be a visible CUDA device (cuda:0 to cuda:{count - 1}), got {device}")
    return torch.device("cuda", index)


class CapturedGraph:
    """The model captured into a CUDA graph at one input shape.

    replay(x) copies x into static_in, replays the graph and returns static_out. The engine's
    graphs share one memory pool, so static_out is only valid until the next replay of any of
    them. constants: the cached device tensors (deblurfast._device_constants) handed out while
    warming up and capturing; the graph reads them by address, so it holds them while it lives."""

    def __init__(self, graph, static_in: torch.Tensor, static_out: torch.Tensor, constants: dict):
        self.graph, self.static_in, self.static_out, self.constants = graph, static_in, static_out, constants

    def replay(self, x: torch.Tensor) -> torch.Tensor:
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


class Engine:
    """A model prepared for inference on one device (see the module docstring).

    model: built by deblurfast.models.create (its `io` convention is used) or any
        module with an `io` attribute or an `io` argument. The engine takes it over:
        it is modified in place (eval, accelerated, cast).
    device: "cuda" means the CUDA device current at construction; the engine keeps to it.
    dtype: None keeps float32; torch.float16 / torch.bfloat16 for 16-bit inference.
    backend: the deblurfast layers' backend; on CPU "auto" lets the measurement also try
        the reference ops.
    channels_last: None: on CUDA; on CPU, whichever the measurement finds faster.
    compile: torch.compile the model (mode "max-autotune-no-cudagraphs" when CUDA
        graphs are on, since the engine captures its own). On CPU the fastest plain path's
        compiled twin (inductor, frozen weights) is measured too and kept only if faster.
    cpu_path: on CPU, a CpuPath to run without measuring; None measures on the first
        input among the paths `backend`, `channels_last` and `compile` allow. The
        choice is `engine.cpu_path`, the timings `engine.cpu_timings`.
    cuda_graph: capture a CUDA graph per padded frame size (CUDA only); if a capture
        fails, a RuntimeWarning says why and the engine runs eagerly from then on.
    max_graphs: how many captured sizes to keep (least recently used dropped first).

    One engine serves one caller at a time: its graphs share static buffers and a memory pool.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cuda", dtype: torch.dtype | None = None,
                 backend: str = "auto", channels_last: bool | None = None, compile: bool = False,
                 cuda_graph: bool = True, io: IOConvention | None = None, max_graphs: int = 8,
                 cpu_path: CpuPath | None = None):
        self.device = indexed_device(device)
        self.io = io or getattr(model, "io", None)
        if self.io is None:
            raise ValueError("Engine: the model has no `io` convention (build it with deblurfast.models.create) "
                             "and none was given")
        if dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"Engine: dtype must be None, float32, float16 or bfloat16, got {dtype}")
        if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f"Engine: max_graphs must be an int >= 1, got {max_graphs!r}")
        if cpu_path is not None and not isinstance(cpu_path, CpuPath):
            raise TypeError(f"Engine: cpu_path must be a deblurfast.engine.CpuPath or None, got {cpu_path!r}")
        self.dtype = dtype or torch.float32
        on_cpu = self.device.type != "cuda"
        # channels_last pays on GPUs (tensor-core convolutions); on CPU the measurement decides
        self.channels_last = not on_cpu if channels_last is None else channels_last
        model = model.eval().requires_grad_(False).to(self.device)
        self.model = model
        self.cuda_graph = cuda_graph and not on_cpu
        self.max_graphs = max_graphs
        self.cpu_path: CpuPath | None = None
        self.cpu_timings: dict[CpuPath, float] = {}
        self._cpu_paths: list[CpuPath] = []  # still to be measured (at the first input)
        self._forward = model
        if on_cpu:
            if self.dtype != torch.float32:
                to_low_precision(model, self.dtype)
            paths = [cpu_path] if cpu_path is not None else candidates(backend, channels_last, compile)
            self._use_cpu_path(paths[0], configure(model, paths[0]))
            self._cpu_paths = paths if len(paths) > 1 else []
            compile = False  # a compiled path is one of the measured ones
        else:
            accelerate(model, backend=backend, channels_last=self.channels_last)
            if self.dtype != torch.float32:
                to_low_precision(model, self.dtype)
                if self.channels_last:
                    model.to(memory_format=torch.channels_last)
        if compile:
            mode = "max-autotune-no-cudagraphs" if self.cuda_graph else "max-autotune"
            self._forward = torch.compile(model, mode=mode)
        self._graphs: OrderedDict[tuple[int, ...], CapturedGraph] = OrderedDict()  # least recently used first
        self._capture_stream = self._graph_pool = None
        if self.cuda_graph:
            # its own capture stream on this device (torch's default one lives on whichever device
            # was current at the process's first capture), and one pool for all graphs
            self._capture_stream = torch.cuda.Stream(self.device)
            self._graph_pool = torch.cuda.graph_pool_handle()

    def _use_cpu_path(self, path: CpuPath, forward) -> None:
        self.cpu_path, self._forward, self.channels_last = path, forward, path.channels_last

    def _on_device(self):
        """Makes the engine's device current (CUDA launches go to the current device)."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    # -- the model on a batch already in its convention ------------------------------------

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _forward_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.io.from_model(self._forward(x))

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output image for a padded batch in the model's convention: a tensor of
        the caller's own (a graph's output buffer is copied out)."""
        y, owned = self._run(x)
        return y if owned else y.clone()

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """run() without the copy: (output, whether it is the caller's). A graph's output is its
        static buffer, overwritten by the engine's next replay."""
        with self._on_device():
            if self._cpu_paths:
                paths, self._cpu_paths = self._cpu_paths, []
                path, forward, self.cpu_timings = choose(self.model, x.to(self.device, self.dtype), self.io, paths)
                self._use_cpu_path(path, forward)
            x = self._prepare_input(x)
            if not self.cuda_graph:
                return self._forward_image(x), True
            key = tuple(x.shape)
            graph = self._graphs.get(key)
            if graph is not None:
                self._graphs.move_to_end(key)
            else:
                graph = self._capture(x)
                if graph is None:
                    return self._forward_image(x), True
                self._graphs[key] = graph
            return graph.replay(x), False

    def _capture(self, x: torch.Tensor) -> CapturedGraph | None:
        """The model warmed up and captured at x's shape; None, with a warning and CUDA graphs
        off for this engine, if the capture fails (an error of the model itself, raised while
        warming up, propagates)."""
        self._evict(self.max_graphs - 1)
        static_in = x.clone()
        with kept_alive() as constants:
            self._warm_up(static_in)
            try:
                graph, static_out = self._record(static_in)
            except Exception as error:  # whatever broke the capture, eager execution is correct
                self.cuda_graph = False
                self._evict(0)
                name = getattr(self.model, "model_name", type(self.model).__name__)
                warnings.warn(f"Engine: capturing {name} into a CUDA graph at input {tuple(x.shape)} failed "
                              f"({type(error).__name__}: {error}); this engine runs eagerly from now on",
                              RuntimeWarning, stacklevel=4)
                return None
        return CapturedGraph(graph, static_in, static_out, constants)

    def _warm_up(self, x: torch.Tensor) -> None:
        """Runs the model outside any graph first (autotuning, lazy allocations, the device
        constant caches), on the capture stream."""
        current = torch.cuda.current_stream(self.device)
        self._capture_stream.wait_stream(current)
        with torch.cuda.stream(self._capture_stream):
            for _ in range(3):
                self._forward_image(x)
        current.wait_stream(self._capture_stream)

    def _record(self, static_in: torch.Tensor):
        """(graph, static output) of one forward on static_in, captured on the engine's stream
        into the engine's pool."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool, stream=self._capture_stream):
            static_out = self._forward_image(static_in)
        return graph, static_out

    def _evict(self, keep: int) -> None:
        """Drops the least recently used graphs until `keep` remain; their memory goes back to
        the pool, for the next capture."""
        if len(self._graphs) <= keep:
            return
        torch.cuda.synchronize(self.device)  # no replay of a dropped graph may still be running
        while len(self._graphs) > keep:
            self._graphs.popitem(last=False)

    # -- images -------------------------------------------------------------------------------

    def _to_model(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8/uint16 (N, H, W, 3) RGB on any device -> padded batch in the model's convention."""
        x = image_to_unit(frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2))
        return self.io.pad(self.io.to_model(x))

    def _to_image(self, y: torch.Tensor, size: tuple[int, int], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        """[0, 1] batch -> (N, H, W, 3) of `dtype` cropped to size. Out of place: y may be a graph's buffer."""
        H, W = size
        return unit_to_image(y[..., :H, :W], dtype).permute(0, 2, 3, 1)

    def deblur(self, image: np.ndarray, tile: int | None = None, overlap: int | None = None) -> np.ndarray:
        """One RGB uint8 or uint16 frame (H, W, 3) or batch (N, H, W, 3) -> the same shape and dtype,
        deblurred; with `tile`, in overlapping tiles (deblurfast.engine.plan_tiles: `overlap`
        defaults to one that follows the model's receptive field)."""
        image = check_frame(image, "Engine.deblur: image", batch=True, dtypes=(np.uint8, np.uint16))
        plan = None if tile is None else plan_tiles(self.io, tile, overlap)
        batch = torch.from_numpy(np.array(image if image.ndim == 4 else image[None]))  # a writable copy
        x, size = self._to_model(batch)
        y = self._run(x)[0] if plan is None else run_tiled(self.run, x, plan)
        out = self._to_image(y, size, batch.dtype).cpu().numpy()
        return out if image.ndim == 4 else out[0]

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Deblurs a sequence of same-size RGB uint8 frames (H, W, 3), yielding them in order.

        On CUDA, frame i+1's upload (one stream) and frame i-1's download (another)
        run while frame i computes, through two pinned buffers each way; the host
        only waits for a download when it hands that frame out. Every frame computes on
        the stream current when iteration starts, whatever stream is current when the
        consumer asks for the next frame. On CPU: one by one."""
        shape = None

        def checked(i: int, frame) -> np.ndarray:
            frame = check_frame(frame, f"Engine.stream: frame {i}")
            if shape is not None and frame.shape != shape:
                raise ValueError(f"Engine.stream: all frames must have one size, got frame {i} {frame.shape} "
                                 f"after {shape}")
            return frame

        if self.device.type != "cuda":
            for i, frame in enumerate(frames):
                frame = checked(i, frame)
                shape = frame.shape
                yield self.deblur(frame)
            return
        compute = torch.cuda.current_stream(self.device)
        upload, download = torch.cuda.Stream(self.device), torch.cuda.Stream(self.device)
        pinned_in: list[torch.Tensor] = []
        pinned_out: list[torch.Tensor] = []
        uploaded: list[torch.cuda.Event | None] = [None, None]
        pending = None  # (download event, pinned result) of the previous frame
        for i, frame in enumerate(frames):
            frame = checked(i, frame)
            shape = frame.shape
            slot = i % 2
            if not pinned_in:
                pinned_in = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
                pinned_out = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
            if uploaded[slot] is not None:
                uploaded[slot].synchronize()  # the upload that last read this pinned buffer is done
            pinned_in[slot].numpy()[...] = frame
            # never across a yield: the consumer's current stream and device stay its own
            with torch.cuda.device(self.device):
                with torch.cuda.stream(upload):
                    gpu_frame = pinned_in[slot].to(self.device, non_blocking=True)
                    uploaded[slot] = torch.cuda.Event()
                    uploaded[slot].record(upload)
                with torch.cuda.stream(compute):
                    compute.wait_event(uploaded[slot])
                    gpu_frame.record_stream(compute)
                    x, size = self._to_model(gpu_frame[None])
                    result = self._to_image(self._run(x)[0], size)[0]
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
