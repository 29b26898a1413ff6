"""A minimal protobuf wire codec for the Web PubSub schema, written for the checker.

The checker must not share the server's codec (a shared codec cannot find its own bugs), so
this is a second, deliberately plain implementation: a schema-driven encoder and a strict
decoder over the field table ``specs.webpubsub_protobuf.MESSAGES``, which the project's tests
compare with the published schema (Azure/azure-webpubsub
``protocols/protobuf.webpubsub.azure.v1/webpubsub.v1.proto``).

Rules this module keeps:
- Values are plain Python: a message is a ``dict`` of field name -> value, a ``map<string,
  string>`` a ``dict``, a repeated field a ``list``, ``string`` a ``str``, ``bytes`` ``bytes``,
  integers ``int``, ``bool`` ``bool``. ``google.protobuf.Any`` fields decode to their raw
  serialized bytes in ``RAW_BYTES_FIELDS`` (the checker compares payloads byte for byte).
- Encoding writes fields in field-number order. A key present in the dict is written (so an
  explicit default can be sent on purpose); ``encode(..., canonical=True)`` drops
  implicit-presence scalars that hold their default, as proto3 serializers do.
- Decoding is strict about what breaks Microsoft's protobuf clients: truncation, varints over
  10 bytes, field number 0, groups (wire types 3/4), wire types 6/7, invalid UTF-8 in a
  string, a known field with the wrong wire type: ``ProtoError``. Unknown fields are skipped
  and listed under the key ``"_unknown"`` (number, wire type) for the caller to judge.
- Bounded: nesting depth at most ``MAX_DEPTH``; every loop is bounded by the input length.
"""

from __future__ import annotations

from collections.abc import Mapping

from specs.webpubsub_protobuf import (
    MAP_STRING_STRING, MESSAGES, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN,
    WIRE_VARINT, ProtoField,
)

MAX_DEPTH = 16
UINT64_MASK = (1 << 64) - 1

#: Message-typed fields decoded to their raw bytes instead of a dict.
RAW_BYTES_FIELDS = frozenset({("MessageData", "protobuf_data")})


class ProtoError(ValueError):
    """A frame that is not valid protobuf for the schema (one line, for a report)."""


# --------------------------------------------------------------------------- primitives


