"""``fabric``: the command line (``fabric serve``, ``fabric token``, ``fabric conform``).

``fabric serve`` reloads its configuration on SIGHUP, and when the file changes with
``--watch-config``: the file, the environment and the same flags are read again; a file
that does not load is rejected with its error and the running configuration stays; what
needs a restart is logged (``fabric.config.plan_reload``, docs/design.md "Config reload").
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import attrs
import trio

from fabric.core.redis_resp import RedisBrokerError


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
    serve.add_argument("--redis", metavar="URL",
                       help="Redis URL (redis://HOST:PORT/DB) that makes every node naming it one fabric "
                            "(config [broker] url, $FABRIC_REDIS_URL; default: one process, in memory)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="run N processes on one port, restarted if they crash (needs a broker URL)")
    serve.add_argument("--event-handler", action="append", default=[], metavar="HUB=URL_TEMPLATE",
                       help="an upstream event handler for a hub (repeatable)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error", "critical"),
                       type=str.lower, help="logging level (default info; $FABRIC_LOG_LEVEL, [server] log_level)")
    serve.add_argument("--log-format", choices=("text", "json"),
                       help="log lines as text or one JSON object per line (default text; $FABRIC_LOG_FORMAT)")
    serve.add_argument("--watch-config", action="store_true",
                       help="reload the config file when it changes (SIGHUP always reloads it)")
    serve.add_argument("--demo", action="store_true",
                       help="serve the demos (chat, whiteboard, status) under /demo/ ([demo] enabled)")

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
        return _serve(args, argv[1:])
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


def _serve(args, argv: list[str] | None = None) -> int:
    from fabric.config import ConfigError, parse_event_handler_flag

    overrides: dict = {"log_level": args.log_level, "log_format": args.log_format}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.access_key is not None:
        overrides["access_keys"] = (args.access_key,)
    if args.redis is not None:
        overrides["broker_url"] = args.redis
    if args.event_handler:
        try:
            overrides["event_handlers"] = [parse_event_handler_flag(v) for v in args.event_handler]
        except ConfigError as exc:
            print(f"fabric: configuration error: {exc}", file=sys.stderr)
            return 2
    config = _load(args, overrides)
    problem = _check_broker(config, args.workers)
    if problem:
        print(f"fabric: {problem}", file=sys.stderr)
        return 2
    if args.demo:
        config = attrs.evolve(config, demo=attrs.evolve(config.demo, enabled=True))
    generated_key = None
    if not config.server.access_keys:
        from fabric.core.auth import generate_access_key

        generated_key = generate_access_key()
        config = attrs.evolve(config, server=attrs.evolve(config.server, access_keys=(generated_key,)))
    watch = (args.config or os.environ.get("FABRIC_CONFIG")) if args.watch_config else None
    if args.watch_config and not watch:
        print("fabric: --watch-config needs --config FILE (or $FABRIC_CONFIG)", file=sys.stderr)
        return 2
    _configure_logging(config)

    def reload_config():
        """The configuration as ``fabric serve`` would load it now. Raises ConfigError."""
        from fabric.config import load_config

        fresh = load_config(args.config, env=os.environ, overrides=overrides)
        return attrs.evolve(fresh, demo=attrs.evolve(fresh.demo, enabled=True)) if args.demo else fresh

    if args.workers > 1:
        from fabric.workers import serve_workers

        return serve_workers(args.workers, config, argv or [], generated_key=generated_key)
    failed = []
    broker_failed = []
    try:
        trio.run(_serve_async, config, reload_config, watch)
    except* KeyboardInterrupt:
        pass
    except* RedisBrokerError as group:
        broker_failed.extend(group.exceptions)
    except* OSError as group:
        failed.extend(group.exceptions)
    if broker_failed:
        print(f"fabric: cannot use the broker: {broker_failed[0]}", file=sys.stderr)
        return 1
    if failed:
        first = failed[0]
        while isinstance(first, BaseExceptionGroup):  # trio nests groups; name the real cause
            first = first.exceptions[0]
        print(f"fabric: cannot listen on {config.server.host}:{config.server.port}: {first}", file=sys.stderr)
        return 1
    return 0


def _check_broker(config, workers: int) -> str | None:
    """A bad broker URL or ``--workers`` value, said before anything binds; else None."""
    from fabric.core.redis_resp import RedisURL, RedisURLError

    if workers < 1:
        return f"--workers must be at least 1, not {workers}"
    if config.broker.url is None:
        if workers > 1:
            return ("--workers > 1 needs a broker: the processes must share hubs through Redis "
                    "(--redis redis://HOST:PORT/DB, [broker] url or $FABRIC_REDIS_URL)")
        return None
    try:
        RedisURL(config.broker.url)
    except RedisURLError as exc:
        return f"configuration error: broker.url: {exc}"
    return None


def _configure_logging(config) -> None:
    from fabric.core.logs import configure

    secrets = (*config.server.access_keys, *((config.metrics.token,) if config.metrics.token else ()))
    configure(config.server.log_level, config.server.log_format, secrets=secrets)


WATCH_INTERVAL = 1.0


async def _serve_async(config, reload_config=None, watch: str | None = None) -> None:
    from fabric.app import open_fabric

    log = logging.getLogger("fabric")
    mutation = os.environ.get("FABRIC_TEST_MUTATION")
    if mutation:  # test-only: tests/conform checks that the conformance suite notices
        from fabric.testing import apply_mutation

        apply_mutation(mutation)
    async with open_fabric(config) as fab:
        fab.reuse_port = bool(os.environ.get("FABRIC_REUSE_PORT"))  # a worker of --workers N
        lock = trio.Lock()

        async def reload(why: str) -> None:
            async with lock:
                await _reload(fab, reload_config, why)

        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                port = await nursery.start(fab.serve)
                print(fab.connection_string(), flush=True)
                log.info("listening on %s (client URL http://…/client/hubs/{hub}, REST /api/hubs/{hub})",
                         fab.endpoint)
                if watch and reload_config is not None:
                    nursery.start_soon(_watch_file, watch, reload)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        if reload_config is not None:
                            await reload("SIGHUP")
                        continue
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    break
            nursery.cancel_scope.cancel()


async def _reload(fab, reload_config, why: str) -> None:
    """Load the configuration again and apply it; a bad file changes nothing. Checkpoint."""
    from fabric.config import ConfigError

    log = logging.getLogger("fabric.config")
    try:
        config = await trio.to_thread.run_sync(reload_config)
    except ConfigError as exc:
        log.error("config reload (%s) rejected, the running configuration stays: %s", why, exc)
        return
    plan = await fab.reload(config)
    _configure_logging(fab.config)
    log.info("config reloaded (%s): %s", why, ", ".join(plan.applied) or "nothing changed",
             extra={"fields": {"event": "config.reload", "applied": ",".join(plan.applied),
                               "needs_restart": ",".join(plan.needs_restart)}})
    if plan.needs_restart:
        log.warning("config reload (%s): %s changed but need a restart; the running values stay",
                    why, ", ".join(plan.needs_restart))


def _file_state(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


async def _watch_file(path: str, reload) -> None:
    """Poll ``path`` every ``WATCH_INTERVAL`` seconds (one stat a second; no inotify
    dependency) and reload once a change has held for a quarter of that."""
    seen = _file_state(path)
    while True:
        await trio.sleep(WATCH_INTERVAL)
        state = _file_state(path)
        if state == seen or state is None:
            continue
        await trio.sleep(WATCH_INTERVAL / 4)  # let an editor finish writing
        if _file_state(path) != state:
            continue
        seen = state
        await reload(f"{path} changed")


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
