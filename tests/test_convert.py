"""deblurfast.cli.convert: the TF1 tensor-bundle reader and the attentive_msnet converter, tested on
bundles this file writes itself with an independent writer of the format (LevelDB table with footer,
magic, prefix-compressed keys and restart arrays, block CRCs; BundleHeaderProto under the empty key;
a BundleEntryProto per variable; the raw data shard)."""

import os
import re
import struct

import numpy as np
import pytest
import torch

from deblurfast.cli import convert
from deblurfast.cli.convert import (
    BundleFormatError,
    ConversionError,
    convert_attentive_msnet,
    crc32c,
    mask_crc,
    read_bundle_index,
    read_tf_bundle,
)
from deblurfast.models import create, load_pretrained

NARROW = dict(widths=(8, 16, 32), reduction=4, num_blocks=1)
MAGIC = 0xDB4775248B80FB57


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ----------------------------------------------------------------------------------------------
# An independent writer of the format
# ----------------------------------------------------------------------------------------------

def naive_crc32c(data: bytes) -> int:
    """Bit-by-bit CRC32C (reflected Castagnoli polynomial), the slowest possible way."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def masked(data) -> int:
    crc = crc32c(data)  # checked against naive_crc32c below
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_varint(field, v):
    return varint(field << 3) + varint(v) if v else b""  # proto3 leaves zeros out


def pb_bytes(field, b):
    return varint(field << 3 | 2) + varint(len(b)) + b


def pb_fixed32(field, v):
    return varint(field << 3 | 5) + struct.pack("<I", v)


class BlockBuilder:
    def __init__(self, restart_interval):
        self.interval, self.buf, self.restarts, self.counter, self.last = restart_interval, bytearray(), [0], 0, b""

    def add(self, key, value):
        if self.counter < self.interval:
            shared = 0
            while shared < min(len(key), len(self.last)) and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.counter, shared = 0, 0
        self.buf += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        self.last, self.counter = key, self.counter + 1

    def empty(self):
        return not self.buf

    def finish(self):
        return bytes(self.buf) + struct.pack(f"<{len(self.restarts)}I", *self.restarts) + struct.pack(
            "<I", len(self.restarts))


def write_table(path, items, block_size=4096, restart_interval=16):
    out = bytearray()

    def put(block):
        contents = block.finish()
        handle = varint(len(out)) + varint(len(contents))
        out.extend(contents + b"\x00" + struct.pack("<I", masked(contents + b"\x00")))
        return handle

    index, data, last = BlockBuilder(1), BlockBuilder(restart_interval), None
    for key, value in items:
        assert last is None or key > last
        data.add(key, value)
        last = key
        if len(data.buf) >= block_size:
            index.add(last, put(data))
            data = BlockBuilder(restart_interval)
    if not data.empty():
        index.add(last, put(data))
    meta_handle = put(BlockBuilder(restart_interval))
    index_handle = put(index)
    footer = meta_handle + index_handle
    out += footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", MAGIC)
    with open(path, "wb") as f:
        f.write(out)


DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.uint8): 4,
               np.dtype(np.int64): 9, np.dtype(np.bool_): 10, np.dtype(np.float16): 19}


def write_bundle(prefix, tensors, block_size=4096, restart_interval=16, gap=0):
    """tensors: {name: array} in the order the data shard holds them; `gap` junk bytes between."""
    data, entries = bytearray(), {}
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(pb_bytes(2, pb_varint(1, d) if d else b"") for d in arr.shape)
        entries[name] = (pb_varint(1, DTYPE_CODES[arr.dtype]) + pb_bytes(2, shape) + pb_varint(4, len(data))
                         + pb_varint(5, len(raw)) + pb_fixed32(6, masked(raw)))
        data += raw + b"\xa5" * gap
    header = pb_varint(1, 1) + pb_bytes(3, pb_varint(1, 1))  # one shard, little endian (0), version 1
    items = [(b"", header)] + sorted((n.encode(), e) for n, e in entries.items())
    write_table(prefix + ".index", items, block_size, restart_interval)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)


def tf_variables(model) -> dict[str, np.ndarray]:
    """The model's weights under the TF names and layouts (spec §4 read backwards)."""
    out = {}
    for key, v in model.state_dict().items():
        *parts, leaf = key.split(".")
        parts = [re.sub(r"^conv(\d)$", r"conv2d-\1", p) for p in parts]
        name = "g_net/" + "/".join(parts) + ("/weights" if leaf == "weight" else "/biases")
        a = v.detach().numpy()
        out[name] = np.ascontiguousarray(a.transpose(2, 3, 1, 0) if a.ndim == 4 else a)
    return out


