"""Socket.IO v5 over Engine.IO v4: sans-IO protocol cores (packet codecs, session state machine).

Nothing here does I/O or imports trio: the modules are fed bytes and strings and answer with
events, bytes and decisions, so the trio adapters stay thin and the cores can be fuzzed.

- ``eio_packets``: Engine.IO v4 packets, WebSocket framing and long-polling payloads.
- ``eio_requests``: verifying an Engine.IO HTTP request (error codes 0-5 and their answers).
- ``eio_session``: one Engine.IO session (heartbeat, polling, upgrade, close) as a state machine.
- ``parser``: Socket.IO v5 packets, binary attachments included.
"""
