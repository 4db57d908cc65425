"""Shared fakes for the bot's tests: a fast in-process generator, requesters, a running service."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from PIL import Image

from bot.config import Settings
from bot.generator_client import GeneratorProcess
from bot.jobs import Requester
from bot.local_queue import LocalQueue
from bot.ratelimit import Clock
from bot.service import Service
from bot.store import Store
from generator import protocol as wire

PNG_SIZE = 8


def free_port() -> int:
    """A TCP port nothing listens on right now (a connection to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png(seed: int) -> bytes:
    """A small solid-colour PNG that depends on the seed."""
    out = io.BytesIO()
    Image.new("RGB", (PNG_SIZE, PNG_SIZE), (seed % 256, seed // 256 % 256, 128)).save(out, format="PNG")
    return out.getvalue()


class FakeGenerator:
    """bot.generator.Generator without a model: each job takes `steps` steps of `step_delay` seconds.

    Prompts containing "fail" end with Failed. `hold` (an Event) keeps every job at step 0 until set.
    Token grids are the forced prefix followed by seed-derived ids, so variation tests can read them.
    """

    def __init__(
        self, *, max_batch_images: int = 16, grid_size: int = 4, steps: int = 4, step_delay: float = 0.0,
        prompt_tokens: int | None = None, tokenizer: str | None = None,
    ) -> None:
        self.max_batch_images = max_batch_images
        self.grid_size = grid_size
        self.steps = steps
        self.step_delay = step_delay
        self.prompt_tokens, self.tokenizer = prompt_tokens, tokenizer  # what Ready says of prompt lengths
        self.hold = asyncio.Event()
        self.hold.set()
        self.submitted: list[wire.Generate] = []
        self.described: list[wire.Describe] = []
        self.cancels: list[str] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._cancelled: set[str] = set()
        self._events: asyncio.Queue[wire.Message | None] = asyncio.Queue()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.closed = False

    async def start(self) -> wire.Ready:
        return wire.Ready("fake", "cpu", PNG_SIZE, self.grid_size, self.max_batch_images, self.prompt_tokens,
                          self.tokenizer)

    async def submit(self, msg: wire.Work) -> None:
        assert msg.job_id not in self._tasks, f"{msg.job_id} submitted twice"
        if isinstance(msg, wire.Describe):  # read, not drawn: no image slot, prompts derived from the seed
            self.described.append(msg)
            self._tasks[msg.job_id] = asyncio.create_task(self._describe(msg))
            return
        self.submitted.append(msg)
        self.in_flight += msg.count
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._tasks[msg.job_id] = asyncio.create_task(self._run(msg))

    async def cancel(self, job_id: str) -> None:
        self.cancels.append(job_id)
        self._cancelled.add(job_id)

    async def close(self) -> None:
        self.closed = True
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[wire.Message]:
        while (message := await self._events.get()) is not None:
            yield message

    def tokens(self, msg: wire.Generate, index: int) -> list[int]:
        """The token grid the fake makes for image `index` of a job."""
        size = self.grid_size**2
        prefix = msg.prefix[index] if msg.prefix else []
        return prefix + [(msg.seed + index + i) % 16384 for i in range(len(prefix), size)]

    async def _describe(self, msg: wire.Describe) -> None:
        await self.hold.wait()
        self._events.put_nowait(wire.JobStarted(msg.job_id))
        prompts = [f"a fake prompt {msg.seed + i}" for i in range(msg.count)]
        self._events.put_nowait(wire.Described(msg.job_id, prompts, [[msg.seed + i, i] for i in range(msg.count)]))

    async def _run(self, msg: wire.Generate) -> None:
        try:
            await self.hold.wait()
            self._events.put_nowait(wire.JobStarted(msg.job_id))
            for step in range(1, self.steps + 1):
                await asyncio.sleep(self.step_delay)
                if msg.job_id in self._cancelled:
                    self._events.put_nowait(wire.JobCancelled(msg.job_id))
                    return
                preview = png(step) if step % 2 == 0 else None
                self._events.put_nowait(wire.JobProgress(msg.job_id, step, self.steps, preview))
            if "fail" in msg.prompt:
                self._events.put_nowait(wire.JobFailed(msg.job_id, "The fake generator was told to fail."))
                return
            images = [png(msg.seed + i) for i in range(msg.count)]
            tokens = [self.tokens(msg, i) for i in range(msg.count)]
            self._events.put_nowait(wire.JobDone(msg.job_id, images, tokens))
        finally:
            self.in_flight -= msg.count


def paced_generator(model_dir: Path, *, max_batch_images: int = 16, step_delay: float = 0.02) -> GeneratorProcess:
    """The real generator process on a CPU checkpoint, sleeping after each step as a GPU's step loop waits.

    A tiny model's steps take milliseconds and the picture thread runs below the step loop's priority, so on a
    busy 2-core machine a job can end before any preview is drawn; paced steps leave the CPU free between them.
    """
    return GeneratorProcess(str(model_dir), device="cpu", max_batch_images=max_batch_images,
                            extra_args=["--step-delay", str(step_delay)])


def requester(user: str = "alice", server: str = "s1", *, admin: bool = False, platform: str = "discord") -> Requester:
    """Someone in channel c1 of a server."""
    return Requester(platform, server, "c1", user, admin)


OWNER = Requester("discord", "s1", "c1", "owner")


def settings(data_dir: Path, **sections: dict[str, Any]) -> Settings:
    """Settings for tests: data under `data_dir`, the bot admin `discord:owner`, no shutdown grace."""
    data: dict[str, Any] = {"bot": {"data_dir": str(data_dir), "admins": ["discord:owner"], "shutdown_grace_s": 0}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def running(
    config: Settings, generator: FakeGenerator | None = None, *, clock: Clock = time.monotonic, **kwargs: Any
) -> AsyncIterator[tuple[Service, FakeGenerator, Store]]:
    """A started service on this machine's queue with a fake generator and a fresh store; closed on the way out."""
    fake = generator or FakeGenerator()
    async with await Store.open(config.bot.data_dir) as store:
        service = Service(config, store, LocalQueue(fake, clock=clock), clock=clock, **kwargs)
        await service.start()
        try:
            yield service, fake, store
        finally:
            await service.close()


@contextlib.asynccontextmanager
async def running_pool(
    config: Settings, generator: FakeGenerator | None = None, *, url: str, **kwargs: Any
) -> AsyncIterator[tuple[Service, FakeGenerator, Store]]:
    """A started service on the Redis pool at `url`, served by one in-process worker on a fake generator."""
    from bot.redis_queue import RedisQueue, connect
    from bot.worker import PoolWorker

    fake = generator or FakeGenerator()
    config = config.model_copy(update={
        "queue": config.queue.model_copy(update={"backend": "redis", "redis_url": url, "poll_s": 0.05}),
        "generator": config.generator.model_copy(update={"max_batch_images": fake.max_batch_images}),
    })
    worker_client = connect(url)
    worker = PoolWorker(worker_client, fake, name="w1", poll_s=0.02, shutdown_grace=0)
    stop = asyncio.Event()
    serving = asyncio.create_task(worker.run(stop))
    try:
        async with await Store.open(config.bot.data_dir) as store:
            queue = RedisQueue(connect(url), max_batch_images=fake.max_batch_images, poll_s=0.05)
            service = Service(config, store, queue, **kwargs)
            await service.start()
            try:
                yield service, fake, store
            finally:
                await service.close()
    finally:
        stop.set()
        await serving
        await worker_client.aclose()


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until `check()` holds, or fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
