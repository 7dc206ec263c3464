"""Run the exchange: ``pingpost serve --config FILE``.

Prints ``listening on http://H:P`` once requests are accepted. On SIGTERM or SIGINT it
stops accepting, lets every auction and post in flight finish, and exits 0. On SIGHUP it
reads the config file again and swaps it in whole, or keeps the running one if the file is bad.
If the event loop closes the listening socket under it (see ``connections``), it drains the
same way and exits 1, for its supervisor or process manager to start it again.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import ssl
import sys

import uvloop
from aiohttp import web

from . import ledger, logs
from .privacy import keys
from .config import Config, ConfigError, ExchangeSettings, load, report
from .connections import Limits, listen, raise_fd_limit
from .server import EXCHANGE, drain, make_app, reload
from .store.base import Store, StoreUnavailable
from .store.memory import MemoryStore
from .workers import Supervisor

log = logging.getLogger("pingpost.serve")

#: Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLD = 20_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML or JSON config file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (above 1 needs --redis)")
    parser.add_argument("--redis", default=None, help="Redis URL for shared state (default: in memory)")
    parser.add_argument("--ledger", default=ledger.DEFAULT_URL,
                        help=f"the books: sqlite:///PATH, postgresql://USER@HOST:PORT/DB, or none for no books "
                             f"(default: {ledger.DEFAULT_URL})")
    parser.add_argument("--ledger-journal", default=None,
                        help="with a postgresql:// ledger: this host's journal file, the same for all its workers "
                             "(default: pingpost-ledger-journal.db)")
    parser.add_argument("--tls-cert", default=None, help="certificate chain (PEM) to answer sellers over HTTPS")
    parser.add_argument("--tls-key", default=None, help="private key (PEM) for --tls-cert")
    parser.add_argument("--ca-file", default=None, help="CA bundle to verify https:// buyers (default: system)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set by the supervisor


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(report(args.config, exc), file=sys.stderr)
        return 2
    if args.workers < 1:
        print("pingpost: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and not args.redis:
        print("pingpost: --workers above 1 needs --redis URL: workers must share caps, benches and pings",
              file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("pingpost: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        if args.workers > 1:
            uvloop.run(check_store(args.redis))
            uvloop.run(check_ledger(args, config))
            return uvloop.run(Supervisor(args).run())
        return uvloop.run(serve(config, args))
    except StoreUnavailable as exc:
        print(f"pingpost: cannot reach the store: {exc}", file=sys.stderr)
        return 1
    except ledger.LedgerError as exc:
        print(f"pingpost: cannot open the ledger: {exc}", file=sys.stderr)
        return 1
    except IncompleteInstall as exc:
        print(f"pingpost: {exc}", file=sys.stderr)
        return 1
    except keys.KeyProblem as exc:
        print(f"pingpost: {exc}", file=sys.stderr)
        return 2


class IncompleteInstall(Exception):
    """A file of the package itself is missing: the install is broken, not the
    operator's input, so the message says so rather than blame an option."""


def make_store(redis_url: str | None) -> Store:
    if redis_url is None:
        return MemoryStore()
    try:
        from .store.redis import RedisStore  # reads its Lua scripts as it loads
    except OSError as exc:
        raise IncompleteInstall(
            f"cannot load the Redis store: {exc.strerror or exc}: {exc.filename} "
            "(the installed package lacks its Lua scripts; reinstall pingpost)") from None
    return RedisStore(redis_url)


async def check_store(redis_url: str) -> None:
    """Fail before starting workers when the shared store cannot be reached."""
    store = make_store(redis_url)
    await store.start([], ExchangeSettings())
    await store.close()


async def open_books(args: argparse.Namespace, config: Config) -> ledger.Ledger:
    """The books, with the operator's key: a ledger keeps leads' personal data, sealed under
    it, so without one (or with another than the books were made with) nothing starts."""
    key = keys.load(config.privacy.key_file)
    if args.ledger != "none":
        keys.required(key)
    return await ledger.open(args.ledger, journal=args.ledger_journal, key=key)


async def check_ledger(args: argparse.Namespace, config: Config) -> None:
    """Open (and so create or migrate) the books once before starting workers: a bad URL or
    key fails in one line, and the workers find the schema ready."""
    books = await open_books(args, config)
    await books.close()


def tune_garbage_collector() -> None:
    """Everything built so far (config, index, modules) lives as long as the process:
    freeze it out of the collector's walks, and collect the young generation less often,
    since a ping's objects are short-lived and reference counting frees them anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


async def reload_from(app: web.Application, limits: Limits, path: str) -> None:
    """SIGHUP: read the config file again; a bad file is logged and the running config kept."""
    try:
        config = load(path)
    except ConfigError as exc:
        log.error("reload refused", extra={"event": {"event": "reload", "status": "refused", "errors": [
            f"{where}: {reason}" for where, reason in exc.errors]}})
        return
    if await reload(app, config):
        limits.adopt(config.exchange)


async def serve(config: Config, args: argparse.Namespace) -> int:
    # Signals are caught before anything is announced: a SIGTERM sent as soon as the
    # "listening on" line appears must drain and exit 0, not kill the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"pingpost: cannot use --tls-cert/--tls-key: {exc}", file=sys.stderr)
            return 2
    store = make_store(args.redis)
    books = await open_books(args, config)
    try:  # the only file the app reads is the --ca-file
        app = make_app(config, store, ca_file=args.ca_file, ledger=books)
    except (OSError, ssl.SSLError) as exc:
        await books.close()
        print(f"pingpost: cannot use --ca-file {args.ca_file}: {exc}", file=sys.stderr)
        return 2
    fd_before, fd_limit = raise_fd_limit()
    limits = Limits.for_descriptors(config.exchange, fd_limit, app[EXCHANGE].metrics)
    grace = (config.exchange.auction_timeout_ms + config.exchange.post_timeout_ms) / 1000 + 1
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace, handle_signals=False)
    await runner.setup()
    try:
        listener = await listen(runner, limits, args.host, args.port, tls, args.reuse_port)
    except OSError as exc:
        print(f"pingpost: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    # Logged once the port is ours: a refused start is one line, nothing before it.
    log.info("descriptor limit", extra={"event": {"event": "fd_limit", "soft_before": fd_before, "soft": fd_limit,
                                                  "seller_connections": limits.max_connections}})
    scheme = "https" if tls else "http"
    port = listener.sockets[0].getsockname()[1]
    listener_lost = False

    def on_listener_lost() -> None:
        nonlocal listener_lost
        listener_lost = True
        stop.set()

    limits.watch(listener, on_listener_lost)
    reloads: set[asyncio.Task[None]] = set()

    def on_hangup() -> None:
        task = asyncio.ensure_future(reload_from(app, limits, args.config))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    # Like SIGTERM's, before the announcement: a SIGHUP sent on it must reload, not kill.
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    tune_garbage_collector()
    print(f"listening on {scheme}://{args.host}:{port}", flush=True)
    await stop.wait()
    drain(app)
    listener.close()
    limits.stop()
    await runner.cleanup()
    return 1 if listener_lost else 0
