"""A GPU worker of the Redis pool: `janus-bot worker --redis URL` on each GPU host, one per GPU.

It runs the usual supervised generator process (`python -m generator serve`, the one engine loop: the model is
loaded once and restarted after a crash) and feeds it from the shared queue: whenever image slots are free it
takes the next fair jobs (bot.redis_queue.TAKE), several at a time, so that jobs of different users and bot
instances share its batches. Started and Progress go to the job's bot instance as they happen; a finished job's
images are stored in Redis with an expiry (or written to a directory shared with the bots), its bot is told,
and only then is its stream entry acknowledged.

While it runs it refreshes its entries' idle time; entries of a worker that stopped refreshing (kill -9, a
lost machine) are claimed by the others once idle for the visibility timeout, and run again from the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bot.config import Secrets
from bot.generator import Generator
from bot.jobs import is_job_id
from bot.redis_queue import (
    FINISH,
    OUT_MAXLEN,
    REDIS_DOWN,
    TAKE,
    WORKERS,
    Arg,
    RedisLoginRefused,
    check_login,
    connect,
    ensure_group,
    result_path,
    retrying,
)
from generator import protocol as wire
from generator.cli import Parser
from generator.protocol import add_process_arguments

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 600.0  # how often a worker deletes result files older than the result ttl


@dataclass
class _Held:
    """A job this worker took from the stream and has not finished."""

    entry: str
    count: int
    instance: str


class PoolWorker:
    """Takes jobs from the shared queue into one generator while it has room, and reports them back."""

    def __init__(
        self,
        client: aioredis.Redis,
        generator: Generator,
        *,
        name: str,
        prefix: str = "janus",
        visibility_timeout: float = 60.0,
        result_ttl: float = 86400.0,  # for jobs queued without one (each bot sets [queue] result_ttl_s)
        poll_s: float = 0.1,
        shutdown_grace: float = 10.0,
        result_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.generator = generator
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.result_ttl = int(result_ttl)
        self.poll_s = poll_s
        self.shutdown_grace = shutdown_grace
        self.result_dir = result_dir  # shared with the bots: results go there instead of into Redis
        self.slots = 0
        self.counters = {"jobs_done": 0, "images_done": 0, "jobs_failed": 0, "jobs_cancelled": 0, "jobs_claimed": 0,
                         "jobs_duplicate": 0}  # done: results this worker recorded (a duplicate lost the race)
        self._p = f"{prefix}:"
        self._jobs = f"{prefix}:jobs"
        self._take = client.register_script(TAKE)
        self._finish = client.register_script(FINISH)
        self._held: dict[str, _Held] = {}
        self._taking = True
        self._info: dict[str, str] = {}
        self._wake = asyncio.Event()  # a job was queued or a slot freed: look at the queue now
        self._next_prune = 0.0
        self._heartbeat_s = max(0.2, visibility_timeout / 3)
        self._health_ttl = int(self._heartbeat_s * 3 + 5)  # seconds a silent worker's health stays listed
        self._reporting = asyncio.Lock()  # one health write at a time, so an older one never lands last

    @property
    def images_in_flight(self) -> int:
        """Image slots the held jobs use."""
        return sum(held.count for held in self._held.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then let running jobs finish for the grace period and stop the generator."""
        if self.result_dir is not None:
            self.result_dir.mkdir(parents=True, exist_ok=True)
        await check_login(self.client)  # a wrong password is said before minutes of loading the model
        ready = await self.generator.start()
        self.slots = ready.max_batch_images
        self._info = {"model": ready.model, "device": ready.device, "host": socket.gethostname(),
                      "pid": str(os.getpid()), "started_at": f"{time.time():.3f}"}
        try:
            await retrying("creating the job stream", lambda: ensure_group(self.client, self._jobs, WORKERS), stop)
        except REDIS_DOWN:  # stopped before Redis was ever reached: no job was taken
            log.info("worker %s: stopped before Redis could be reached", self.name)
            await self.generator.close()
            return
        with contextlib.suppress(*REDIS_DOWN):
            await self._report_health()
        log.info("worker %s: %s on %s, %d image slots", self.name, ready.model, ready.device, self.slots)
        pump = asyncio.create_task(self._pump())
        loops = [asyncio.create_task(self._feed()), asyncio.create_task(self._heartbeat()),
                 asyncio.create_task(self._listen())]
        await stop.wait()
        self._taking = False
        deadline = time.monotonic() + self.shutdown_grace
        while self._held and time.monotonic() < deadline and not pump.done():
            await asyncio.sleep(0.05)
        await self.generator.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pump, 5)
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, pump, return_exceptions=True)
        if self._held:  # marked idle for the whole timeout, so that the other workers claim them at once
            log.info("stopping with %d job(s) unfinished; other workers will claim them", len(self._held))
            entries: list[Any] = [held.entry for held in self._held.values()]
            with contextlib.suppress(*REDIS_DOWN):
                await self.client.xclaim(self._jobs, WORKERS, self.name, 0, entries,
                                         idle=int(self.visibility_timeout * 1000), justid=True)
        with contextlib.suppress(*REDIS_DOWN):
            await self.client.delete(f"{self._p}worker:{self.name}")

    # -- taking jobs --

    async def _feed(self) -> None:
        """Take jobs while image slots are free: first entries a dead worker left, then the next fair ones."""
        while self._taking:
            self._wake.clear()
            took = 0
            free = self.slots - self.images_in_flight
            if free > 0 and getattr(self.generator, "pid", 0) is not None:  # not while the process restarts
                try:
                    took = await self._reclaim(free)
                    free = self.slots - self.images_in_flight
                    if free > 0:
                        took += await self._take_fair(free)
                except REDIS_DOWN as error:
                    log.warning("Redis is unreachable (%s); taking jobs again in a second", error)
                    await asyncio.sleep(1.0)
                except Exception:
                    log.exception("taking jobs failed")
                    await asyncio.sleep(1.0)
            if not took:  # until told, or the next look for a silent worker's entries
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def _take_fair(self, free: int) -> int:
        idle = "1" if not self._held else "0"
        taken = await self._take(args=[self._p, self.name, free, idle])
        for entry, job_id, msg, instance, cancel in taken:
            await self._start(_s(entry), _s(job_id), msg, _s(instance), _s(cancel) == "1")
        return len(taken)

    async def _reclaim(self, free: int) -> int:
        """Claim entries idle longer than the visibility timeout: their worker stopped refreshing them."""
        reply = await self.client.xautoclaim(
            self._jobs, WORKERS, self.name, min_idle_time=int(self.visibility_timeout * 1000), start_id="0-0",
            count=max(1, free),
        )
        claimed = 0
        for entry, fields in reply[1]:
            entry_id = _s(entry)
            job_id = _s(fields[b"job"])
            if job_id in self._held:
                continue
            msg, instance, state, cancel = await self.client.hmget(
                f"{self._p}job:{job_id}", "msg", "instance", "state", "cancel"
            )
            if msg is None or _s(state) != "running":  # it ended after all, or expired: nothing to run
                await self.client.xack(self._jobs, WORKERS, entry_id)
                await self.client.xdel(self._jobs, entry_id)
                continue
            log.info("claimed job %s from a worker that stopped (entry %s)", job_id, entry_id)
            self.counters["jobs_claimed"] += 1
            await self._start(entry_id, job_id, msg, _s(instance), _s(cancel or b"") == "1")
            claimed += 1
        return claimed

    async def _start(self, entry: str, job_id: str, msg: Any, instance: str, cancelled: bool) -> None:
        if not is_job_id(job_id):  # not one a bot made: its id would go into a file name
            log.warning("dropped a job entry whose id is not one a bot makes: %r", job_id[:40])
            await self.client.xack(self._jobs, WORKERS, entry)
            await self.client.xdel(self._jobs, entry)
            return
        try:
            generate = wire.loads(msg)
        except (ValueError, TypeError) as error:
            log.warning("job %s cannot be read (%s); failing it", job_id, error)
            self._held[job_id] = _Held(entry, 0, instance)
            unreadable = "The job could not be read by the image generator; try again."
            await self._end(job_id, wire.JobFailed(job_id, unreadable))
            return
        slots = generate.count if isinstance(generate, wire.Generate) else 0  # a describe draws no images
        self._held[job_id] = _Held(entry, slots, instance)
        if cancelled:
            await self._end(job_id, wire.JobCancelled(job_id))
            return
        try:
            await self.generator.submit(generate)  # type: ignore[arg-type]
        except Exception:
            # Not refreshed any more, the entry is claimed by another worker after the visibility timeout.
            log.exception("could not hand job %s to the generator; leaving it to the other workers", job_id)
            del self._held[job_id]

    # -- reporting --

    async def _pump(self) -> None:
        """The generator's events to the jobs' bots; a final one stores the result and acknowledges the entry."""
        async for message in self.generator.events():
            job_id = getattr(message, "job_id", "")
            held = self._held.get(job_id)
            if held is None:
                continue
            try:
                if isinstance(message, wire.JobStarted | wire.JobProgress):
                    await self._publish(held, message)
                elif isinstance(message, wire.FINAL):
                    await self._end(job_id, message)
            except Exception:
                log.exception("could not report %s for job %s", type(message).__name__, job_id)

    async def _publish(self, held: _Held, message: wire.Message) -> None:
        """Send a passing event; one lost while Redis is down does no harm (the final one is never lost)."""
        with contextlib.suppress(*REDIS_DOWN):
            await self.client.xadd(f"{self._p}out:{held.instance}", {"msg": wire.dumps(message)},
                                   maxlen=OUT_MAXLEN, approximate=True)

    async def _end(self, job_id: str, message: wire.Message) -> None:
        held = self._held[job_id]
        if isinstance(message, wire.JobDone | wire.Described) and message.model is None:
            message = replace(message, model=self._info.get("model"))
        done = wire.dumps(message) if isinstance(message, wire.JobDone) else ""
        final = "" if done else wire.dumps(message)
        in_file = ""
        if done and self.result_dir is not None:
            await asyncio.to_thread(self._write_result, job_id, done)
            done, in_file = "", "1"
        args: list[Arg] = [self._p, job_id, held.entry, final, done, self.result_ttl, OUT_MAXLEN, in_file]
        recorded = await retrying(f"storing the result of job {job_id}", lambda: self._finish(args=args))
        del self._held[job_id]
        self._wake.set()
        if not recorded:  # another worker claimed it while this one was too slow to refresh it, and won
            log.info("job %s had already ended on another worker", job_id)
            self.counters["jobs_duplicate"] += 1
        elif isinstance(message, wire.JobDone):
            self.counters["jobs_done"] += 1
            self.counters["images_done"] += len(message.images)
        elif isinstance(message, wire.Described):
            self.counters["jobs_done"] += 1
        elif isinstance(message, wire.JobFailed):
            self.counters["jobs_failed"] += 1
        else:
            self.counters["jobs_cancelled"] += 1
        with contextlib.suppress(*REDIS_DOWN):  # the pool's counts are current, not a heartbeat behind
            await self._report_health()

    def _write_result(self, job_id: str, done: str) -> None:
        """The Done message into the shared directory, whole and on disk; files older than the ttl go."""
        assert self.result_dir is not None
        path = result_path(self.result_dir, job_id)
        partial = path.with_name(f".{path.name}.{self.name}.partial")
        with partial.open("w") as f:
            f.write(done)
            f.flush()
            os.fsync(f.fileno())
        partial.replace(path)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            old = time.time() - self.result_ttl
            for stale in self.result_dir.glob("*.json"):
                with contextlib.suppress(OSError):
                    if stale.stat().st_mtime < old:
                        stale.unlink()

    # -- keeping entries and health fresh --

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(*REDIS_DOWN):
                entries: list[Any] = [held.entry for held in self._held.values()]
                if entries:  # resets their idle time, so that nobody claims them
                    await self.client.xclaim(self._jobs, WORKERS, self.name, 0, entries, justid=True)
                await self._report_health()
            await asyncio.sleep(self._heartbeat_s)

    async def _report_health(self) -> None:
        key = f"{self._p}worker:{self.name}"
        async with self._reporting:
            fields: dict[Any, Any] = {**self._info, **{k: str(v) for k, v in self.counters.items()},
                                      "slots": str(self.slots), "images_in_flight": str(self.images_in_flight),
                                      "jobs_running": str(len(self._held)), "seen_at": f"{time.time():.3f}"}
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, self._health_ttl)
                await pipe.execute()

    async def _listen(self) -> None:
        """Wake up when a job is queued; stop jobs their users cancelled while this worker runs them."""
        queued, cancel = f"{self._p}queued", f"{self._p}cancel"
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(queued, cancel)
                    async for item in pubsub.listen():
                        if item.get("type") != "message":
                            continue
                        if _s(item["channel"]) == queued:
                            self._wake.set()
                        elif (job_id := _s(item["data"])) in self._held:
                            await self.generator.cancel(job_id)
            except REDIS_DOWN:
                await asyncio.sleep(1.0)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- command line -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's options, shared by `janus-bot worker` and `python -m bot.worker`."""
    parser.add_argument("--redis", metavar="URL", default=redis_url_from_env(),
                        help="the pool's Redis, redis://host:6379/0 (default: JANUS_BOT_REDIS_URL, which is where one "
                             "with a password belongs: a command line is visible to every user of the machine)")
    add_process_arguments(parser)
    parser.add_argument("--name", help="this worker's name in the pool (default: host name and process id)")
    parser.add_argument("--prefix", default="janus", help="Redis key prefix shared with the bots (default janus)")
    parser.add_argument("--visibility-timeout", type=float, default=60.0, metavar="S",
                        help="seconds after which a silent worker's jobs are claimed by others (default 60)")
    parser.add_argument("--result-dir", metavar="DIR",
                        help="write finished images to this directory shared with the bots ([queue] result_dir) "
                             "instead of into Redis")
    parser.add_argument("--poll", type=float, default=0.1, metavar="S", help="seconds between looks at the queue")
    parser.add_argument("--shutdown-grace", type=float, default=10.0, metavar="S",
                        help="on SIGTERM, seconds to let running jobs finish (default 10)")


