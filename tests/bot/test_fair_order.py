"""The fair order (bot/scheduler.py says what it is), tested once against both of its implementations: the
local Scheduler and the Redis pool's Lua scripts. Same scenario, same order, through the service."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.redis_queue import connect
from bot.service import Service
from bot.worker import PoolWorker
from generator import protocol as wire
from tests.bot.helpers import OWNER, FakeGenerator, requester, running, running_pool, settings, until
from tests.bot.redis_server import RedisServer

pytestmark = pytest.mark.asyncio
LIMITS = {"max_queued_per_user": 10, "max_running_per_user": 16, "jobs_per_period": 100}


class Gated(FakeGenerator):
    """Runs a job (named by its prompt) only once the test opens its gate; logs every job it is handed."""

    def __init__(self, order: list[str], gates: defaultdict[str, asyncio.Event], **options: int) -> None:
        super().__init__(steps=1, **options)
        self.order = order
        self.gates = gates

    async def submit(self, msg: wire.Generate) -> None:
        self.order.append(msg.prompt)
        await super().submit(msg)

    async def _run(self, msg: wire.Generate) -> None:
        await self.gates[msg.prompt].wait()
        await super()._run(msg)


class Scene:
    """A service on one backend whose generators run jobs when the test says."""

    def __init__(self, service: Service, order: list[str], gates: defaultdict[str, asyncio.Event]) -> None:
        self.service = service
        self.order = order  # prompts in the order the generators were handed them
        self.gates = gates
        self.ids: dict[str, str] = {}

    async def submit(self, user: str, name: str) -> None:
        handle = await self.service.submit(requester(user), name, count=1)
        self.ids[name] = handle.job.id

    async def positions(self) -> list[str]:
        """Waiting jobs by their place in the queue, as each job's status tells it."""
        places = {name: (await self.service.status(job_id)) for name, job_id in self.ids.items()}
        waiting = {name: s.position for name, s in places.items() if s is not None and s.position is not None}
        assert sorted(waiting.values()) == list(range(1, len(waiting) + 1)), waiting
        return sorted(waiting, key=waiting.__getitem__)

    async def started(self, n: int) -> None:
        await until(lambda: len(self.order) >= n, f"{n} jobs to start (started: {self.order})")
        await asyncio.sleep(0.2)  # and no more
        assert len(self.order) == n, self.order

    def finish(self, name: str) -> None:
        self.gates[name].set()


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None for this machine's queue, or the URL of a fresh redis-server for the pool."""
    if request.param == "local":
        yield None
        return
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def scene(tmp_path: Path, url: str | None, *, slots: int, workers: int = 1, **limits: int
                ) -> AsyncIterator[Scene]:
    """A service with `workers` generators of `slots` image slots (one generator for the local queue)."""
    config = settings(tmp_path, limits={**LIMITS, **limits})
    order: list[str] = []
    gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
    fake = Gated(order, gates, max_batch_images=slots)
    run = running(config, fake) if url is None else running_pool(config, fake, url=url)
    async with run as (service, _, _), contextlib.AsyncExitStack() as more:
        for n in range(1, workers if url is not None else 1):
            client = connect(url or "")
            more.push_async_callback(client.aclose)
            extra = PoolWorker(client, Gated(order, gates, max_batch_images=slots), name=f"w{n + 1}", poll_s=0.02,
                               shutdown_grace=0)
            stop = asyncio.Event()
            task = asyncio.create_task(extra.run(stop))
            more.push_async_callback(lambda task=task: task)
            more.callback(stop.set)
        yield Scene(service, order, gates)
        for gate in gates.values():  # let whatever still runs end, so the workers stop at once
            gate.set()


async def test_round_robin_across_users_in_the_order_each_was_last_served(tmp_path: Path, backend: str | None) -> None:
    async with scene(tmp_path, backend, slots=1) as s:
        await s.service.admin.pause(OWNER)
        for name in ("a0", "a1", "a2", "a3", "a4"):
            await s.submit("a", name)
        await s.submit("b", "b0")
        await s.submit("b", "b1")
        await s.submit("c", "c0")
        fair = ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
        assert await s.positions() == fair
        await s.service.admin.resume(OWNER)
        for n in range(1, len(fair) + 1):  # one image slot: each job runs alone, in the fair order
            await s.started(n)
            s.finish(s.order[-1])
        assert s.order == fair


async def test_a_user_who_arrives_late_goes_before_an_early_users_backlog(tmp_path: Path, backend: str | None) -> None:
    async with scene(tmp_path, backend, slots=1) as s:
        for name in ("a0", "a1", "a2", "a3"):
            await s.submit("a", name)
        await s.started(1)
        s.finish("a0")
        await s.started(2)
        await s.submit("b", "b0")
        assert await s.positions() == ["b0", "a2", "a3"]
        s.finish("a1")
        await s.started(3)
        assert s.order == ["a0", "a1", "b0"]


async def test_the_next_fair_job_waits_for_room_and_is_not_overtaken(tmp_path: Path, backend: str | None) -> None:
    async with scene(tmp_path, backend, slots=4) as s:
        await s.service.admin.pause(OWNER)
        await s.submit("a", "a0")
        await s.service.admin.resume(OWNER)
        await s.started(1)
        big = await s.service.submit(requester("b"), "b0", count=4)  # needs every slot
        s.ids["b0"] = big.job.id
        await s.submit("c", "c0")  # would fit beside a0, but b0 is first
        await asyncio.sleep(0.2)
        assert s.order == ["a0"] and await s.positions() == ["b0", "c0"]
        s.finish("a0")
        await s.started(2)
        s.finish("b0")
        await s.started(3)
        assert s.order == ["a0", "b0", "c0"]


async def test_max_running_per_user_holds_across_every_generator(tmp_path: Path, backend: str | None) -> None:
    async with scene(tmp_path, backend, slots=4, workers=2, max_running_per_user=1) as s:
        for name in ("a0", "a1", "a2"):
            await s.submit("a", name)
        await s.submit("b", "b0")
        await s.started(2)  # a1 waits although slots are free (on both workers, in the pool)
        assert sorted(s.order) == ["a0", "b0"] and await s.positions() == ["a1", "a2"]
        s.finish("a0")
        await s.started(3)
        s.finish("b0")
        await asyncio.sleep(0.2)
        assert s.order[2:] == ["a1"]
        s.finish("a1")
        await s.started(4)
        assert s.order[3:] == ["a2"]
