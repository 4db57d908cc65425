"""The running bot assembled from settings: store, generator and service, with a clean shutdown on signals."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from bot.config import ConfigError, Settings, load_settings
from bot.jobqueue import JobQueue
from bot.jobs import Handle
from bot.ratelimit import Clock
from bot.service import Hook, Service
from bot.store import Store
from generator.protocol import QUANTIZE_MODES

if TYPE_CHECKING:  # imported when used: the bot's side of a Redis pool never starts a generator
    from bot.generator_client import GeneratorProcess

log = logging.getLogger(__name__)


def generator_process(settings: Settings) -> GeneratorProcess:
    """The supervised `python -m generator serve` process for the configured model."""
    from bot.generator_client import GeneratorProcess

    return GeneratorProcess(
        settings.model.name or None,
        device=settings.model.device,
        dtype=settings.model.dtype,
        quantize=settings.model.quantize,
        max_batch_images=settings.generator.max_batch_images,
        compile=settings.generator.compile,
        start_timeout=settings.generator.start_timeout_s,
        shutdown_grace=settings.bot.shutdown_grace_s,
    )


def local_queue(settings: Settings, clock: Clock = time.monotonic) -> JobQueue:
    """This machine's queue, running jobs in one supervised generator process."""
    from bot.local_queue import LocalQueue

    return LocalQueue(generator_process(settings), clock=clock)


def redis_queue(settings: Settings) -> JobQueue:
    """This instance's side of the job queue shared through Redis with other bots and the GPU workers."""
    from bot.redis_queue import RedisQueue, connect

    q = settings.queue
    return RedisQueue(
        connect(settings.secrets.redis_url or q.redis_url),
        instance=q.instance,
        prefix=q.prefix,
        max_batch_images=settings.generator.max_batch_images,
        result_ttl=q.result_ttl_s,
        poll_s=q.poll_s,
        result_dir=Path(q.result_dir) if q.result_dir else None,
    )


def configured_queue(settings: Settings) -> JobQueue:
    """The queue `[queue] backend` asks for: this machine's generator, or the Redis pool."""
    return redis_queue(settings) if settings.queue.backend == "redis" else local_queue(settings)


class App:
    """`async with App(settings) as app:` opens the store, starts the job queue and the service; adapters
    use `app.service`. Leaving the block shuts down in order: stop accepting, finish or persist, close."""

    def __init__(self, settings: Settings, queue: JobQueue | None = None, *, on_recovered: Hook | None = None) -> None:
        self.settings = settings
        self._queue = queue
        self._on_recovered = on_recovered
        self._lock: IO[str] | None = None
        self._store: Store | None = None
        self._service: Service | None = None

    @property
    def service(self) -> Service:
        """The service adapters call."""
        assert self._service is not None, "use App inside `async with`"
        return self._service

    async def __aenter__(self) -> App:
        data_dir = self.settings.bot.data_dir
        try:
            self._lock = lock_data_dir(data_dir)
            self._store = await Store.open(data_dir)
        except (OSError, sqlite3.Error) as error:  # a file in the way, no permission, a damaged database
            self._unlock()
            why = error.strerror if isinstance(error, OSError) and error.strerror else f"janus-bot.db: {error}"
            raise ConfigError(f"bot.data_dir: cannot keep the bot's data in {str(data_dir)!r} ({why})") from None
        queue = self._queue or configured_queue(self.settings)
        self._service = Service(self.settings, self._store, queue, on_recovered=self._on_recovered)
        try:
            await self._service.start()
        except BaseException:
            await queue.close(0)
            await self._store.close()
            self._unlock()
            raise
        log.info("ready: %s", self._service.backend.where)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._service is not None:
                await self._service.close()
        finally:
            if self._store is not None:
                await self._store.close()
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases its lock
            self._lock = None


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold `janus-bot.lock` in `data_dir` while the returned file is open: one bot to a data directory.

    Two bots on one database would each re-queue the other's running jobs at start and deliver them
    twice. The kernel drops the lock when the process ends, however it ends (kill -9 included).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "janus-bot.lock", "a+")  # noqa: SIM115 (held open for the bot's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(f"bot.data_dir: another janus-bot (pid {holder}) is using {str(data_dir)!r}; stop it, "
                          f"or give this one a data_dir of its own") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


async def until_signalled() -> signal.Signals:
    """Wait for SIGTERM or SIGINT; the one that came."""
    loop = asyncio.get_running_loop()
    came: asyncio.Future[signal.Signals] = loop.create_future()

    def arrived(sig: signal.Signals) -> None:
        if not came.done():
            came.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, arrived, sig)
    try:
        return await came
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def banner(service: Service, adapters: Sequence[Any]) -> str:
    """What runs where, for the operator starting the bot: the model and device, then each adapter."""
    lines = [f"janus-bot is running: {service.backend.where}"]
    lines += [f"  {adapter.platform}: {getattr(adapter, 'where', 'connected')}" for adapter in adapters]
    return "\n".join([*lines, "Stop it with Ctrl-C."])


