"""Reading and writing images and videos for the `deblurfast deblur` command.

Images: 8-bit files of every kind through Pillow; 16-bit PNG and TIFF at full
precision (16-bit grey through Pillow, 16-bit colour PNG decoded by FFmpeg
through PyAV and encoded here, 16-bit colour TIFF through tifffile, an optional
package: without it such a file is refused with a message, never read as 8
bits). A Picture keeps what the network does not see: alpha (passed through
untouched), greyscale (run as RGB, written back as grey), the ICC profile and
the EXIF data. EXIF orientation is applied when reading (the network sees the
image upright, as viewers show it) and removed from the EXIF written back, so
the output displays like the input. Outputs keep the input's bit depth where
the format allows (PNG, TIFF); JPEG and WebP are written at quality 95 unless
told otherwise.

Videos go through PyAV (FFmpeg): frames are decoded to RGB, re-encoded with
H.264 (MPEG-4 part 2 where the FFmpeg build lacks libx264) at the input's frame
rate, and the audio packets are copied unchanged. Every write goes to a
temporary file in the destination folder, renamed into place when complete, so
an interrupted run never leaves a half-written output, and nothing is ever
written over an input.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from ._files import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff")  # the formats written at 16 bits per channel
ALPHA_EXTENSIONS = (".png", ".tif", ".tiff", ".webp")
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")
JPEG_QUALITY = 95
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow converts RGB to grey

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION = 0x0112  # the EXIF / TIFF orientation tag
ICC_PROFILE_TAG = 34675  # TIFF InterColorProfile


def kind_of(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


class ImageFormatError(ValueError):
    """An image file deblurfast cannot read or write without losing something: the message says what."""


@dataclass(frozen=True)
class Picture:
    """An image file's content.

    rgb: (H, W, 3) uint8 or uint16, upright: what the network sees (a grey image repeated in
        all three channels).
    alpha: (H, W) of rgb's dtype, or None: passed through untouched.
    grey: the file is greyscale; it is written back as one channel (BT.601 luma of rgb).
    icc_profile, exif: written back where the format allows (the EXIF without its orientation,
        which reading applied).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    grey: bool = False
    icc_profile: bytes | None = None
    exif: bytes | None = None

    def with_rgb(self, rgb: np.ndarray) -> "Picture":
        if rgb.shape != self.rgb.shape or rgb.dtype != self.rgb.dtype:
            raise ValueError(f"Picture.with_rgb: rgb must be {self.rgb.dtype} {self.rgb.shape}, got {rgb.dtype} "
                             f"{rgb.shape}")
        return replace(self, rgb=rgb)


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels stored with EXIF `orientation` (1-8) turned upright, as viewers show them."""
    ops = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops.get(orientation, ops[1])(array))


def _png_header(path: str) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, None for another format."""
    with open(path, "rb") as f:
        head = f.read(26)
    if not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _decode_png16(path: str, colour_type: int) -> np.ndarray:
    """The pixels of a 16-bit colour PNG (colour types 2, 4, 6) as uint16 (H, W, C) with C = 3, 2, 4."""
    try:
        import av
    except ImportError as e:
        raise ImageFormatError("reading a 16-bit colour PNG at full precision needs PyAV (pip install av)") from e
    with av.open(path, format="png_pipe") as container:
        frame = next(container.decode(video=0))
    if colour_type == 2:
        return frame.reformat(format="rgb48le").to_ndarray()
    rgba = frame.reformat(format="rgba64le").to_ndarray()
    return rgba[..., [0, 3]] if colour_type == 4 else rgba


