"""Reading and writing images and videos for the `deblurfast deblur` command.

Images go through Pillow (RGB uint8 HWC arrays), videos through PyAV (FFmpeg):
frames are decoded to RGB, re-encoded with H.264 (MPEG-4 part 2 where the FFmpeg
build lacks libx264) at the input's frame rate, and the audio packets are copied
unchanged. Every write goes to a temporary file in the destination folder,
renamed into place when complete, so an interrupted run never leaves a
half-written output, and nothing is ever written over an input.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ._files import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


def kind_of(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def read_image(path: str) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def write_image(path: str, image: np.ndarray) -> None:
    """Atomically writes an RGB uint8 (H, W, 3) image; the format follows the extension."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp)


def list_files(folder: str) -> list[str]:
    """Every file below `folder` (hidden ones left out), recursively, sorted; paths relative to `folder`."""
    found = []
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.relpath(os.path.join(base, f), folder) for f in sorted(files) if not f.startswith(".")]
    return found


def list_images(folder: str) -> list[str]:
    """Every image below `folder`, recursively, sorted; paths relative to `folder`."""
    return [f for f in list_files(folder) if kind_of(f) == "image"]


@dataclass
class VideoInfo:
    frames: int | None  # None when the container does not say
    rate: object  # fractions.Fraction frames per second
    width: int
    height: int
    has_audio: bool


def video_info(path: str) -> VideoInfo:
    import av

    with av.open(path) as container:
        video = container.streams.video[0]
        return VideoInfo(video.frames or None, video.average_rate, video.codec_context.width,
                         video.codec_context.height, bool(container.streams.audio))


def read_video(path: str) -> Iterator[np.ndarray]:
    """The video's frames as RGB uint8 (H, W, 3), in order."""
    import av

    with av.open(path) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def write_video(path: str, frames: Iterator[np.ndarray], source: str) -> int:
    """Encodes `frames` at `source`'s frame rate into `path` (atomically) and copies
    `source`'s audio streams unchanged; returns the number of frames written."""
    import av

    written = 0
    with atomic_path(path) as tmp:
        with av.open(source) as src, av.open(tmp, mode="w") as dst:
            v_in = src.streams.video[0]
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            v_out = dst.add_stream(codec, rate=v_in.average_rate)
            audio = {}
            for a in src.streams.audio:
                try:
                    audio[a.index] = dst.add_stream_from_template(a)
                except (ValueError, av.error.FFmpegError):  # a codec this container cannot hold
                    pass
            for image in frames:
                if written == 0:
                    v_out.width, v_out.height = image.shape[1], image.shape[0]
                    # 4:2:0 needs even sizes; x264 keeps an odd-sized frame whole in 4:4:4
                    odd = image.shape[0] % 2 or image.shape[1] % 2
                    v_out.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                for packet in v_out.encode(frame):
                    dst.mux(packet)
                written += 1
            for packet in v_out.encode():
                dst.mux(packet)
            if audio:
                for packet in src.demux(*[src.streams[i] for i in audio]):
                    if packet.dts is None:
                        continue
                    packet.stream = audio[packet.stream.index]
                    dst.mux(packet)
    return written
