"""``fabric conform``: executable Web PubSub protocol specifications that check any endpoint
(ours, Azure's, an emulator) and report where it departs from the spec.

Run it::

    python -m specs.conform --connection-string "Endpoint=...;AccessKey=...;Version=1.0;" --hub HUB \\
        [--subprotocol json,protobuf.reliable,...] [--examples N] [--seed S] [--report FILE]
    pytest --pyargs specs.conform --connection-string "..." --hub HUB   # from this repository's root
    pytest -p specs.conform.plugin --pyargs specs.conform ...             # anywhere else

``specs.conform.runner.main(argv)`` is the entry point the ``fabric conform`` subcommand calls.

Modules, in dependency order:

- ``endpoint``: connection strings, client and REST tokens (HS256, aud as the SDKs set it).
- ``protowire``: a minimal protobuf codec over ``specs.webpubsub_protobuf`` (not the server's).
- ``wire``: neutral payloads, client message encoding, strict decoding of server frames with
  shape checks against ``specs.webpubsub_json``.
- ``transcript``: the bounded, readable wire transcript of a run.
- ``driver``: WebSocket clients on trio-websocket, signed REST calls, and the ``Portal`` (a trio
  loop in a thread) that synchronous Hypothesis code drives.
- ``rules``: every check as data (source, kind, who is at fault); ``report``: departures and
  the ledger of checks.
- ``strategies``: Hypothesis strategies for valid client messages, payloads and near misses.
- ``model``: the hub model (connections, users, groups, permissions, acks, sequence ids).
- ``machine``: the ``RuleBasedStateMachine`` comparing a live endpoint with the model.
- ``suites``: fixed handshake/REST/membership/fan-out/recovery checks and the single-frame probes.
- ``diagnose``: can this endpoint be checked at all (one line if not).
- ``runner``: ``Session`` and ``main``; ``plugin``: the pytest options and fixture.

Imports nothing from ``fabric/``: a checker that shared the server's codecs could not find the
server's codec bugs.
"""