def _read_tiff16(path: str) -> Picture:
    """A 16-bit TIFF Pillow cannot hold (colour, grey + alpha), through tifffile."""
    try:
        import tifffile
    except ImportError as e:
        raise ImageFormatError("reading a 16-bit colour TIFF at full precision needs tifffile "
                               "(pip install tifffile)") from e
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        data = page.asarray()
        if data.ndim == 3 and page.planarconfig == 2:  # separate planes: (C, H, W)
            data = np.moveaxis(data, 0, -1)
        orientation = page.tags[ORIENTATION].value if ORIENTATION in page.tags else 1
        icc = page.tags[ICC_PROFILE_TAG].value if ICC_PROFILE_TAG in page.tags else None
    if data.dtype != np.uint16 or data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (2, 3, 4)):
        raise ImageFormatError(f"unsupported TIFF pixel format: {data.dtype} samples, shape {data.shape} "
                               "(deblurfast reads 8- and 16-bit grey, grey + alpha, RGB and RGBA images)")
    channels = 1 if data.ndim == 2 else data.shape[-1]
    grey = channels in (1, 2)
    rgb, alpha = _split_channels(orient(data, int(orientation)), grey, channels in (2, 4))
    return Picture(rgb, alpha, grey, bytes(icc) if icc else None)


def _split_channels(pixels: np.ndarray, grey: bool, alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W) / (H, W, C) pixels -> (rgb (H, W, 3), alpha or None)."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    colour = pixels[..., :1 if grey else 3]
    rgb = np.repeat(colour, 3, axis=-1) if grey else colour
    return np.ascontiguousarray(rgb), (np.ascontiguousarray(pixels[..., -1]) if alpha else None)


