"""A tiny record type for the choices we made where Microsoft's sources are silent or disagree.

Every ``specs`` module keeps a ``DECISIONS`` tuple of these next to the data it governs, so
a reader (or a conformance report) can see *what* we chose, *why*, and what the evidence
was. ``render_decisions_markdown`` turns any collection of them into a Markdown table.

Evidence tags, used in reasons and comments throughout ``specs`` and ``fabric``; every source
is public:

- ``[DOC]`` Microsoft Learn's Azure Web PubSub documentation
  (learn.microsoft.com/azure/azure-web-pubsub/; its source is MicrosoftDocs/azure-docs,
  ``articles/azure-web-pubsub/``). A page named by file, such as ``concept-ack.md``,
  ``reference-json-webpubsub-subprotocol.md``, ``reference-cloud-events.md`` or
  ``reference-odata-filter.md``, is that article.
- ``[SPEC]`` Machine-readable specifications: Azure/azure-rest-api-specs
  ``specification/webpubsub/data-plane/WebPubSub/`` (``routes.tsp`` and the
  ``stable|preview/<version>/webpubsub.json`` files); Azure/azure-webpubsub ``protocols/``
  (``client/client-spec.md``, the client spec; the ``json.webpubsub.azure.v1`` JSON schemas;
  ``protobuf.webpubsub.azure.v1/webpubsub.v1.proto``; ``server/cloud-events/main.tsp``) and
  its integration tests (``tests/integration-tests``).
- ``[SDK]`` The source of Microsoft's SDKs: azure-messaging-webpubsubservice and
  azure-messaging-webpubsubclient (PyPI), @azure/web-pubsub, @azure/web-pubsub-client and
  @azure/web-pubsub-express (npm), and the .NET ones in Azure/azure-sdk-for-net ``sdk/webpubsub/``.
- ``[EMU]`` Microsoft's local Web PubSub emulator (Azure/azure-webpubsub ``tools/emulator``):
  the best public oracle where the docs are silent.
- ``[OBS]`` Observed by running Microsoft's Python SDKs against a loopback probe: what they
  send and how they react (the interop tests in ``tests/interop`` drive the same SDKs).
- ``[INF]`` Our inference: no source confirms it; a design choice.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen(slots=True)
class Decision:
    """One recorded decision.

    Attributes:
        id: stable short identifier (``json.missing-data``), unique across ``specs``.
        question: what Microsoft's sources leave open.
        decision: what we do.
        reason: why, including the evidence tags (``[DOC]``, ``[SDK]``, ``[EMU]`` ..., see
            the module docstring) where there is some.
    """

    id: str
    question: str
    decision: str
    reason: str


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_decisions_markdown(decisions: Iterable[Decision]) -> str:
    """Render decisions as a Markdown table (one row each, in the given order)."""
    lines = ["| id | question | decision | reason |", "|---|---|---|---|"]
    for d in decisions:
        lines.append(
            f"| `{d.id}` | {_cell(d.question)} | {_cell(d.decision)} | {_cell(d.reason)} |"
        )
    return "\n".join(lines) + "\n"