def random_model(**config):
    m = create("attentive_msnet", **config)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m


def with_optimizer_state(tf_vars, rng, only=None):
    """Adds Adam / Adam_1 slots (for `only` of the names, default all), beta powers and the step."""
    out = {}
    for i, (name, a) in enumerate(tf_vars.items()):
        out[name] = a
        if only is None or i in only:
            out[name + "/Adam"] = rng.standard_normal(a.shape).astype(np.float32)
            out[name + "/Adam_1"] = rng.random(a.shape).astype(np.float32)
    out["beta1_power"] = np.float32(0.9 ** 3)
    out["beta2_power"] = np.float32(0.999 ** 3)
    out["Variable"] = np.int32(675000)
    return out


@pytest.fixture(scope="module")
def paper_bundle(tmp_path_factory):
    """A paper-size bundle: the 228 g_net weights of a random model, Adam slots for a few, beta powers
    and the step; several data blocks, restarts every 5 keys, junk between the tensors."""
    folder = tmp_path_factory.mktemp("rdan")
    model = random_model()
    tf_vars = tf_variables(model)
    rng = np.random.default_rng(0)
    names = list(tf_vars)
    order = {n: tf_vars[n] for n in names[::-1]}  # data shard order differs from the key order
    everything = with_optimizer_state(order, rng, only={0, 5, 100})
    prefix = str(folder / "deblur.model-675000")
    write_bundle(prefix, everything, block_size=1024, restart_interval=5, gap=3)
    return prefix, model, tf_vars, everything


# ----------------------------------------------------------------------------------------------
# CRC32C and the reader
# ----------------------------------------------------------------------------------------------

def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283 == naive_crc32c(b"123456789")
    assert crc32c(bytes(32)) == 0x8A9136AA and crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 4095, 4096, 4097, 20_011):  # the lane-parallel path starts at 4096 bytes
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == naive_crc32c(data), n
    crc = crc32c(b"abc")
    assert mask_crc(crc) == masked(b"abc") and mask_crc(crc) != crc


def test_read_tf_bundle_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "a/weights": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
        "a/biases": rng.standard_normal(4).astype(np.float32),
        "a/weights/Adam": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
        "b/int": rng.integers(-5, 5, (2, 3)).astype(np.int32),
        "b/float64": rng.standard_normal((5,)),
        "b/long": np.array([2 ** 40, -3], dtype=np.int64),
        "c/bytes": rng.integers(0, 256, (7,)).astype(np.uint8),
        "c/flags": np.array([True, False, True]),
        "c/half": rng.standard_normal((2, 2)).astype(np.float16),
        "global_step": np.int32(12),
        "big": rng.standard_normal((40, 50)).astype(np.float32),  # 8000 bytes: the lane-parallel CRC
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    prefix = str(tmp_path / "model.ckpt-12")
    write_bundle(prefix, tensors, block_size=64, restart_interval=3, gap=5)
    header, entries = read_bundle_index(prefix)
    assert header == {"num_shards": 1, "endianness": 0, "version": 1}
    assert list(entries) == sorted(tensors)
    assert entries["a/weights"].shape == (3, 3, 2, 4) and entries["global_step"].shape == ()
    got = read_tf_bundle(prefix)
    assert set(got) == set(tensors)
    for name, value in tensors.items():
        assert got[name].dtype == np.asarray(value).dtype and got[name].shape == np.shape(value), name
        assert np.array_equal(got[name], value), name
    assert set(read_tf_bundle(prefix, names=lambda n: n.startswith("a/"))) == {"a/weights", "a/biases",
                                                                               "a/weights/Adam"}
    assert set(read_tf_bundle(prefix, names=["b/int"])) == {"b/int"}
    with pytest.raises(KeyError, match="no variable"):
        read_tf_bundle(prefix, names=["nope"])