async def serve(args: argparse.Namespace) -> int:
    """Run one worker until SIGTERM or SIGINT."""
    from bot.generator_client import GeneratorProcess

    extra = ["--step-delay", str(args.step_delay)] if args.step_delay else []
    generator = GeneratorProcess(
        args.model or None, device=args.device, dtype=args.dtype, quantize=args.quantize,
        max_batch_images=args.max_batch_images, preview_every=args.preview_every, compile=args.compile,
        extra_args=extra, shutdown_grace=args.shutdown_grace,
    )
    client = connect(args.redis)
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    worker = PoolWorker(client, generator, name=name, prefix=args.prefix,
                        visibility_timeout=args.visibility_timeout, poll_s=args.poll,
                        result_dir=Path(args.result_dir) if args.result_dir else None,
                        shutdown_grace=args.shutdown_grace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run(stop)
    finally:
        await client.aclose()
    return 0


def redis_url_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The pool's Redis URL from JANUS_BOT_REDIS_URL (or REDIS_URL), where a password may go."""
    return Secrets.from_env(os.environ if env is None else env).redis_url


def main(argv: Sequence[str] | None = None, prog: str = "python -m bot.worker") -> int:
    """`janus-bot worker`: serve until SIGTERM or Ctrl-C; a model that cannot load is one line and exit code 1."""
    from bot.generator_client import GeneratorStartError

    parser = Parser(prog=prog, description="A GPU worker of janus-bot's Redis pool, one per GPU.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.redis:
        parser.error("give the pool's Redis: --redis URL, or JANUS_BOT_REDIS_URL in the environment")
    if args.max_batch_images < 1:
        parser.error(f"--max-batch-images must be at least 1; you gave {args.max_batch_images}")
    if args.visibility_timeout <= 0:
        parser.error(f"--visibility-timeout must be more than 0; you gave {args.visibility_timeout:g}")
    if args.result_dir:
        try:
            Path(args.result_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"--result-dir: cannot make {args.result_dir!r} ({error.strerror or error})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(args))
    except GeneratorStartError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 1
    except RedisLoginRefused as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the generator loads, before serve's handlers are set
        print("janus-bot: interrupted while starting", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
