"""Socket.IO v5 over Engine.IO v4: sans-IO protocol cores and their trio adapters.

The cores do no I/O and import no trio: they are fed bytes and strings and answer with
events, bytes and decisions, so the adapters stay thin and the cores can be fuzzed.

- ``eio_packets``: Engine.IO v4 packets, WebSocket framing and long-polling payloads.
- ``eio_requests``: verifying an Engine.IO HTTP request (error codes 0-5 and their answers).
- ``eio_session``: one Engine.IO session (heartbeat, polling, upgrade, close) as a state machine.
- ``parser``: Socket.IO v5 packets, binary attachments included.

The trio side:

- ``engine``: the two transports on the shared listener, one heartbeat ticker per endpoint.
- ``server``: the Socket.IO server and its handler API (``Server``, ``Namespace``).
- ``formats``: rooms as hub groups, the wire formats of a broadcast.
- ``endpoint``: which path serves which hub, client tokens.

The handler API is importable from here (lazily, so importing a core stays light)::

    from fabric.socketio import Server, Namespace, ConnectionRefusedError
"""

_API = {
    "Server": "fabric.socketio.server",
    "Namespace": "fabric.socketio.server",
    "BroadcastOperator": "fabric.socketio.server",
    "Reason": "fabric.socketio.server",
    "ConnectionRefusedError": "fabric.socketio.exceptions",
    "DisconnectedError": "fabric.socketio.exceptions",
    "SocketIOError": "fabric.socketio.exceptions",
    "TimeoutError": "fabric.socketio.exceptions",
}


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