async def serve(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Run the bot and its adapters until SIGTERM or SIGINT, then shut down gracefully."""
    from bot.adapters import configured_adapters

    adapters = configured_adapters(settings, os.environ if env is None else env)
    by_platform = {adapter.platform: adapter for adapter in adapters}

    async def recovered(handle: Handle) -> None:
        adapter = by_platform.get(handle.job.platform)
        if adapter is not None:
            await adapter.recovered(handle)

    for adapter in adapters:  # ports and tokens first: a mistake costs seconds, not a model's loading time
        await getattr(adapter, "check", _nothing)()
    async with App(settings, on_recovered=recovered) as app:
        started = []
        try:
            for adapter in adapters:
                await adapter.start(app.service)
                started.append(adapter)
            print(banner(app.service, started), flush=True)
            sig = await until_signalled()
            log.info("%s: shutting down", sig.name)
        finally:
            for adapter in reversed(started):  # stop taking commands first; the service then finishes its jobs
                await adapter.close()


async def _nothing() -> None:
    """The check of an adapter that has none."""


# -- `janus-bot run` --


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `janus-bot run`; flags override the config file."""
    parser.description = (
        "Run the bot until SIGTERM or Ctrl-C: Discord when DISCORD_TOKEN is set, Slack when SLACK_BOT_TOKEN and "
        "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode) are, and the web page and API on "
        "http://127.0.0.1:8080/ when no chat platform is configured (or with --web-port). Tokens come from the "
        "environment only (also as JANUS_BOT_<NAME>); settings from the config file (config.example.toml "
        "lists every key)."
    )
    parser.add_argument("-c", "--config", help="TOML settings file (default: config.toml if present, else defaults)")
    parser.add_argument("--model", help="hub id or checkpoint directory (overrides [model] name; default: the "
                                        "built-in demo model)")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES,
                        help="int8 or int4 weights for the language model's layers, none for the dtype's (overrides "
                             "[model] quantize; default none); `janus-bot plan` says what fits your GPU")
    parser.add_argument("--data-dir", help="database and images directory (overrides [bot] data_dir; default data)")
    parser.add_argument("--web-port", type=int, metavar="N",
                        help="serve the web playground and API on port N (0: any free port), chat platforms or not")
    parser.add_argument("--redis", metavar="URL",
                        help='share the job queue in Redis with other bots and GPU workers ([queue] backend = '
                             '"redis"; a URL with a password belongs in JANUS_BOT_REDIS_URL)')
    parser.add_argument("--instance", help="this bot's name in the Redis pool, one per platform or shard")


def run(args: argparse.Namespace) -> int:
    """`janus-bot run`: the exit code (2: a mistake in the settings; 1: a platform or the generator could not
    start; 130: interrupted while starting)."""
    from bot.adapters import PlatformUnreachable
    from bot.generator_client import GeneratorStartError

    path = Path(args.config) if args.config else Path("config.toml")
    try:
        settings = load_settings(path if args.config or path.exists() else None)
        if args.web_port is not None and not 0 <= args.web_port <= 65535:
            raise ConfigError(f"--web-port: {args.web_port} is not a port; give 0 to 65535")
    except ConfigError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 2
    settings = _with_flags(settings, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except ConfigError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 2
    except (GeneratorStartError, PlatformUnreachable) as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before start-up finished (after it, Ctrl-C is a graceful shutdown)
        print("janus-bot: interrupted while starting", file=sys.stderr)
        return 130
    return 0


def _with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with the command line's flags applied over the file's."""
    model = {key: value for key, value in (("name", args.model), ("quantize", args.quantize)) if value is not None}
    if model:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update=model)})
    if args.data_dir is not None:
        bot = settings.bot.model_copy(update={"data_dir": Path(args.data_dir)})
        settings = settings.model_copy(update={"bot": bot})
    if args.web_port is not None:
        web = settings.web.model_copy(update={"enabled": True, "port": args.web_port})
        settings = settings.model_copy(update={"web": web})
    if args.redis is not None or args.instance is not None:
        queue = settings.queue.model_copy(update={"backend": "redis"} if args.redis is None else
                                          {"backend": "redis", "redis_url": args.redis})
        if args.instance is not None:
            queue = queue.model_copy(update={"instance": args.instance})
        settings = settings.model_copy(update={"queue": queue})
    return settings
