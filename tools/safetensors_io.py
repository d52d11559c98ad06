"""Minimal safetensors reader/writer for thawd's tools (float32 tensors, torch or numpy).

Format: 8-byte little-endian header length, a JSON header mapping each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the header)
plus an optional "__metadata__" of string values, then the raw little-endian data.
"""
import json
import struct

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "U8": np.uint8}


def save(path, tensors, metadata=None):
    """Write name -> array-like (torch tensors are converted) as F32/I64 safetensors."""
    header, blobs, offset = {}, [], 0
    for name in tensors:
        a = tensors[name]
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        # np.ascontiguousarray would turn a 0-d tensor (num_batches_tracked) into shape [1]
        a = np.asarray(a, order="C")
        if a.dtype == np.float32:
            dtype = "F32"
        elif a.dtype == np.int64:
            dtype = "I64"
        else:
            a, dtype = a.astype(np.float32), "F32"
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def load(path):
    """Return (dict name -> numpy array, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base, out = 8 + n, {}
    for name, info in header.items():
        dt = _DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        b, e = info["data_offsets"]
        if not (0 <= b <= e <= len(data) - base):
            raise ValueError(f"{path}: {name}: offsets out of range")
        out[name] = np.frombuffer(data[base + b:base + e], dtype=np.dtype(dt).newbyteorder("<"))
        out[name] = out[name].reshape(info["shape"]).astype(dt)
    return out, meta