def read_picture(path: str) -> Picture:
    """Reads an image file at its full precision (8 or 16 bits per channel), upright; see Picture.
    Raises ImageFormatError for a pixel format it cannot read without loss."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        opened = Image.open(path)
    except UnidentifiedImageError:
        with open(path, "rb") as f:
            if f.read(4) in (b"II*\0", b"MM\0*"):  # a TIFF Pillow cannot decode (16-bit grey + alpha)
                return _read_tiff16(path)
        raise
    with opened as im:
        fmt = im.format
        exif = im.getexif()
        orientation = exif.get(ORIENTATION, 1)
        icc = im.info.get("icc_profile") or None
        raw_exif = im.info.get("exif") if fmt != "TIFF" else None  # a TIFF's tags are not EXIF
        png = _png_header(path) if fmt == "PNG" else None
        bits = im.tag_v2.get(258, (8,)) if fmt == "TIFF" else (8,)
        mode = im.mode
        if png is not None and png[0] == 16 and png[1] in (2, 4, 6):  # 16-bit colour / grey + alpha PNG
            grey, alpha = png[1] == 4, png[1] in (4, 6)
            rgb, a = _split_channels(orient(_decode_png16(path, png[1]), orientation), grey, alpha)
        elif fmt == "TIFF" and max(bits) > 8 and not mode.startswith("I;16"):  # 16-bit colour TIFF
            return _read_tiff16(path)
        else:
            im = ImageOps.exif_transpose(im)  # Pillow turns TIFFs upright when loading; this handles both
            if mode.startswith("I;16") or (mode == "I" and png is not None and png[0] == 16):  # 16-bit grey
                grey = True
                rgb, a = _split_channels(np.asarray(im).astype(np.uint16), True, False)
            elif mode in ("1", "L", "LA", "La", "RGB", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                grey = mode in ("1", "L", "LA", "La")
                alpha = mode in ("LA", "La", "RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
                target = ("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB")
                if mode in ("CMYK", "LAB", "HSV"):
                    icc = None  # a profile of another colour space does not describe the RGB written
                rgb, a = _split_channels(np.asarray(im.convert(target)), grey, alpha)
            else:
                raise ImageFormatError(f"unsupported pixel format {mode!r} (deblurfast reads 8- and 16-bit "
                                       "images)")
    if raw_exif:
        exif.pop(ORIENTATION, None)  # applied above
    return Picture(rgb, a, grey, icc, exif.tobytes() if raw_exif else None)


def _to_8bit(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == np.uint8 else ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def read_image(path: str) -> np.ndarray:
    """RGB uint8 (H, W, 3), upright (16-bit images rounded to 8 bits, alpha left out)."""
    return _to_8bit(read_picture(path).rgb)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_png16(pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit PNG of uint16 (H, W) / (H, W, C), C = 2 (grey + alpha), 3 or 4: rows Sub-filtered
    and deflated, with the ICC profile (iCCP) and EXIF (eXIf) chunks."""
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.astype(">u2").reshape(h, w * c).view(np.uint8)  # [H, W * C * 2], big-endian samples
    bpp = 2 * c
    filtered = rows.copy()
    filtered[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]  # filter 1 (Sub), modulo 256
    data = np.hstack([np.ones((h, 1), np.uint8), filtered]).tobytes()
    out = [PNG_SIGNATURE, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    if exif:
        out.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    out += [_png_chunk(b"IDAT", zlib.compress(data, 6)), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def write_picture(path: str, picture: Picture, jpeg_quality: int = JPEG_QUALITY) -> list[str]:
    """Atomically writes `picture`; the format follows the extension. Keeps 16 bits per channel in
    PNG and TIFF, alpha where the format has it (ImageFormatError where it has not: JPEG), grey as
    grey, the ICC profile and EXIF. jpeg_quality: of JPEG and WebP. Returns notes on what the
    format could not keep (16-bit written as 8-bit)."""
    from PIL import Image

    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ImageFormatError(f"{path}: unsupported image extension {ext!r} (images: {', '.join(IMAGE_EXTENSIONS)})")
    if picture.alpha is not None and ext not in ALPHA_EXTENSIONS:
        raise ImageFormatError(f"{path}: {ext[1:].upper()} cannot store the image's alpha channel; write one of "
                               f"{', '.join(ALPHA_EXTENSIONS)}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    rgb = picture.rgb
    colour = rgb
    if picture.grey:
        luma = rgb.astype(np.float64) @ np.array(LUMA)
        colour = np.round(luma).astype(rgb.dtype)[..., None]
    pixels = colour if picture.alpha is None else np.concatenate([colour, picture.alpha[..., None]], axis=-1)
    notes = []
    if pixels.dtype == np.uint16 and ext not in SIXTEEN_BIT_EXTENSIONS:
        notes.append(f"{path}: {ext[1:].upper()} holds 8 bits per channel: the 16-bit image is written as 8-bit")
        pixels = _to_8bit(pixels)
    channels = pixels.shape[-1]
    with atomic_path(path) as tmp:
        if pixels.dtype == np.uint16 and ext == ".png":
            with open(tmp, "wb") as f:
                f.write(_encode_png16(pixels, picture.icc_profile, picture.exif))
        elif pixels.dtype == np.uint16 and channels > 1:  # 16-bit colour TIFF
            try:
                import tifffile
            except ImportError as e:
                raise ImageFormatError(f"{path}: writing a 16-bit colour TIFF needs tifffile (pip install tifffile)"
                                       "; or write .png") from e
            tifffile.imwrite(tmp, pixels, photometric="minisblack" if channels == 2 else "rgb",
                             extrasamples=("unassalpha",) if picture.alpha is not None else None,
                             iccprofile=picture.icc_profile)
        else:
            # Pillow's modes by shape and dtype: L, LA, RGB, RGBA; I;16 for 16-bit grey (TIFF)
            image = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if channels == 1 else pixels))
            options = {}
            if picture.icc_profile:
                options["icc_profile"] = picture.icc_profile
            if picture.exif and ext not in (".tif", ".tiff", ".bmp"):
                options["exif"] = picture.exif
            if ext in LOSSY_EXTENSIONS:
                options["quality"] = jpeg_quality
            image.save(tmp, **options)
    return notes


def write_image(path: str, image: np.ndarray, jpeg_quality: int = JPEG_QUALITY) -> None:
    """Atomically writes an RGB uint8 or uint16 (H, W, 3) image; the format follows the extension."""
    write_picture(path, Picture(np.asarray(image)), jpeg_quality)


def list_files(folder: str, skip: str | None = None) -> list[str]:
    """Every file below `folder` (hidden ones left out), recursively, sorted; paths relative to
    `folder`. skip: a folder below `folder` whose files are left out (an output folder)."""
    skip = os.path.realpath(skip) if skip else None
    found = []
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(base, d)) != skip)
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
