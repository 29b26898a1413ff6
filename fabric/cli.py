"""``fabric``: the command line (``fabric serve``, ``fabric token``, ``fabric conform``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import attrs
import trio


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fabric",
        description="A realtime message fabric that speaks Azure Web PubSub's protocols.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the WebSocket + REST server (in-memory by default)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks a free port)")
    serve.add_argument("--access-key", help="access key (default $FABRIC_ACCESS_KEY, else a random key)")
    serve.add_argument("--config", help="TOML config file (default $FABRIC_CONFIG)")
    serve.add_argument("--event-handler", action="append", default=[], metavar="HUB=URL_TEMPLATE",
                       help="an upstream event handler for a hub (repeatable)")
    serve.add_argument("--log-level", default=os.environ.get("FABRIC_LOG_LEVEL", "INFO"),
                       help="logging level (default INFO)")

    token = sub.add_parser("token", help="print a client URL with an access token")
    token.add_argument("--hub", required=True)
    token.add_argument("--user", help="user id (the token's sub claim)")
    token.add_argument("--role", action="append", default=[], help="a role, e.g. webpubsub.joinLeaveGroup (repeatable)")
    token.add_argument("--group", action="append", default=[], help="a group to join on connect (repeatable)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--endpoint", help="server endpoint (default http://HOST:PORT from the config)")
    token.add_argument("--access-key", help="access key (default $FABRIC_ACCESS_KEY or the config's first key)")
    token.add_argument("--config", help="TOML config file (default $FABRIC_CONFIG)")

    sub.add_parser("conform", add_help=False,
                   help="check any Web PubSub endpoint for protocol conformance (fabric conform --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["conform"]:  # the conformance suite owns its arguments (specs/conform)
        from specs.conform.runner import main as conform

        return conform(argv[1:], prog="fabric conform")
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "token":
        return _token(args)
    parser.print_help()
    return 2


def _load(args, overrides: dict):
    from fabric.config import ConfigError, load_config

    try:
        return load_config(args.config, env=os.environ, overrides=overrides)
    except ConfigError as exc:
        print(f"fabric: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2)


def _serve(args) -> int:
    from fabric.config import ConfigError, parse_event_handler_flag

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.access_key is not None:
        overrides["access_keys"] = (args.access_key,)
    if args.event_handler:
        try:
            overrides["event_handlers"] = [parse_event_handler_flag(v) for v in args.event_handler]
        except ConfigError as exc:
            print(f"fabric: configuration error: {exc}", file=sys.stderr)
            return 2
    config = _load(args, overrides)
    if not config.server.access_keys:
        from fabric.core.auth import generate_access_key

        config = attrs.evolve(config, server=attrs.evolve(config.server, access_keys=(generate_access_key(),)))
    failed = []
    try:
        trio.run(_serve_async, config)
    except* KeyboardInterrupt:
        pass
    except* OSError as group:
        failed.extend(group.exceptions)
    if failed:
        print(f"fabric: cannot listen on {config.server.host}:{config.server.port}: {failed[0]}", file=sys.stderr)
        return 1
    return 0


async def _serve_async(config) -> None:
    from fabric.app import open_fabric

    log = logging.getLogger("fabric")
    mutation = os.environ.get("FABRIC_TEST_MUTATION")
    if mutation:  # test-only: tests/conform checks that the conformance suite notices
        from fabric.testing import apply_mutation

        apply_mutation(mutation)
    async with open_fabric(config) as fab:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                port = await nursery.start(fab.serve)
                print(fab.connection_string(), flush=True)
                log.info("listening on %s (client URL http://…/client/hubs/{hub}, REST /api/hubs/{hub})",
                         fab.endpoint)
                async for signum in signals:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    break
            nursery.cancel_scope.cancel()


def _token(args) -> int:
    from fabric.core import auth
    from specs import names

    config = _load(args, {})
    key = args.access_key or os.environ.get("FABRIC_ACCESS_KEY") or (config.server.access_keys or (None,))[0]
    if not key:
        print("fabric: no access key: pass --access-key, set FABRIC_ACCESS_KEY, or configure one", file=sys.stderr)
        return 2
    endpoint = args.endpoint or f"http://{config.server.host}:{config.server.port}"
    if not names.is_valid_hub_name(args.hub):
        print(f"fabric: invalid hub name {args.hub!r}", file=sys.stderr)
        return 2
    token = auth.mint_client_token(key=key, endpoint=endpoint, hub=args.hub, user_id=args.user,
                                   roles=tuple(args.role), groups=tuple(args.group), ttl_seconds=args.ttl)
    print(auth.client_url(endpoint, args.hub, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
