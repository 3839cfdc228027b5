"""`deblurfast convert`: the authors' TensorFlow 1 checkpoint -> a safetensors state_dict, without
TensorFlow.

A TF1 checkpoint ("tensor bundle", V2) is `PREFIX.index` + `PREFIX.data-00000-of-00001` (+ a `.meta`
graph, not needed). The index is a LevelDB-format table: blocks of prefix-compressed key/value entries
with restart arrays, each block followed by a type byte and a masked CRC32C, an index block pointing at
the data blocks, and a 48-byte footer (metaindex and index block handles, magic 0xdb4775248b80fb57).
Its keys are the variable names in sorted order; the empty key holds a BundleHeaderProto (number of
shards, endianness, version), every other value a BundleEntryProto (dtype, shape, shard, offset, size,
masked CRC32C of the tensor bytes). The data shards hold the raw little-endian row-major tensors.
Both protobufs are decoded here by hand from the wire format.

    tensors = read_tf_bundle("checkpoints/RDAN/checkpoints/deblur.model-675000")
    convert_attentive_msnet("…/deblur.model-675000", "rdan_gopro.safetensors")

or on the command line: `deblurfast convert attentive_msnet PREFIX -o OUT.safetensors`.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import sys
from dataclasses import dataclass

import numpy as np

from .._files import atomic_path

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c

# tensorflow/core/framework/types.proto
TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
             10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}
TF_DTYPE_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource", 21: "variant"}


class BundleFormatError(ValueError):
    """A tensor bundle that cannot be read (bad magic, truncated file, checksum mismatch, ...)."""


class ConversionError(ValueError):
    """A bundle whose variables do not fit the model (the message names what is missing/extra)."""


# ----------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), the checksum of LevelDB tables and tensor bundles
# ----------------------------------------------------------------------------------------------

def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc_table()
_CRC_LIST = _CRC_TABLE.tolist()
_MASK_DELTA = 0xA282EAD8


def _crc_register(data, reg: int) -> int:
    """The raw CRC register after feeding `data` (bytes-like), byte by byte."""
    table = _CRC_LIST
    for b in bytes(data):
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def crc32c(data) -> int:
    """CRC32C of a bytes-like object (crc32c(b"123456789") == 0xE3069283).

    Large buffers are split into many equal lanes processed together with numpy (the CRC register is
    linear over GF(2)), then combined with the operator that appends L zero bytes, obtained by running
    32 basis registers through the same loop."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    if n < 4096:
        return _crc_register(buf.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    lanes = int(min(8192, max(64, np.sqrt(n) * 4)))
    length = n // lanes
    head = n - lanes * length
    reg = _crc_register(buf[:head].tobytes(), 0xFFFFFFFF)
    cols = np.zeros((length, lanes + 32), dtype=np.uint8)  # [L, lanes + 32]: data lanes, then zero bytes
    cols[:, :lanes] = buf[head:].reshape(lanes, length).T
    regs = np.zeros(lanes + 32, dtype=np.uint32)
    regs[lanes:] = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    table = _CRC_TABLE
    for j in range(length):
        regs = table[(regs ^ cols[j]) & 0xFF] ^ (regs >> 8)
    basis = regs[lanes:]  # basis[k] = register 1<<k after L zero bytes
    bits = (np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1  # [256, 8]
    shift = []  # shift[m][b]: contribution of byte m of the register holding b
    for m in range(4):
        t = np.zeros(256, dtype=np.uint32)
        for i in range(8):
            t ^= np.where(bits[:, i] == 1, basis[8 * m + i], np.uint32(0)).astype(np.uint32)
        shift.append(t.tolist())
    s0, s1, s2, s3 = shift
    for lane in regs[:lanes].tolist():
        reg = s0[reg & 0xFF] ^ s1[(reg >> 8) & 0xFF] ^ s2[(reg >> 16) & 0xFF] ^ s3[reg >> 24] ^ lane
    return reg ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TF masking of a stored CRC: rotate right by 15, add a constant."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data) -> int:
    return mask_crc(crc32c(data))


# ----------------------------------------------------------------------------------------------
# Protobuf wire format
# ----------------------------------------------------------------------------------------------

def _varint(buf: bytes, pos: int, what: str = "varint") -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleFormatError(f"truncated {what}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise BundleFormatError(f"malformed {what} (more than 10 bytes)")


def _proto_fields(buf: bytes, what: str):
    """Yields (field number, wire type, value) of a serialized message: ints for varint/fixed
    fields, bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, what)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, what)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise BundleFormatError(f"truncated fixed64 in {what}")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos, what)
            if pos + size > len(buf):
                raise BundleFormatError(f"truncated field {field} in {what}")
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire == 5:
            if pos + 4 > len(buf):
                raise BundleFormatError(f"truncated fixed32 in {what}")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise BundleFormatError(f"unsupported protobuf wire type {wire} (field {field}) in {what}")
        yield field, wire, value


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# ----------------------------------------------------------------------------------------------
# LevelDB table
# ----------------------------------------------------------------------------------------------

def _block_handle(buf: bytes, pos: int, what: str) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos, what)
    size, pos = _varint(buf, pos, what)
    return (offset, size), pos


def _read_block(data: bytes, handle: tuple[int, int], path: str, what: str, verify: bool) -> bytes:
    offset, size = handle
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise BundleFormatError(f"{path}: the {what} block [{offset}, {end}) runs past the end of the file "
                                f"({len(data)} bytes); the index file is truncated")
    block = data[offset:offset + size]
    kind = data[offset + size]
    if verify:
        stored = struct.unpack_from("<I", data, offset + size + 1)[0]
        actual = masked_crc32c(data[offset:offset + size + 1])
        if stored != actual:
            raise BundleFormatError(f"{path}: checksum mismatch in the {what} block at byte {offset} (stored masked "
                                    f"crc32c {stored:#010x}, computed {actual:#010x}); the index file is corrupt")
    if kind != 0:
        raise BundleFormatError(f"{path}: the {what} block is compressed (type {kind}); only uncompressed tables "
                                "(what TensorFlow's checkpoint writer produces) are supported")
    return block


def _block_entries(block: bytes, path: str, what: str):
    """Yields (key, value) of one block, undoing the prefix compression."""
    if len(block) < 4:
        raise BundleFormatError(f"{path}: {what} block too short ({len(block)} bytes)")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise BundleFormatError(f"{path}: {what} block declares {num_restarts} restarts but holds {len(block)} bytes")
    restarts = set(struct.unpack_from(f"<{num_restarts}I", block, limit))
    pos, key = 0, b""
    while pos < limit:
        start = pos
        shared, pos = _varint(block, pos, f"{what} entry")
        non_shared, pos = _varint(block, pos, f"{what} entry")
        value_len, pos = _varint(block, pos, f"{what} entry")
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise BundleFormatError(f"{path}: corrupt entry at byte {start} of a {what} block")
        if start in restarts and shared:
            raise BundleFormatError(f"{path}: restart point at byte {start} of a {what} block shares a prefix")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_len]
        pos += value_len


def read_table(path: str, verify: bool = True) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an uncompressed LevelDB-format table, in file order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < FOOTER_SIZE:
        raise BundleFormatError(f"{path}: {len(data)} bytes, too short for a table footer ({FOOTER_SIZE})")
    footer = data[-FOOTER_SIZE:]
    magic = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0]
    if magic != TABLE_MAGIC:
        raise BundleFormatError(f"{path}: not a TensorFlow checkpoint index (table magic {magic:#018x}, expected "
                                f"{TABLE_MAGIC:#018x})")
    _metaindex, pos = _block_handle(footer, 0, "footer")
    index_handle, _ = _block_handle(footer, pos, "footer")
    index = _read_block(data, index_handle, path, "index", verify)
    entries = []
    previous = None
    for _separator, handle_bytes in _block_entries(index, path, "index"):
        handle, _ = _block_handle(handle_bytes, 0, "block handle")
        for key, value in _block_entries(_read_block(data, handle, path, "data", verify), path, "data"):
            if previous is not None and key <= previous:
                raise BundleFormatError(f"{path}: keys out of order ({previous!r} then {key!r})")
            entries.append((key, value))
            previous = key
    return entries


# ----------------------------------------------------------------------------------------------
# Tensor bundle
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BundleEntry:
    """One variable of a bundle (a decoded BundleEntryProto)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int | None = None  # masked, as stored
    sliced: bool = False

    @property
    def numpy_dtype(self):
        return TF_DTYPES.get(self.dtype)

    @property
    def dtype_name(self) -> str:
        dt = self.numpy_dtype
        return np.dtype(dt).name if dt is not None else TF_DTYPE_NAMES.get(self.dtype, f"dtype {self.dtype}")


def _parse_shape(buf: bytes, name: str) -> tuple[int, ...]:
    dims = []
    for field, _wire, value in _proto_fields(buf, f"the shape of {name}"):
        if field == 2:
            size = 0
            for f2, _w2, v2 in _proto_fields(value, f"a dimension of {name}"):
                if f2 == 1:
                    size = _signed64(v2)
            dims.append(size)
        elif field == 3 and value:
            raise BundleFormatError(f"{name}: unknown rank")
    if any(d < 0 for d in dims):
        raise BundleFormatError(f"{name}: unknown dimension in shape {dims}")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> BundleEntry:
    fields = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "sliced": False}
    for field, _wire, value in _proto_fields(buf, f"the entry of {name}"):
        if field == 1:
            fields["dtype"] = value
        elif field == 2:
            fields["shape"] = _parse_shape(value, name)
        elif field == 3:
            fields["shard_id"] = value
        elif field == 4:
            fields["offset"] = _signed64(value)
        elif field == 5:
            fields["size"] = _signed64(value)
        elif field == 6:
            fields["crc32c"] = value
        elif field == 7:
            fields["sliced"] = True
    return BundleEntry(name, **fields)


def read_bundle_index(prefix: str, verify_crc: bool = True) -> tuple[dict, dict[str, BundleEntry]]:
    """The header ({"num_shards", "endianness", "version"}) and every entry of PREFIX.index."""
    path = prefix + ".index"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (give the checkpoint prefix, e.g. "
                                "checkpoints/RDAN/checkpoints/deblur.model-675000)")
    header = None
    entries: dict[str, BundleEntry] = {}
    for key, value in read_table(path, verify=verify_crc):
        if key == b"":
            header = {"num_shards": 0, "endianness": 0, "version": 0}
            for field, _wire, v in _proto_fields(value, "the bundle header"):
                if field == 1:
                    header["num_shards"] = v
                elif field == 2:
                    header["endianness"] = v
                elif field == 3:
                    for f2, _w2, v2 in _proto_fields(v, "the bundle version"):
                        if f2 == 1:
                            header["version"] = v2
            continue
        name = key.decode("utf-8")
        entries[name] = _parse_entry(name, value)
    if header is None:
        raise BundleFormatError(f"{path}: no bundle header (the empty key); not a TF checkpoint V2 index")
    if header["endianness"] != 0:
        raise BundleFormatError(f"{path}: big-endian bundles are not supported")
    return header, entries


def _shard_path(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def read_tf_bundle(prefix: str, names=None, verify_crc: bool = True) -> dict[str, np.ndarray]:
    """Reads a TF1 checkpoint (PREFIX.index + PREFIX.data-*) without TensorFlow.

    names: the variables to read (default: all), or a predicate on the name. Returns
    {name: np.ndarray} in the TF layout and dtype. verify_crc checks every block of the index and
    every tensor read against its stored masked CRC32C."""
    header, entries = read_bundle_index(prefix, verify_crc)
    if names is None:
        wanted = list(entries)
    elif callable(names):
        wanted = [n for n in entries if names(n)]
    else:
        wanted = list(names)
        absent = [n for n in wanted if n not in entries]
        if absent:
            raise KeyError(f"{prefix}.index has no variable(s): {', '.join(absent)}")
    num_shards = header["num_shards"]
    files: dict[int, object] = {}
    out: dict[str, np.ndarray] = {}
    try:
        for name in wanted:
            e = entries[name]
            if e.sliced:
                raise BundleFormatError(f"{name}: partitioned (sliced) variables are not supported")
            dtype = e.numpy_dtype
            if dtype is None:
                raise BundleFormatError(f"{name}: unsupported dtype {e.dtype_name}")
            count = int(np.prod(e.shape, dtype=np.int64))
            expected = count * np.dtype(dtype).itemsize
            if e.size != expected:
                raise BundleFormatError(f"{name}: entry says {e.size} bytes, but {e.dtype_name}{list(e.shape)} "
                                        f"needs {expected}")
            if not 0 <= e.shard_id < num_shards:
                raise BundleFormatError(f"{name}: shard {e.shard_id} of a {num_shards}-shard bundle")
            if e.shard_id not in files:
                path = _shard_path(prefix, e.shard_id, num_shards)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"{path} does not exist (the data shard beside {prefix}.index)")
                files[e.shard_id] = open(path, "rb")
            f = files[e.shard_id]
            f.seek(e.offset)
            raw = f.read(e.size)
            if len(raw) != e.size:
                raise BundleFormatError(f"{name}: the data shard ends at byte {e.offset + len(raw)}, before the "
                                        f"tensor's end {e.offset + e.size}; the .data file is truncated")
            if verify_crc and e.crc32c is not None:
                actual = masked_crc32c(raw)
                if actual != e.crc32c:
                    raise BundleFormatError(f"{name}: checksum mismatch (stored masked crc32c {e.crc32c:#010x}, "
                                            f"computed {actual:#010x}); the .data file is corrupt")
            out[name] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(e.shape)
    finally:
        for f in files.values():
            f.close()
    return out


# ----------------------------------------------------------------------------------------------
# attentive_msnet (Xu et al.): TF variable names and layouts -> PyTorch
# ----------------------------------------------------------------------------------------------

_OPTIMIZER_SLOTS = ("Adam", "Adam_1")


def is_optimizer_state(tf_name: str) -> bool:
    """Adam slots, beta powers and the global step: not model weights."""
    return tf_name.split("/")[-1] in _OPTIMIZER_SLOTS or not tf_name.startswith("g_net/")


def attentive_tf_name_to_torch(tf_name: str) -> str:
    """g_net/enc1_2/blur_attention/conv2d-1/weights -> enc1_2.blur_attention.conv1.weight."""
    if not tf_name.startswith("g_net/"):
        raise ConversionError(f"{tf_name}: not a g_net variable")
    parts = tf_name[len("g_net/"):].split("/")
    leaf = {"weights": "weight", "biases": "bias"}.get(parts[-1])
    if leaf is None:
        raise ConversionError(f"{tf_name}: expected .../weights or .../biases")
    parts = [re.sub(r"^conv2d-(\d+)$", r"conv\1", p) for p in parts[:-1]]
    return ".".join(parts + [leaf])


def attentive_torch_name_to_tf(key: str) -> str:
    """enc1_2.blur_attention.conv1.weight -> g_net/enc1_2/blur_attention/conv2d-1/weights."""
    *parts, leaf = key.split(".")
    parts = [re.sub(r"^conv(\d+)$", r"conv2d-\1", p) for p in parts]
    return "/".join(["g_net", *parts, {"weight": "weights", "bias": "biases"}[leaf]])


def attentive_tf_to_torch(tf_vars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Applies the name rule and the layout rule (every 4-D weight permuted (3, 2, 0, 1): conv HWIO ->
    OIHW, transposed conv [kh, kw, out, in] -> [in, out, kh, kw]; no flips) to the g_net weights;
    optimizer state is skipped. Values become float32."""
    out = {}
    for name, value in tf_vars.items():
        if is_optimizer_state(name):
            continue
        value = np.asarray(value)
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim != 1:
            raise ConversionError(f"{name}: unexpected rank {value.ndim} (shape {list(value.shape)})")
        out[attentive_tf_name_to_torch(name)] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def _expected_state(model_config: dict) -> dict[str, tuple[int, ...]]:
    import torch

    from ..models.attentive_msnet import AttentiveMSNet

    with torch.device("meta"):
        model = AttentiveMSNet(**model_config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _step_of(prefix: str) -> str | None:
    m = re.search(r"-(\d+)$", os.path.basename(prefix))
    return m.group(1) if m else None


def _bundle_files(prefix: str) -> list[str]:
    """Real paths of the checkpoint's own files (.index, .meta, .data-NNNNN-of-NNNNN)."""
    folder = os.path.dirname(os.path.abspath(prefix))
    base = re.escape(os.path.basename(prefix))
    own = re.compile(base + r"\.(index|meta|data-\d{5}-of-\d{5})$")
    return [os.path.realpath(os.path.join(folder, f)) for f in os.listdir(folder) if own.match(f)]


def convert_attentive_msnet(prefix: str, out_path: str, *, verify_crc: bool = True, overwrite: bool = False,
                            **model_config) -> dict:
    """Converts Xu et al.'s TF checkpoint PREFIX (.index + .data-*) to a safetensors state_dict that
    `load_pretrained(create("attentive_msnet", **model_config), out_path)` loads strictly.

    Only `g_net/*` weights are read (Adam slots, beta powers and the step are skipped); the produced
    keys and shapes must equal the model's. The file is written to a temporary name beside out_path
    and renamed; the input files are never overwritten, nor an existing out_path unless overwrite.
    Returns {"keys", "parameters", "step", "out"}."""
    from safetensors.numpy import save_file

    if not out_path.endswith(".safetensors"):
        raise ValueError(f"{out_path}: the output must end in .safetensors (load_pretrained recognises it by that)")
    if os.path.isfile(prefix + ".index") and os.path.realpath(out_path) in _bundle_files(prefix):
        raise ValueError(f"{out_path} is one of the checkpoint's own files; choose another output")
    if os.path.exists(out_path) and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True (--force) to replace it")
    expected = _expected_state(model_config)
    _header, entries = read_bundle_index(prefix, verify_crc)
    weights = {n for n in entries if not is_optimizer_state(n)}
    to_torch = {n: attentive_tf_name_to_torch(n) for n in weights}
    by_torch = {v: k for k, v in to_torch.items()}

    def torch_shape(tf_shape):
        return tuple(tf_shape[i] for i in (3, 2, 0, 1)) if len(tf_shape) == 4 else tuple(tf_shape)

    missing = [f"{attentive_torch_name_to_tf(k)} (-> {k})" for k in expected if k not in by_torch]
    unexpected = sorted(n for n, k in to_torch.items() if k not in expected)
    mismatched = [f"{n}: TF {list(entries[n].shape)} -> {list(torch_shape(entries[n].shape))}, "
                  f"model {list(expected[k])}" for n, k in sorted(to_torch.items())
                  if k in expected and torch_shape(entries[n].shape) != expected[k]]
    if missing or unexpected or mismatched:
        def show(title, items):
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else "")

        raise ConversionError(f"{prefix} does not fit attentive_msnet{model_config or ''}:"
                              + (show("missing", missing) if missing else "")
                              + (show("unexpected", unexpected) if unexpected else "")
                              + (show("shape mismatch", mismatched) if mismatched else ""))
    state = attentive_tf_to_torch(read_tf_bundle(prefix, sorted(weights), verify_crc=verify_crc))
    state = {k: state[k] for k in expected}  # the model's order
    metadata = {"model": "attentive_msnet", "source": os.path.basename(prefix), "format": "pt",
                "converted_by": "deblurfast.convert"}
    step = _step_of(prefix)
    if step is not None:
        metadata["tf_step"] = step
    with atomic_path(out_path) as tmp:
        save_file(state, tmp, metadata=metadata)
    return {"keys": len(state), "parameters": int(sum(v.size for v in state.values())), "step": step,
            "out": out_path}


CONVERTERS = {"attentive_msnet": convert_attentive_msnet}


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def _run(args) -> int:
    if args.list:
        header, entries = read_bundle_index(args.prefix, verify_crc=not args.no_verify)
        print(f"{args.prefix}: {len(entries)} variables, {header['num_shards']} shard(s)")
        for name, e in entries.items():
            print(f"  {name}  {e.dtype_name}{list(e.shape)}")
        return 0
    if not args.output:
        print("deblurfast convert: -o/--output is required (unless --list)", file=sys.stderr)
        return 2
    try:
        info = CONVERTERS[args.model](args.prefix, args.output, verify_crc=not args.no_verify, overwrite=args.force)
    except (BundleFormatError, ConversionError, FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        print(f"deblurfast convert: {e}", file=sys.stderr)
        return 1
    step = f" (TF step {info['step']})" if info["step"] else ""
    print(f"wrote {info['out']}: {info['keys']} tensors, {info['parameters']:,} parameters{step}")
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the `convert` arguments to `parser` (a sub-command parser of `deblurfast`, or its own)."""
    parser.add_argument("model", choices=sorted(CONVERTERS), help="the deblurfast model the weights are for")
    parser.add_argument("prefix", help="TF checkpoint prefix: PREFIX.index and PREFIX.data-00000-of-00001 "
                                       "(e.g. checkpoints/RDAN/checkpoints/deblur.model-675000)")
    parser.add_argument("-o", "--output", help="the safetensors file to write (must end in .safetensors)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--no-verify", action="store_true", help="skip the CRC32C checks of the index and tensors")
    parser.add_argument("--list", action="store_true", help="list the checkpoint's variables and exit")
    parser.set_defaults(func=_run)
    return parser


DESCRIPTION = ("Convert the authors' TensorFlow 1 checkpoint (PREFIX.index + PREFIX.data-*) to a safetensors "
               "state_dict for a deblurfast model, without TensorFlow: names and weight layouts per "
               "shared/specs/models/<model>.md, keys and shapes checked against the model.")


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="deblurfast convert", description=DESCRIPTION))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
