"""Read what an ONNX file declares (inputs, outputs, metadata, opsets) without its weights.

The DVLT graphs hold their weights inline (hundreds of MB for the released model), so
``onnx.load`` would copy all of them to check a few names and shapes. :func:`read_signature`
walks the protobuf wire format of the file instead and skips every field it does not need
(nodes and initializers) by its length; a truncated file or one that is not an ONNX model
raises ``ValueError``. Field numbers are those of ``onnx.proto`` (ModelProto, GraphProto,
ValueInfoProto, TypeProto, TensorShapeProto, StringStringEntryProto, OperatorSetIdProto).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``TensorProto.DataType`` names of the element types a signature may show.
ELEMENT_TYPES = {0: "undefined", 1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64",
                 9: "bool", 10: "float16", 11: "float64", 16: "bfloat16"}
FLOAT32 = 1

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_Span = tuple[int, int]  # (start, end) offsets of a length-delimited field


@dataclass(frozen=True)
class TensorSignature:
    """One graph input or output: ``shape`` holds ints (static) and strings (symbolic, "" when
    unnamed), or is None when the file gives no shape; ``elem_type`` is 0 for non-tensors."""

    name: str
    elem_type: int
    shape: tuple[int | str, ...] | None

    def describe(self) -> str:
        kind = ELEMENT_TYPES.get(self.elem_type, f"type {self.elem_type}")
        shape = "unknown shape" if self.shape is None else shape_text(self.shape)
        return f"{kind} {shape}"


@dataclass(frozen=True)
class GraphSignature:
    """What an ONNX file declares: its inputs and outputs in order, ``metadata_props`` and the
    opset version per operator domain ("" is the default domain)."""

    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]
    metadata: dict[str, str]
    opsets: dict[str, int]


def shape_text(shape: tuple[int | str, ...]) -> str:
    """``1xSx3x56x70``; ``()`` for a scalar, ``?`` for an unnamed dimension."""
    return "x".join(str(d) if d != "" else "?" for d in shape) if shape else "()"


def read_signature(path: str | Path) -> GraphSignature:
    """The signature of the ONNX model in ``path``; ``ValueError`` if it is not a complete one."""
    with open(path, "rb") as handle:
        if handle.seek(0, 2) == 0:
            raise ValueError("the file is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _model(buf, (0, len(buf)))


def _model(buf: Any, span: _Span) -> GraphSignature:
    inputs: list[TensorSignature] = []
    outputs: list[TensorSignature] = []
    metadata: dict[str, str] = {}
    opsets: dict[str, int] = {}
    has_graph = False
    for field, value in _fields(buf, span, {7: _LENGTH, 8: _LENGTH, 14: _LENGTH}):
        if field == 7:
            has_graph = True
            for graph_field, io in _fields(buf, value, {11: _LENGTH, 12: _LENGTH}):
                if graph_field in (11, 12):
                    (inputs if graph_field == 11 else outputs).append(_value_info(buf, io))
        elif field == 8:
            entry = _message(buf, value, {1: _LENGTH, 2: _VARINT})
            opsets[_text(buf, entry.get(1))] = _int64(entry.get(2, 0))
        elif field == 14:
            entry = _message(buf, value, {1: _LENGTH, 2: _LENGTH})
            metadata[_text(buf, entry.get(1))] = _text(buf, entry.get(2))
    if not has_graph:
        raise ValueError("the file holds no ONNX graph")
    return GraphSignature(tuple(inputs), tuple(outputs), metadata, opsets)


def _value_info(buf: Any, span: _Span) -> TensorSignature:
    info = _message(buf, span, {1: _LENGTH, 2: _LENGTH})
    name = _text(buf, info.get(1))
    tensor = _message(buf, info[2], {1: _LENGTH}).get(1) if 2 in info else None
    if tensor is None:  # a sequence, map or optional value, or no type at all
        return TensorSignature(name, 0, None)
    fields = _message(buf, tensor, {1: _VARINT, 2: _LENGTH})
    if 2 not in fields:
        return TensorSignature(name, fields.get(1, 0), None)
    dims: list[int | str] = []
    for _, dim_span in _fields(buf, fields[2], {1: _LENGTH}):
        dim = _message(buf, dim_span, {1: _VARINT, 2: _LENGTH})
        dims.append(_int64(dim[1]) if 1 in dim else _text(buf, dim.get(2)))
    return TensorSignature(name, fields.get(1, 0), tuple(dims))


def _message(buf: Any, span: _Span, wanted: dict[int, int]) -> dict[int, Any]:
    """The last value of each ``wanted`` field of a small message (protobuf: last one wins)."""
    return dict(_fields(buf, span, wanted))


def _fields(buf: Any, span: _Span, wanted: dict[int, int]) -> Iterator[tuple[int, Any]]:
    """(field number, value) of each ``wanted`` field in ``span``: an int for varints, the
    span of a length-delimited field. Other fields are skipped; every length is checked."""
    pos, end = span
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        field, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == _LENGTH:
            length, pos = _varint(buf, pos, end)
            value = (pos, pos + length)
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            value, pos = None, pos + (8 if wire == _FIXED64 else 4)
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}: not an ONNX model")
        if field == 0 or pos > end:
            raise ValueError("the file ends inside a field (truncated?)")
        if field in wanted:
            if wanted[field] != wire:
                raise ValueError(f"field {field} has wire type {wire}: not an ONNX model")
            yield field, value


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise ValueError("the file ends inside a number (truncated?)")


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(buf: Any, span: _Span | None) -> str:
    if span is None:
        return ""
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a name is not UTF-8: not an ONNX model") from None
