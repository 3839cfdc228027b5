"""Image files at full precision (deblurfast.media): 8 and 16 bits, alpha, grey, ICC, EXIF."""

import numpy as np
import pytest

from deblurfast import media
from deblurfast.media import ImageFormatError, Picture, read_image, read_picture, write_picture

Image = pytest.importorskip("PIL.Image")
ImageOps = pytest.importorskip("PIL.ImageOps")

rng = np.random.default_rng(0)
RGB16 = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
A16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
RGB8 = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
A8 = rng.integers(0, 256, (9, 11), dtype=np.uint8)


def grey(channel):
    return np.repeat(channel[..., None], 3, axis=-1)


PICTURES = {
    "grey16": Picture(grey(A16), grey=True, icc_profile=b"profile" * 20),
    "grey_alpha16": Picture(grey(A16), RGB16[..., 0], grey=True),
    "rgb16": Picture(RGB16, icc_profile=b"profile" * 20),
    "rgba16": Picture(RGB16, A16),
    "rgb8": Picture(RGB8, icc_profile=b"profile" * 20),
    "rgba8": Picture(RGB8, A8),
    "grey_alpha8": Picture(grey(A8), A8, grey=True),
}


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("kind", sorted(PICTURES))
def test_lossless_formats_round_trip_bit_for_bit(tmp_path, kind, ext):
    picture = PICTURES[kind]
    path = str(tmp_path / f"{kind}{ext}")
    assert write_picture(path, picture) == []
    back = read_picture(path)
    assert back.rgb.dtype == picture.rgb.dtype and np.array_equal(back.rgb, picture.rgb)
    assert back.grey == picture.grey and back.icc_profile == picture.icc_profile
    assert (back.alpha is None) == (picture.alpha is None)
    assert picture.alpha is None or np.array_equal(back.alpha, picture.alpha)


def test_read_image_rounds_16_bit_to_8_bit(tmp_path):
    """Pillow's convert("RGB") clips 16-bit grey at 255: 99.6% of a full-range gradient turned white."""
    gradient = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    Image.fromarray(gradient).save(tmp_path / "g.png")
    eight = read_image(str(tmp_path / "g.png"))
    assert eight.dtype == np.uint8 and eight.shape == (256, 256, 3)
    assert np.array_equal(eight[..., 0], np.round(gradient / 257).astype(np.uint8))
    assert (eight == 255).mean() < 0.01


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_like_pillow(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = orientation, "camera"
    Image.fromarray(RGB8).save(tmp_path / "o.png", exif=exif.tobytes())
    with Image.open(tmp_path / "o.png") as im:
        upright = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(media.orient(RGB8, orientation), upright)
    assert np.array_equal(read_picture(str(tmp_path / "o.png")).rgb, upright)
    write_picture(str(tmp_path / "o16.png"), Picture(RGB16, exif=exif.tobytes()))  # 16-bit: decoded by FFmpeg
    back = read_picture(str(tmp_path / "o16.png"))
    assert np.array_equal(back.rgb, media.orient(RGB16, orientation))
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept.get(0x0112) is None and kept.get(0x010F) == "camera"


def test_what_a_format_cannot_hold(tmp_path):
    with pytest.raises(ImageFormatError, match="JPG cannot store the image's alpha channel"):
        write_picture(str(tmp_path / "a.jpg"), PICTURES["rgba8"])
    with pytest.raises(ImageFormatError, match="BMP cannot store the image's alpha channel"):
        write_picture(str(tmp_path / "a.bmp"), PICTURES["rgba8"])
    assert not list(tmp_path.iterdir())
    notes = write_picture(str(tmp_path / "b.jpg"), Picture(RGB16))
    assert notes == [f"{tmp_path / 'b.jpg'}: JPG holds 8 bits per channel: the 16-bit image is written as 8-bit"]
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "f.tif", rng.random((4, 5, 3)).astype(np.float32), photometric="rgb")
    with pytest.raises(ImageFormatError, match="float32 samples"):
        read_picture(str(tmp_path / "f.tif"))
