"""The demos ``fabric serve --demo`` serves under ``/demo/``: a chat (Web PubSub JSON
subprotocol with Microsoft's ``@azure/web-pubsub-client``), a collaborative whiteboard
(Socket.IO with ``socket.io-client``) and a live status page.

An edge like the others: it imports ``fabric.core`` and below, and is handed what it needs
of the other edges by ``fabric.app`` (a hub's embedded API, the whiteboard hub's Socket.IO
server, a statistics callable), so it never imports them.

Rules this module keeps:
- Off unless asked (``[demo] enabled``): ``/demo/api/negotiate`` mints a token for anyone
  who asks, which is the point of a demo and wrong for anything else.
- The page never holds a key: it asks ``/demo/api/negotiate`` for a client URL with a token
  (roles limited to what the demo needs), and the SDKs fetch a new one on reconnect.
- Static files are the fixed set found in ``static/`` at start, read once and kept in
  memory (bounded: the folder is ours); no path from a request reaches the file system.
- Every page is served with a Content-Security-Policy that allows scripts from this origin
  only, so even text that slipped into the DOM as markup could not run; the scripts insert
  other people's text with ``textContent`` only.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Any, Callable

import msgspec

from transport.http import Request, Response

from fabric.config import DemoConfig
from fabric.demo.chat import ChatHandler
from fabric.demo.whiteboard import Whiteboard

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/demo"
MAX_STATIC_BYTES = 4 << 20
_USER = re.compile(r"[A-Za-z0-9 _.\-]{1,32}")
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,255}")
_PAGES = {"/demo": "index.html", "/demo/": "index.html", "/demo/chat": "chat.html", "/demo/chat/": "chat.html",
          "/demo/whiteboard": "whiteboard.html", "/demo/whiteboard/": "whiteboard.html",
          "/demo/status": "status.html", "/demo/status/": "status.html"}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
_HEADERS = (("content-security-policy", _CSP), ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"), ("cache-control", "no-cache"))
CHAT_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


def _load_static() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    total = 0
    for path in sorted(STATIC.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        data = path.read_bytes()
        total += len(data)
        if total > MAX_STATIC_BYTES:
            raise RuntimeError(f"the demo's static files are over {MAX_STATIC_BYTES} bytes")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "text/javascript"):
            kind += "; charset=utf-8"
        files[path.relative_to(STATIC).as_posix()] = (data, kind)
    return files


class DemoEdge:
    """``/demo/...``: pages, static files, ``api/negotiate`` and ``api/stats``.

    ``hub_api(name)`` gives a hub's embedded API (``HubHandle``); ``socketio(name)`` the
    Socket.IO server of a hub; ``set_handler(hub, handler)`` installs an in-process event
    handler; ``stats()`` returns ``{hub: {"connections": n, "publications": n,
    "deliveries": n}}`` from the metrics.
    """

    def __init__(self, config: DemoConfig, *, hub_api: Callable[[str], Any], socketio: Callable[[str], Any],
                 set_handler: Callable[[str, Any], None], stats: Callable[[], dict]) -> None:
        self.config = config
        self._hub_api = hub_api
        self._stats = stats
        self.files = _load_static()
        self.chat = ChatHandler(hub_api(config.chat_hub))
        set_handler(config.chat_hub, self.chat)
        self.whiteboard = Whiteboard(socketio(config.whiteboard_hub), config.whiteboard_history)

    @staticmethod
    def owns(request: Request) -> bool:
        path = request.path
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def handle_http(self, request: Request) -> Response:
        """One ``/demo`` request. Checkpoint: no (answers from memory)."""
        if request.method not in ("GET", "HEAD"):
            return Response.error(405, "MethodNotAllowed", "the demo answers GET only", (("allow", "GET, HEAD"),))
        path = request.path
        page = _PAGES.get(path)
        if page is not None:  # pages name their files by absolute path: no redirects needed
            return self._file(page)
        if path.startswith("/demo/static/"):
            return self._file(path[len("/demo/static/"):])
        if path == "/demo/api/negotiate":
            return self._negotiate(request)
        if path == "/demo/api/stats":
            return Response.json(200, self._stats(), (("cache-control", "no-store"),))
        return Response.error(404, "NotFound", f"no such demo resource: {path[:200]}")

    def _file(self, name: str) -> Response:
        found = self.files.get(name)
        if found is None:
            return Response.error(404, "NotFound", "no such demo file")
        data, kind = found
        return Response(200, data, (("content-type", kind), *_HEADERS))

    def _negotiate(self, request: Request) -> Response:
        """``?app=chat|whiteboard&user=NAME`` -> ``{"url", "hub", "user", "path"?}``."""
        app = request.query_one("app") or "chat"
        user = (request.query_one("user") or "").strip()
        if not _USER.fullmatch(user):
            return Response.error(400, "BadRequest", "user: 1 to 32 letters, digits, spaces or _ . -")
        host = request.host
        if not _HOST.fullmatch(host):
            return Response.error(400, "BadRequest", "bad Host header")
        if app == "chat":
            hub = self.config.chat_hub
            token = self._hub_api(hub).get_client_access_token(user_id=user, roles=CHAT_ROLES,
                                                               minutes_to_expire=60)["token"]
            url = f"ws://{host}/client/hubs/{hub}?access_token={token}"
            body = {"url": url, "hub": hub, "user": user}
        elif app == "whiteboard":
            hub = self.config.whiteboard_hub
            token = self._hub_api(hub).get_client_access_token(user_id=user, minutes_to_expire=60,
                                                               client_type="socketio")["token"]
            body = {"endpoint": f"http://{host}", "path": f"/clients/socketio/hubs/{hub}/", "token": token,
                    "hub": hub, "user": user}
        else:
            return Response.error(400, "BadRequest", "app must be chat or whiteboard")
        return Response(200, msgspec.json.encode(body), (("content-type", "application/json"),
                                                         ("cache-control", "no-store")))
