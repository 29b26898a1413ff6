"""Client-side wire formats: what the checker sends and how it reads what comes back.

Independent of the server's codecs: JSON through msgspec, protobuf through
``specs.conform.protowire``, shapes checked against ``specs.webpubsub_json.SERVER_MESSAGES``
and ``specs.webpubsub_protobuf``.

Rules this module keeps:
- One neutral form per direction. Outbound, a client message is a ``dict`` with the JSON
  field names (``{"type": "joinGroup", "group": "g", "ackId": 1}``) and, for data, a
  ``Payload`` under ``"payload"``; ``encode_client`` turns it into a text frame (JSON
  subprotocols) or a binary frame (protobuf ones). Inbound, every frame becomes a ``Frame``
  whatever the subprotocol, so the model compares one shape.
- Decoding never raises on what the endpoint sends: problems are collected on
  ``Frame.problems`` as ``(rule id, one sentence)`` for the report.
- Payloads compare by meaning where Microsoft's docs give the meaning (a JSON value, not its
  bytes: the service may re-serialize) and byte for byte otherwise.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import msgspec

from specs.conform import protowire
from specs.datatype import DataType
from specs.webpubsub_json import SERVER_MESSAGES, Subprotocol
from specs.webpubsub_protobuf import DATA_FIELDS, DATA_TYPE_OF_FIELD, FROM_GROUP, FROM_SERVER

_json_decoder = msgspec.json.Decoder()

DATA_TYPES = tuple(d.value for d in DataType)

# =========================================================================== payloads


@dataclass(frozen=True)
class Payload:
    """One message body.

    Attributes:
        data_type: ``text``, ``json``, ``binary`` or ``protobuf``.
        body: text and json as UTF-8 (json: the JSON text), binary as bytes, protobuf as the
            serialized ``google.protobuf.Any``.
    """

    data_type: str
    body: bytes

    @classmethod
    def text(cls, s: str) -> "Payload":
        return cls("text", s.encode("utf-8"))

    @classmethod
    def json(cls, value: object) -> "Payload":
        return cls("json", msgspec.json.encode(value))

    def json_value(self) -> object:
        """The value a JSON subprotocol puts in ``data``."""
        if self.data_type == "text":
            return self.body.decode("utf-8")
        if self.data_type == "json":
            return _json_decoder.decode(self.body)
        return base64.b64encode(self.body).decode("ascii")

    def same_as(self, other: "Payload") -> bool:
        if self.data_type != other.data_type:
            return False
        if self.data_type == "json":
            try:
                return _loose(_json_decoder.decode(self.body)) == _loose(_json_decoder.decode(other.body))
            except msgspec.DecodeError:
                return False
        return self.body == other.body

    def short(self, limit: int = 48) -> str:
        if self.data_type in ("text", "json"):
            s = self.body.decode("utf-8", "replace")
        else:
            s = self.body.hex()
        if len(s) > limit:
            s = s[: limit - 1] + "…"
        return f"{self.data_type}:{s}"


def _loose(v: object) -> object:
    """JSON values compared by meaning (1 == 1.0; key order ignored by dict equality)."""
    if isinstance(v, list):
        return [_loose(x) for x in v]
    if isinstance(v, dict):
        return {k: _loose(x) for k, x in v.items()}
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


# =========================================================================== client -> service


def encode_client(protocol: Subprotocol, msg: dict) -> tuple[str, str | bytes]:
    """(``"text"`` or ``"binary"``, frame) for one neutral client message."""
    if protocol.binary:
        return "binary", encode_protobuf_client(msg)
    return "text", encode_json_client(msg)


def encode_json_client(msg: dict) -> str:
    out: dict[str, object] = {}
    for k, v in msg.items():
        if k == "payload":
            out["dataType"] = v.data_type
            out["data"] = v.json_value()
        else:
            out[k] = v
    return msgspec.json.encode(out).decode("utf-8")


def message_data(p: Payload) -> dict:
    member = DATA_FIELDS[DataType(p.data_type)]
    if p.data_type in ("text", "json"):
        return {member: p.body.decode("utf-8")}
    return {member: p.body}


_PB_KIND = {
    "sendToGroup": "send_to_group_message",
    "event": "event_message",
    "joinGroup": "join_group_message",
    "leaveGroup": "leave_group_message",
    "sequenceAck": "sequence_ack_message",
    "ping": "ping_message",
}
_PB_FIELD = {"ackId": "ack_id", "noEcho": "no_echo", "sequenceId": "sequence_id", "group": "group",
             "event": "event"}


def encode_protobuf_client(msg: dict) -> bytes:
    kind = _PB_KIND[msg["type"]]
    inner: dict[str, object] = {}
    for k, v in msg.items():
        if k == "type":
            continue
        if k == "payload":
            inner["data"] = message_data(v)
        else:
            inner[_PB_FIELD[k]] = v
    return protowire.encode("UpstreamMessage", {kind: inner})


# =========================================================================== service -> client


@dataclass
class Frame:
    """One frame from the endpoint, decoded (see the module rules)."""

    kind: str  # ack message connected disconnected pong invokeResponse streamClosed raw unknown
    frame_type: str  # "text" | "binary"
    render: str
    ack_id: int | None = None
    success: bool | None = None
    error: tuple[str, str] | None = None
    source: str | None = None  # "group" | "server"
    group: str | None = None
    payload: Payload | None = None
    from_user: str | None = None
    sequence_id: int | None = None
    connection_id: str | None = None
    user_id: str | None = None
    reconnection_token: str | None = None
    reason: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)


def render_text(s: str, limit: int = 200) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


def decode_frame(protocol: Subprotocol | None, data: str | bytes) -> Frame:
    """Decode one frame received on a connection using ``protocol`` (None: simple client)."""
    if protocol is None:
        if isinstance(data, str):
            return Frame("raw", "text", render_text(data), payload=Payload("text", data.encode("utf-8")))
        return Frame("raw", "binary", "bin:" + render_text(data.hex()), payload=Payload("binary", bytes(data)))
    if protocol.binary:
        if isinstance(data, str):
            f = Frame("unknown", "text", render_text(data))
            f.problems.append(("frame.kind", "a text frame on a protobuf subprotocol (binary frames only)"))
            return f
        return decode_protobuf_frame(data)
    if isinstance(data, bytes):
        f = Frame("unknown", "binary", "bin:" + render_text(data.hex()))
        f.problems.append(("frame.kind", "a binary frame on a JSON subprotocol (text frames only)"))
        return f
    return decode_json_frame(data)


# --------------------------------------------------------------------------- JSON


def _spec_name(obj: dict) -> str | None:
    t = obj.get("type")
    if t == "message":
        return {"group": "message.group", "server": "message.server"}.get(obj.get("from"))  # type: ignore[arg-type]
    if t == "system":
        return {"connected": "system.connected", "disconnected": "system.disconnected"}.get(obj.get("event"))  # type: ignore[arg-type]
    if t == "invokeResponse":
        return "invokeResponse.error"
    return t if t in ("ack", "pong", "streamClosed") else None


def _is_uint(v: object, minimum: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and minimum <= v < 2**64


def decode_json_frame(text: str) -> Frame:
    frame = Frame("unknown", "text", render_text(text))
    try:
        obj = _json_decoder.decode(text)
    except msgspec.DecodeError as exc:
        frame.problems.append(("frame.valid", f"not JSON: {str(exc)[:80]}"))
        return frame
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        frame.problems.append(("frame.valid", "not a JSON object with a string 'type'"))
        return frame
    name = _spec_name(obj)
    if name is None:
        frame.problems.append(("frame.type", f"unknown server message {obj.get('type')!r}"
                               + (f"/{obj.get('event') or obj.get('from')!r}" if obj.get("type") in ("system", "message") else "")))
        return frame
    spec = SERVER_MESSAGES[name]
    _check_shape(frame, spec, obj)
    p = frame.problems
    if name == "ack":
        frame.kind = "ack"
        frame.ack_id = obj.get("ackId") if _is_uint(obj.get("ackId")) else None
        if frame.ack_id is None:
            p.append(("frame.shape", "ack without a uint64 ackId"))
        frame.success = obj.get("success") if isinstance(obj.get("success"), bool) else None
        if frame.success is None:
            p.append(("frame.shape", "ack without a boolean success"))
        err = obj.get("error")
        if "error" in obj:
            if not (isinstance(err, dict) and isinstance(err.get("name"), str) and isinstance(err.get("message"), str)):
                p.append(("ack.error-shape", "ack error must be an object with string name and message"))
            else:
                frame.error = (err["name"], err["message"])
        if frame.success is False and "error" not in obj:
            p.append(("ack.error-shape", "a failed ack carries no error"))
        if frame.success is True and "error" in obj:
            p.append(("ack.error-shape", "a successful ack carries an error"))
    elif name.startswith("message."):
        frame.kind = "message"
        frame.source = obj.get("from")  # type: ignore[assignment]
        if name == "message.group":
            frame.group = obj.get("group") if isinstance(obj.get("group"), str) else None
            if frame.group is None:
                p.append(("frame.shape", "group message without a string group"))
            if "fromUserId" in obj:
                if isinstance(obj["fromUserId"], str):
                    frame.from_user = obj["fromUserId"]
                elif obj["fromUserId"] is not None:
                    p.append(("frame.shape", "fromUserId is not a string"))
        if "sequenceId" in obj:
            if _is_uint(obj["sequenceId"], 1):
                frame.sequence_id = obj["sequenceId"]
            else:
                p.append(("frame.shape", f"sequenceId {obj['sequenceId']!r} is not a uint64 >= 1"))
        frame.payload = _json_payload(obj, p)
    elif name == "system.connected":
        frame.kind = "connected"
        cid, uid, tok = obj.get("connectionId"), obj.get("userId"), obj.get("reconnectionToken")
        if not isinstance(cid, str) or not cid:
            p.append(("frame.shape", "connected without a connectionId string"))
        else:
            frame.connection_id = cid
        if uid is not None and not isinstance(uid, str):
            p.append(("frame.shape", "userId is neither a string nor null"))
        else:
            frame.user_id = uid
        if tok is not None:
            if isinstance(tok, str) and tok:
                frame.reconnection_token = tok
            else:
                p.append(("frame.shape", "reconnectionToken is not a non-empty string"))
    elif name == "system.disconnected":
        frame.kind = "disconnected"
        frame.reason = obj.get("message") if isinstance(obj.get("message"), str) else None
        if frame.reason is None:
            p.append(("frame.shape", "disconnected without a message string"))
    elif name == "pong":
        frame.kind = "pong"
    elif name == "invokeResponse.error":
        frame.kind = "invokeResponse"
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("name"), str):
            frame.error = (err["name"], str(err.get("message")))
    elif name == "streamClosed":
        frame.kind = "streamClosed"
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("name"), str):
            frame.error = (err["name"], str(err.get("message")))
    return frame


def _check_shape(frame: Frame, spec, obj: dict) -> None:
    p = frame.problems
    for k in spec.required_keys:
        if k not in obj:
            p.append(("frame.shape", f"{spec.name}: required key {k!r} missing"))
    for k, v in spec.constants.items():
        if k in obj and obj[k] != v:
            p.append(("frame.shape", f"{spec.name}: {k} must be {v!r}, got {obj[k]!r}"))
    unknown = [k for k in obj if k not in spec.keys]
    if unknown:
        p.append(("frame.unknown-key", f"{spec.name}: keys {unknown} are not in the catalogue"))
    for k, v in obj.items():
        if v is None and k in spec.keys and k not in spec.nullable:
            p.append(("frame.null", f"{spec.name}: {k!r} is null (absent keys must be omitted)"))
    order = [k for k in obj if k in spec.keys]
    want = [k for k in spec.keys if k in obj]
    if order != want:
        p.append(("frame.key-order", f"{spec.name}: keys in order {order}, the catalogue says {want}"))


def _json_payload(obj: dict, p: list) -> Payload | None:
    dt, data = obj.get("dataType"), obj.get("data")
    if dt not in DATA_TYPES:
        p.append(("frame.shape", f"dataType {dt!r} is not one of {DATA_TYPES}"))
        return None
    if dt == "text":
        if not isinstance(data, str):
            p.append(("frame.data", "text data is not a JSON string"))
            return None
        return Payload("text", data.encode("utf-8", "surrogatepass"))
    if dt == "json":
        if data is None:
            p.append(("frame.data", "json data is null (the .NET client rejects it)"))
            return None
        return Payload("json", msgspec.json.encode(data))
    if not isinstance(data, str):
        p.append(("frame.data", f"{dt} data is not a base64 string"))
        return None
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        p.append(("frame.data", f"{dt} data is not valid padded base64"))
        return None
    return Payload(dt, raw)


# --------------------------------------------------------------------------- protobuf


def pb_render(value: object, limit: int = 200) -> str:
    def r(v: object) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {r(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(r(x) for x in v) + "]"
        if isinstance(v, bytes):
            return "0x" + v.hex()
        if isinstance(v, str):
            return repr(v)
        return str(v)

    return render_text("pb" + r(value), limit)


def decode_protobuf_frame(data: bytes) -> Frame:
    frame = Frame("unknown", "binary", "pb:" + render_text(bytes(data).hex()))
    p = frame.problems
    try:
        msg = protowire.decode("DownstreamMessage", bytes(data))
    except protowire.ProtoError as exc:
        p.append(("frame.valid", f"not a valid DownstreamMessage: {exc}"))
        return frame
    frame.render = pb_render(msg)
    if "_unknown" in msg:
        p.append(("frame.unknown-key", f"DownstreamMessage has unknown fields {msg['_unknown']}"))
    member = protowire.oneof_member(msg, "DownstreamMessage")
    if member is None:
        p.append(("frame.valid", "a DownstreamMessage with no message member"))
        return frame
    inner = msg[member]
    assert isinstance(inner, dict)
    if member == "ack_message":
        frame.kind = "ack"
        frame.ack_id = inner.get("ack_id", 0)  # type: ignore[assignment]
        frame.success = bool(inner.get("success", False))
        err = inner.get("error")
        if err is not None:
            frame.error = (str(err.get("name", "")), str(err.get("message", "")))  # type: ignore[union-attr]
            if not frame.error[0]:
                p.append(("ack.error-shape", "ack error without a name"))
        if not frame.success and err is None:
            p.append(("ack.error-shape", "a failed ack carries no error"))
        if frame.success and err is not None:
            p.append(("ack.error-shape", "a successful ack carries an error"))
    elif member == "data_message":
        frame.kind = "message"
        src = inner.get("from", "")
        frame.source = src  # type: ignore[assignment]
        if src not in (FROM_GROUP, FROM_SERVER):
            p.append(("frame.shape", f"DataMessage.from {src!r} is neither 'group' nor 'server'"))
        if src == FROM_GROUP:
            frame.group = inner.get("group")  # type: ignore[assignment]
            if frame.group is None:
                p.append(("frame.shape", "a group DataMessage without group"))
        elif "group" in inner:
            p.append(("frame.shape", "a server DataMessage with a group"))
        if "sequence_id" in inner:
            frame.sequence_id = inner["sequence_id"]  # type: ignore[assignment]
            if not frame.sequence_id:
                p.append(("frame.shape", "sequence_id 0 (clients read 0 as absent)"))
        md = inner.get("data")
        if not isinstance(md, dict):
            p.append(("frame.data", "a DataMessage without data"))
        else:
            m2 = protowire.oneof_member(md, "MessageData", "data")
            if m2 is None:
                p.append(("frame.data", "MessageData sets no member"))
            else:
                dt = DATA_TYPE_OF_FIELD[m2].value
                v = md[m2]
                frame.payload = Payload(dt, v.encode("utf-8") if isinstance(v, str) else bytes(v))  # type: ignore[arg-type]
                if dt == "json":
                    try:
                        _json_decoder.decode(frame.payload.body)
                    except msgspec.DecodeError:
                        p.append(("frame.data", "json_data is not JSON text"))
    elif member == "system_message":
        sub = protowire.oneof_member(inner, "DownstreamMessage.SystemMessage")
        if sub == "connected_message":
            c = inner[sub]
            frame.kind = "connected"
            frame.connection_id = c.get("connection_id") or None  # type: ignore[union-attr]
            frame.user_id = c.get("user_id") or None  # type: ignore[union-attr]
            frame.reconnection_token = c.get("reconnection_token") or None  # type: ignore[union-attr]
            if not frame.connection_id:
                p.append(("frame.shape", "connected_message without connection_id"))
        elif sub == "disconnected_message":
            frame.kind = "disconnected"
            frame.reason = str(inner[sub].get("reason", ""))  # type: ignore[union-attr]
        else:
            p.append(("frame.valid", "a SystemMessage with no member"))
    elif member == "pong_message":
        frame.kind = "pong"
    elif member == "invoke_response_message":
        frame.kind = "invokeResponse"
        err = inner.get("error")
        if isinstance(err, dict):
            frame.error = (str(err.get("name", "")), str(err.get("message", "")))
    elif member == "stream_closed_message":
        frame.kind = "streamClosed"
        err = inner.get("error")
        if isinstance(err, dict):
            frame.error = (str(err.get("name", "")), str(err.get("message", "")))
    else:
        frame.kind = member
    return frame
