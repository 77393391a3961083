"""Minimal pure-Python safetensors reader/writer (numpy only), so the fixture scripts run
where the `safetensors` package is absent (Debian's python3-torch here).

Format (model.md "Checkpoint formats"): 8-byte little-endian header length n, n bytes of JSON
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the raw
little-endian data, tensors tiling the data region in header order. The header is padded with
spaces to a multiple of 8 (as the reference implementation does)."""
import json
import struct

import numpy as np

_DT = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
       "F16": np.float16}
_NP2DT = {np.dtype(v).str: k for k, v in _DT.items()}


def _bf16_bits(a):
    """fp32 array -> uint16 bfloat16 bits, round to nearest even (NaN kept quiet)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def save(path, tensors, metadata=None, dtype=None):
    """tensors: dict name -> numpy array (order kept). dtype "BF16"/"F16"/"F32" converts float
    arrays; None keeps each array's own dtype."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, a in tensors.items():
        a = np.asarray(a)
        if dtype == "BF16" and a.dtype.kind == "f":
            raw, dt = _bf16_bits(a.astype(np.float32)).tobytes(), "BF16"
        else:
            if dtype in ("F16", "F32") and a.dtype.kind == "f":
                a = a.astype(_DT[dtype])
            a = np.ascontiguousarray(a)
            dt = _NP2DT[a.dtype.newbyteorder("<").str if a.dtype.byteorder == ">" else a.dtype.str]
            raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    """-> (dict name -> numpy array (BF16 widened to float32), metadata dict)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    data = buf[8 + n:]
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        raw = data[b:end]
        if e["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            a = bits.view(np.float32)
        else:
            a = np.frombuffer(raw, dtype=np.dtype(_DT[e["dtype"]]).newbyteorder("<"))
        out[name] = a.reshape(e["shape"]).copy()
    return out, meta
