"""A TensorFlow ``GraphDef`` (frozen ``.pb``) read from its protobuf wire format in plain Python.

Only what a converter needs: each node's name, op, inputs and attributes, and the arrays of
its ``Const`` nodes. No TensorFlow and no compiled ``.proto`` classes: the few message types
(``GraphDef``, ``NodeDef``, ``AttrValue``, ``TensorProto``) are decoded field by field from
their published field numbers (tensorflow/core/framework/*.proto). Weights are numpy views
on the file's bytes, copied only when a converter takes them.

Example::

    >>> g = read_graph_def(_tiny_graph())
    >>> g["w"].op, g["w"].value().shape, g["conv"].attrs["strides"]
    ('Const', (1, 2), [1, 2, 2, 1])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# tensorflow/core/framework/types.proto: the dtypes a frozen detector's constants use.
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 9: np.int64, 10: np.bool_}


class GraphFormatError(ValueError):
    """The bytes are not a GraphDef this reader understands."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise GraphFormatError("varint longer than 10 bytes")


def _fields(buf: memoryview):
    """``(field number, wire type, value)`` of one message: ints for varints, memoryviews for
    length-delimited fields, raw bytes for fixed 32/64-bit ones."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise GraphFormatError(f"field {num}: length {n} runs past the message")
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        elif wire == 1:
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        else:
            raise GraphFormatError(f"field {num}: unsupported wire type {wire}")
        yield num, wire, value


def _packed_ints(value, wire: int) -> list[int]:
    if wire == 0:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _floats(value, wire: int) -> list[float]:
    raw = bytes(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@dataclass
class Tensor:
    """A ``TensorProto``: dtype number, shape, and either raw content or typed values."""

    dtype: int = 0
    shape: list[int] = field(default_factory=list)
    content: memoryview | None = None
    floats: list[float] = field(default_factory=list)
    ints: list[int] = field(default_factory=list)

    def array(self) -> np.ndarray:
        if self.dtype not in _DTYPES:
            raise GraphFormatError(f"tensor dtype {self.dtype} is not supported")
        dt = _DTYPES[self.dtype]
        n = int(np.prod(self.shape)) if self.shape else 1
        if self.content is not None and len(self.content):
            a = np.frombuffer(self.content, dtype=dt)
        else:
            vals = self.floats if dt in (np.float32, np.float64) else self.ints
            a = np.array(vals, dtype=dt)
            if a.size == 1 and n > 1:  # TF stores a splat as one value
                a = np.full(n, a[0], dtype=dt)
        if a.size != n:
            raise GraphFormatError(f"tensor of shape {self.shape} holds {a.size} values")
        return a.reshape(self.shape)


def _tensor(buf) -> Tensor:
    t = Tensor()
    for num, wire, v in _fields(buf):
        if num == 1:
            t.dtype = v
        elif num == 2:  # TensorShapeProto: repeated Dim (1: size)
            for n2, _, dim in _fields(v):
                if n2 == 2:
                    size = next((d for k, _, d in _fields(dim) if k == 1), 0)
                    t.shape.append(size - (1 << 64) if size >= 1 << 63 else size)
        elif num == 4:
            t.content = v
        elif num == 5:
            t.floats += _floats(v, wire)
        elif num in (7, 10):  # int_val, int64_val
            t.ints += _packed_ints(v, wire)
    return t


def _attr(buf):
    """An ``AttrValue``: string, int, float, bool, dtype, tensor or a list of ints/floats/strings."""
    for num, wire, v in _fields(buf):
        if num == 1:  # ListValue
            items: list = []
            for n2, w2, item in _fields(v):
                if n2 == 2:
                    items.append(bytes(item).decode("utf-8", "replace"))
                elif n2 in (3, 6):
                    items += _packed_ints(item, w2)
                elif n2 == 4:
                    items += _floats(item, w2)
            return items
        if num == 2:
            return bytes(v).decode("utf-8", "replace")
        if num in (3, 6):
            return v
        if num == 4:
            return struct.unpack("<f", v)[0]
        if num == 5:
            return bool(v)
        if num == 8:
            return _tensor(v)
    return None


@dataclass
class Node:
    """One ``NodeDef``."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict

    def value(self) -> np.ndarray:
        """A ``Const`` node's array."""
        t = self.attrs.get("value")
        if self.op != "Const" or not isinstance(t, Tensor):
            raise GraphFormatError(f"node {self.name!r} ({self.op}) is not a constant")
        return t.array()


def _node(buf) -> Node:
    name, op, inputs, attrs = "", "", [], {}
    for num, _, v in _fields(buf):
        if num == 1:
            name = bytes(v).decode()
        elif num == 2:
            op = bytes(v).decode()
        elif num == 3:
            inputs.append(bytes(v).decode())
        elif num == 5:  # map entry: 1 key, 2 AttrValue
            key, value = "", None
            for n2, _, item in _fields(v):
                if n2 == 1:
                    key = bytes(item).decode()
                elif n2 == 2:
                    value = _attr(item)
            attrs[key] = value
    return Node(name, op, inputs, attrs)


def read_graph_def(data: bytes) -> dict[str, Node]:
    """Nodes of a serialised ``GraphDef`` by name, in graph order."""
    buf = memoryview(data)
    nodes: dict[str, Node] = {}
    for num, wire, v in _fields(buf):
        if num == 1 and wire == 2:
            n = _node(v)
            nodes[n.name] = n
    if not nodes:
        raise GraphFormatError("no nodes: not a TensorFlow GraphDef")
    return nodes


def _tiny_graph() -> bytes:
    """A two-node GraphDef written by hand (the doctest's input)."""
    def key(num, wire):
        return bytes([num << 3 | wire])

    def ld(num, payload: bytes) -> bytes:
        return key(num, 2) + bytes([len(payload)]) + payload

    shape = ld(2, ld(2, key(1, 0) + b"\x01") + ld(2, key(1, 0) + b"\x02"))
    tensor = key(1, 0) + b"\x01" + shape + ld(4, struct.pack("<2f", 1.0, 2.0))
    const = ld(1, ld(1, b"w") + ld(2, b"Const") + ld(5, ld(1, b"value") + ld(2, ld(8, tensor))))
    strides = ld(1, ld(3, bytes([1, 2, 2, 1])))
    conv = ld(1, ld(1, b"conv") + ld(2, b"Conv2D") + ld(3, b"w") + ld(5, ld(1, b"strides") + ld(2, strides)))
    return const + conv