def test_reader_errors(tmp_path):
    tensors = {"w": np.arange(2000, dtype=np.float32), "v": np.ones(3, dtype=np.float32)}
    prefix = str(tmp_path / "x")
    write_bundle(prefix, tensors)
    with pytest.raises(FileNotFoundError, match="checkpoint prefix"):
        read_tf_bundle(str(tmp_path / "y"))
    index = open(prefix + ".index", "rb").read()
    # bad magic
    open(prefix + ".index", "wb").write(index[:-1] + b"\x00")
    with pytest.raises(BundleFormatError, match="table magic"):
        read_tf_bundle(prefix)
    # a flipped byte inside the (only) data block: the block checksum catches it
    bad = bytearray(index)
    bad[index.index(b"w") + 3] ^= 0x40
    open(prefix + ".index", "wb").write(bytes(bad))
    with pytest.raises(BundleFormatError, match="checksum mismatch in the data block"):
        read_tf_bundle(prefix)
    open(prefix + ".index", "wb").write(index)
    # a truncated data shard
    data = open(prefix + ".data-00000-of-00001", "rb").read()
    open(prefix + ".data-00000-of-00001", "wb").write(data[:100])
    with pytest.raises(BundleFormatError, match="truncated"):
        read_tf_bundle(prefix)
    os.remove(prefix + ".data-00000-of-00001")
    with pytest.raises(FileNotFoundError, match="data shard"):
        read_tf_bundle(prefix)


# ----------------------------------------------------------------------------------------------
# attentive_msnet
# ----------------------------------------------------------------------------------------------

def test_tf_layout_of_the_written_bundle_matches_the_spec(paper_bundle):
    """The test's own backwards mapping produces the spec's TF shapes (§4 tables)."""
    prefix, _model, tf_vars, everything = paper_bundle
    assert len(tf_vars) == 228 and sum(a.size for a in tf_vars.values()) == 6_907_057
    assert sum(a.nbytes for a in tf_vars.values()) == 27_628_228
    for name, shape in [("g_net/enc1_1/weights", (5, 5, 6, 32)), ("g_net/dec2_4/weights", (4, 4, 64, 128)),
                        ("g_net/dec1_4/weights", (4, 4, 32, 64)), ("g_net/dec1_0/weights", (5, 5, 32, 3)),
                        ("g_net/enc3_4/blur_attention/conv2d-1/weights", (1, 1, 128, 8)),
                        ("g_net/enc1_2/blur_attention/conv2d-2/weights", (1, 1, 2, 1)),
                        ("g_net/dec1_1/channel_attention/conv2d-2/weights", (1, 1, 2, 32)),
                        ("g_net/dec2_4/biases", (64,))]:
        assert tf_vars[name].shape == shape, name
    _header, entries = read_bundle_index(prefix)
    assert len(entries) == 228 + 6 + 3