def varint(value: int) -> bytes:
    """Encode a non-negative int (or a negative int64 as two's complement) as a varint."""
    if value < 0:
        value &= UINT64_MASK
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return key(number, WIRE_LEN) + varint(len(payload)) + payload


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position). Raises ProtoError on truncation or more than 10 bytes."""
    result = 0
    shift = 0
    for i in range(10):
        if pos + i >= len(data):
            raise ProtoError("truncated varint")
        b = data[pos + i]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & UINT64_MASK, pos + i + 1
        shift += 7
    raise ProtoError("varint longer than 10 bytes")


def iter_fields(data: bytes):
    """Yield (number, wire_type, value) with value an int (varint/fixed) or bytes (len)."""
    pos = 0
    end = len(data)
    while pos < end:
        tag, pos = read_varint(data, pos)
        if tag > 0xFFFFFFFF:
            raise ProtoError("tag wider than 32 bits")
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire_type == WIRE_VARINT:
            value, pos = read_varint(data, pos)
            yield number, wire_type, value
        elif wire_type == WIRE_FIXED64:
            if pos + 8 > end:
                raise ProtoError("truncated fixed64")
            yield number, wire_type, int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire_type == WIRE_LEN:
            n, pos = read_varint(data, pos)
            if pos + n > end:
                raise ProtoError(f"field {number}: length {n} runs past the end")
            yield number, wire_type, data[pos:pos + n]
            pos += n
        elif wire_type == WIRE_FIXED32:
            if pos + 4 > end:
                raise ProtoError("truncated fixed32")
            yield number, wire_type, int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        else:
            raise ProtoError(f"field {number}: wire type {wire_type} is not allowed in proto3")


# --------------------------------------------------------------------------- encode


def _is_default(value: object) -> bool:
    return value in (0, "", b"", False) and not isinstance(value, dict)


def _encode_scalar(f: ProtoField, value: object) -> bytes:
    if f.type == "string":
        if not isinstance(value, str):
            raise TypeError(f"{f.name}: expected str")
        return length_delimited(f.number, value.encode("utf-8"))
    if f.type == "bytes":
        return length_delimited(f.number, bytes(value))  # type: ignore[arg-type]
    if f.type == "bool":
        return key(f.number, WIRE_VARINT) + varint(1 if value else 0)
    if f.type in ("uint32", "uint64", "int64"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{f.name}: expected int")
        return key(f.number, WIRE_VARINT) + varint(value)
    raise TypeError(f"{f.name}: unknown scalar type {f.type}")


def encode(message: str, value: Mapping[str, object], *, canonical: bool = False) -> bytes:
    """Serialize ``value`` as ``message`` (a key of ``MESSAGES``)."""
    spec = MESSAGES[message]
    out = bytearray()
    known = {f.name for f in spec.fields}
    unknown = set(value) - known
    if unknown:
        raise KeyError(f"{message} has no field(s) {sorted(unknown)}")
    for f in spec.fields:
        if f.name not in value:
            continue
        v = value[f.name]
        if v is None:
            continue
        if f.type == MAP_STRING_STRING:
            for k, item in v.items():  # type: ignore[union-attr]
                entry = length_delimited(1, k.encode("utf-8")) + length_delimited(2, item.encode("utf-8"))
                out += length_delimited(f.number, entry)
        elif f.is_message:
            items = v if f.label == "repeated" else [v]
            for item in items:  # type: ignore[union-attr]
                if isinstance(item, (bytes, bytearray)):
                    out += length_delimited(f.number, bytes(item))  # pre-serialized (Any)
                else:
                    out += length_delimited(f.number, encode(f.type, item, canonical=canonical))
        else:
            if canonical and f.label == "" and f.oneof is None and _is_default(v):
                continue
            out += _encode_scalar(f, v)
    return bytes(out)


# --------------------------------------------------------------------------- decode


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"{where}: string is not valid UTF-8") from None


def decode(message: str, data: bytes, *, _depth: int = 0) -> dict[str, object]:
    """Parse ``data`` as ``message``; strict (see the module rules)."""
    if _depth > MAX_DEPTH:
        raise ProtoError("nesting deeper than the checker's limit")
    spec = MESSAGES[message]
    by_number = {f.number: f for f in spec.fields}
    out: dict[str, object] = {}
    unknown: list[tuple[int, int]] = []
    for number, wire_type, raw in iter_fields(data):
        f = by_number.get(number)
        if f is None:
            unknown.append((number, wire_type))
            continue
        where = f"{message}.{f.name}"
        if wire_type != f.wire_type:
            raise ProtoError(f"{where}: wire type {wire_type}, the schema says {f.wire_type}")
        if f.oneof is not None:
            for other in spec.fields:
                if other.oneof == f.oneof and other.name != f.name:
                    out.pop(other.name, None)
        if f.type == MAP_STRING_STRING:
            k, v = "", ""
            for n2, w2, r2 in iter_fields(raw):  # type: ignore[arg-type]
                if w2 != WIRE_LEN:
                    raise ProtoError(f"{where}: map entry field with wire type {w2}")
                if n2 == 1:
                    k = _utf8(r2, where + " key")  # type: ignore[arg-type]
                elif n2 == 2:
                    v = _utf8(r2, where + " value")  # type: ignore[arg-type]
            entry = out.setdefault(f.name, {})  # type: ignore[assignment]
            entry[k] = v
        elif (message, f.name) in RAW_BYTES_FIELDS:
            decode(f.type, raw, _depth=_depth + 1)  # must parse, but keep the bytes
            out[f.name] = bytes(out.get(f.name, b"")) + raw  # type: ignore[operator]
        elif f.is_message:
            sub = decode(f.type, raw, _depth=_depth + 1)  # type: ignore[arg-type]
            if f.label == "repeated":
                out.setdefault(f.name, []).append(sub)  # type: ignore[union-attr]
            elif isinstance(out.get(f.name), dict):
                out[f.name] = _merge(out[f.name], sub)  # type: ignore[arg-type]
            else:
                out[f.name] = sub
        elif f.type == "string":
            out[f.name] = _utf8(raw, where)  # type: ignore[arg-type]
        elif f.type == "bytes":
            out[f.name] = bytes(raw)  # type: ignore[arg-type]
        elif f.type == "bool":
            out[f.name] = bool(raw)
        elif f.type == "uint32":
            out[f.name] = raw & 0xFFFFFFFF  # type: ignore[operator]
        elif f.type == "int64":
            v = raw  # type: ignore[assignment]
            out[f.name] = v - (1 << 64) if v >= 1 << 63 else v  # type: ignore[operator]
        else:
            out[f.name] = raw
    if unknown:
        out["_unknown"] = unknown
    return out


def _merge(a: dict, b: dict) -> dict:
    merged = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        elif isinstance(v, list) and isinstance(merged.get(k), list):
            merged[k] = merged[k] + v
        else:
            merged[k] = v
    return merged


def oneof_member(value: Mapping[str, object], message: str, oneof: str = "message") -> str | None:
    """The name of the set member of ``oneof`` in a decoded ``message``, or None."""
    for f in MESSAGES[message].fields:
        if f.oneof == oneof and f.name in value:
            return f.name
    return None


def any_bytes(type_url: str, value: bytes) -> bytes:
    """A serialized ``google.protobuf.Any``."""
    return encode("google.protobuf.Any", {"type_url": type_url, "value": value}, canonical=True)



