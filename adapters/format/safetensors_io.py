"""Safetensors reading with checks before any tensor is materialised.

The header (8-byte little-endian length + JSON) is parsed by hand first: its size is
capped, every entry's dtype, shape and byte range is checked against the file, and
only then does ``safetensors`` map the data.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file

from adapters.errors import InvalidAdapter

MAX_HEADER_BYTES = 16 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def read_header(path: Path, max_header_bytes: int = MAX_HEADER_BYTES) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Return ``{name: (dtype, shape)}`` from a safetensors file, validated against its size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InvalidAdapter(f"{path.name}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > max_header_bytes or n > size - 8:
            raise InvalidAdapter(f"{path.name}: safetensors header of {n} bytes is over the "
                                 f"{max_header_bytes}-byte cap or past the end of the file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidAdapter(f"{path.name}: safetensors header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise InvalidAdapter(f"{path.name}: safetensors header is not an object")
    data_len = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    problems = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        problems += _check_entry(name, info, data_len)
        if not problems:
            out[name] = (info["dtype"], tuple(info["shape"]))
    InvalidAdapter.collect(problems[:10], path.name)
    return out


def _check_entry(name: str, info, data_len: int) -> list[str]:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        return [f"tensor {name!r} has a malformed header entry"]
    dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _DTYPE_BYTES:
        return [f"tensor {name!r} has unsupported dtype {dtype!r}"]
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        return [f"tensor {name!r} has a bad shape {shape!r}"]
    if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
        return [f"tensor {name!r} has bad data offsets {offs!r}"]
    numel = 1
    for d in shape:
        numel *= d
    begin, end = offs
    if not (0 <= begin <= end <= data_len) or end - begin != numel * _DTYPE_BYTES[dtype]:
        return [f"tensor {name!r}: byte range {offs} does not match shape {shape} {dtype} "
                f"within a {data_len}-byte data section"]
    return []


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Check the header, then load every tensor to CPU float32 (floating tensors only)."""
    header = read_header(path)
    bad = [f"{k} ({d})" for k, (d, _) in header.items() if d not in FLOAT_DTYPES]
    InvalidAdapter.collect([f"tensor {b} is not floating point" for b in bad[:5]], path.name)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # the library's own parse errors: still a bad file, not a crash
        raise InvalidAdapter(f"{path.name}: cannot read safetensors ({exc})") from exc
    out = {k: v.float() for k, v in tensors.items()}
    bad = [k for k, v in out.items() if not bool(torch.isfinite(v).all())]
    InvalidAdapter.collect([f"tensor {k!r} holds NaN or infinite values" for k in sorted(bad)[:5]],
                           path.name)  # they would only ever produce NaN scores
    return out