def test_convert_paper_size(paper_bundle, tmp_path):
    prefix, model, _tf_vars, _ = paper_bundle
    out = str(tmp_path / "rdan.safetensors")
    info = convert_attentive_msnet(prefix, out)
    assert info == {"keys": 228, "parameters": 6_907_057, "step": "675000", "out": out}
    from safetensors import safe_open

    with safe_open(out, "pt") as f:
        assert f.metadata()["tf_step"] == "675000" and f.metadata()["model"] == "attentive_msnet"
        assert list(f.keys()) == sorted(model.state_dict())
    fresh = load_pretrained(create("attentive_msnet"), out, strict=True)
    for (k, a), (k2, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype == torch.float32 and torch.equal(a, b), k
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(model(x), fresh(x)))
    assert sorted(os.listdir(tmp_path)) == ["rdan.safetensors"]  # no temporary left behind


def test_convert_skips_every_optimizer_slot_and_checks_the_model_config(tmp_path):
    model = random_model(**NARROW)
    tf_vars = tf_variables(model)
    everything = with_optimizer_state(tf_vars, np.random.default_rng(2))
    prefix = str(tmp_path / "deblur.model-105000")
    write_bundle(prefix, everything, block_size=512, restart_interval=4)
    assert len(read_bundle_index(prefix)[1]) == 3 * len(model.state_dict()) + 3  # 687 at paper size
    # an Adam slot whose bytes do not match its checksum: never read, so it does not matter
    _h, entries = read_bundle_index(prefix)
    slot = entries["g_net/enc2_1/weights/Adam"]
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.seek(slot.offset)
        f.write(b"\x00\x01\x02\x03")
    out = str(tmp_path / "narrow.safetensors")
    assert convert_attentive_msnet(prefix, out, **NARROW)["keys"] == len(model.state_dict())
    fresh = load_pretrained(create("attentive_msnet", **NARROW), out, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    with pytest.raises(ConversionError, match=r"shape mismatch \(\d+\): g_net/dec1_0/weights: TF \[5, 5, 8, 3\] "
                                              r"-> \[3, 8, 5, 5\], model \[3, 16, 5, 5\]"):
        convert_attentive_msnet(prefix, str(tmp_path / "paper.safetensors"), widths=(16, 32, 64), reduction=8,
                                num_blocks=1)
    with pytest.raises(ConversionError, match=r"missing \(\d+\): g_net/enc1_3/conv2d-1/weights \(-> enc1_3.conv1"):
        convert_attentive_msnet(prefix, str(tmp_path / "paper.safetensors"))
    assert not os.path.exists(tmp_path / "paper.safetensors")


def test_corrupted_tensor_is_reported(paper_bundle, tmp_path):
    prefix, _model, _tf_vars, everything = paper_bundle
    copy_prefix = str(tmp_path / "deblur.model-675000")
    for suffix in (".index", ".data-00000-of-00001"):
        with open(prefix + suffix, "rb") as src, open(copy_prefix + suffix, "wb") as dst:
            dst.write(src.read())
    e = read_bundle_index(copy_prefix)[1]["g_net/enc2_3/conv2d-2/weights"]
    with open(copy_prefix + ".data-00000-of-00001", "r+b") as f:
        f.seek(e.offset + 1000)
        byte = f.read(1)
        f.seek(e.offset + 1000)
        f.write(bytes([byte[0] ^ 0x10]))
    out = str(tmp_path / "rdan.safetensors")
    with pytest.raises(BundleFormatError, match=r"g_net/enc2_3/conv2d-2/weights: checksum mismatch .*corrupt"):
        convert_attentive_msnet(copy_prefix, out)
    assert not os.path.exists(out)
    convert_attentive_msnet(copy_prefix, out, verify_crc=False)  # the user may insist
    from safetensors.torch import load_file

    got = load_file(out)["enc2_3.conv2.weight"]
    expected = torch.from_numpy(everything["g_net/enc2_3/conv2d-2/weights"].transpose(3, 2, 0, 1).copy())
    assert (got != expected).sum() == 1


def test_missing_and_unexpected_variables(tmp_path):
    model = random_model(**NARROW)
    tf_vars = tf_variables(model)
    del tf_vars["g_net/enc2_2/channel_attention/conv2d-2/biases"]
    tf_vars["g_net/extra/weights"] = np.zeros((1, 1, 2, 2), np.float32)
    prefix = str(tmp_path / "deblur.model-1")
    write_bundle(prefix, tf_vars)
    with pytest.raises(ConversionError) as info:
        convert_attentive_msnet(prefix, str(tmp_path / "o.safetensors"), **NARROW)
    msg = str(info.value)
    assert "missing (1): g_net/enc2_2/channel_attention/conv2d-2/biases (-> enc2_2.channel_attention.conv2.bias)" \
        in msg
    assert "unexpected (1): g_net/extra/weights" in msg


def test_output_rules(paper_bundle, tmp_path, monkeypatch):
    prefix, *_ = paper_bundle
    # the output must be a .safetensors file, and never one of the checkpoint's own files
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        convert_attentive_msnet(prefix, prefix + ".index", overwrite=True)
    link = tmp_path / "link.safetensors"
    link.symlink_to(prefix + ".data-00000-of-00001")
    with pytest.raises(ValueError, match="one of the checkpoint's own files"):
        convert_attentive_msnet(prefix, str(link), overwrite=True)
    link.unlink()
    beside = prefix + ".safetensors"  # the natural name beside the bundle is fine
    convert_attentive_msnet(prefix, beside)
    os.remove(beside)
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--force"):
        convert_attentive_msnet(prefix, str(out))
    assert out.read_bytes() == b"old"

    def failing_save(*args, **kwargs):
        with open(args[1], "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    import safetensors.numpy

    monkeypatch.setattr(safetensors.numpy, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        convert_attentive_msnet(prefix, str(out), overwrite=True)
    assert out.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["w.safetensors"]  # atomic
    monkeypatch.undo()
    convert_attentive_msnet(prefix, str(out), overwrite=True)
    assert len(load_pretrained(create("attentive_msnet"), str(out)).state_dict()) == 228


def test_cli(paper_bundle, tmp_path, capsys):
    prefix, model, *_ = paper_bundle
    with pytest.raises(SystemExit) as info:
        convert.main(["--help"])
    assert info.value.code == 0 and "deblurfast convert" in capsys.readouterr().out
    out = str(tmp_path / "rdan.safetensors")
    assert convert.main(["attentive_msnet", prefix, "-o", out]) == 0
    assert "228 tensors, 6,907,057 parameters (TF step 675000)" in capsys.readouterr().out
    assert torch.equal(load_pretrained(create("attentive_msnet"), out).dec2_4.weight, model.dec2_4.weight)
    assert convert.main(["attentive_msnet", prefix, "-o", out]) == 1
    assert "exists" in capsys.readouterr().err
    assert convert.main(["attentive_msnet", prefix, "-o", out, "--force"]) == 0
    assert convert.main(["attentive_msnet", prefix, "--list"]) == 0
    listing = capsys.readouterr().out
    assert "237 variables" in listing and "g_net/dec2_4/weights  float32[4, 4, 64, 128]" in listing
    assert "Variable  int32[]" in listing
    assert convert.main(["attentive_msnet", str(tmp_path / "none"), "-o", str(tmp_path / "n.safetensors")]) == 1
    with pytest.raises(SystemExit):
        convert.main(["banet", prefix, "-o", out])


def test_cli_hook_as_a_deblurfast_subcommand(paper_bundle, tmp_path):
    """The wiring in deblurfast/cli/__init__.py: a `convert` sub-parser configured by this module."""
    import argparse

    parser = argparse.ArgumentParser(prog="deblurfast")
    sub = parser.add_subparsers(dest="command", required=True)
    convert.configure_parser(sub.add_parser("convert", help="x", description=convert.DESCRIPTION))
    out = str(tmp_path / "w.safetensors")
    args = parser.parse_args(["convert", "attentive_msnet", paper_bundle[0], "-o", out])
    assert args.func(args) == 0 and os.path.isfile(out)
