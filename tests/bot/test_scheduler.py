from __future__ import annotations

import asyncio
import time

import pytest

from bot.jobs import Job, Options, Requester
from bot.scheduler import Scheduler

pytestmark = pytest.mark.asyncio


def job(user: str, n: int, count: int = 1) -> Job:
    return Job(f"{user}{n}", Requester("discord", "s", "c", user), "p", Options(count, 5.0, 1.0), 0, time.time())


class Harness:
    """A scheduler whose dispatches are recorded and finished by hand."""

    def __init__(self, capacity: int, max_running: int | None = None) -> None:
        self.dispatched: list[str] = []
        self.reports: list[dict[str, int]] = []
        self.scheduler = Scheduler(self._dispatch, self.reports.append, lambda job: max_running, capacity)
        self.task = asyncio.create_task(self.scheduler.run())

    async def _dispatch(self, job: Job) -> None:
        self.dispatched.append(job.id)

    async def settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    async def finish(self, *job_ids: str) -> None:
        for job_id in job_ids:
            self.scheduler.finish(job_id)
        await self.settle()

    def close(self) -> None:
        self.task.cancel()


async def test_round_robin_across_users_so_one_user_cannot_starve_others() -> None:
    h = Harness(capacity=1)
    h.scheduler.pause()
    for n in range(5):
        h.scheduler.push(job("a", n))
    h.scheduler.push(job("b", 0))
    h.scheduler.push(job("b", 1))
    h.scheduler.push(job("c", 0))
    assert [j.id for j in h.scheduler.waiting()] == ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
    h.scheduler.resume()
    await h.settle()
    order = list(h.dispatched)
    while len(order) < 8:
        await h.finish(order[-1])
        order = list(h.dispatched)
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
    h.close()


async def test_a_late_user_is_served_before_an_early_users_backlog() -> None:
    h = Harness(capacity=1)
    for n in range(4):
        h.scheduler.push(job("a", n))
    await h.settle()
    await h.finish("a0")  # a1 runs
    h.scheduler.push(job("b", 0))
    await h.finish("a1")
    assert h.dispatched == ["a0", "a1", "b0"]
    h.close()


async def test_dispatches_while_image_slots_are_free_and_waits_for_room() -> None:
    h = Harness(capacity=8)
    for user, count in (("a", 4), ("b", 3), ("c", 2), ("d", 1)):
        h.scheduler.push(job(user, 0, count))
    await h.settle()
    assert h.dispatched == ["a0", "b0"] and h.scheduler.images_in_flight == 7
    await h.finish("b0")  # 4 in flight: c0 (2) fits, then d0 (1)
    assert h.dispatched == ["a0", "b0", "c0", "d0"] and h.scheduler.images_in_flight == 7
    h.close()


async def test_the_next_fair_job_is_not_overtaken_by_smaller_ones() -> None:
    h = Harness(capacity=4)
    h.scheduler.push(job("a", 0, 3))
    await h.settle()
    h.scheduler.push(job("b", 0, 4))
    h.scheduler.push(job("c", 0, 1))
    await h.settle()
    assert h.dispatched == ["a0"]  # b0 needs 4 slots; c0 would fit but waits its turn
    await h.finish("a0")
    assert h.dispatched == ["a0", "b0"]
    await h.finish("b0")
    assert h.dispatched == ["a0", "b0", "c0"]
    h.close()


async def test_a_job_larger_than_capacity_runs_alone() -> None:
    h = Harness(capacity=4)
    h.scheduler.push(job("a", 0, 16))
    await h.settle()
    assert h.dispatched == ["a0"]
    h.close()


async def test_max_running_per_user_lets_other_users_through() -> None:
    h = Harness(capacity=16, max_running=1)
    h.scheduler.push(job("a", 0))
    h.scheduler.push(job("a", 1))
    h.scheduler.push(job("b", 0))
    await h.settle()
    assert h.dispatched == ["a0", "b0"]
    assert h.scheduler.running_for("discord:a") == 1 and h.scheduler.waiting_for("discord:a") == 1
    await h.finish("a0")
    assert h.dispatched == ["a0", "b0", "a1"]
    h.close()


async def test_positions_are_reported_only_when_they_change() -> None:
    h = Harness(capacity=1)
    assert h.scheduler.push(job("a", 0)) == 1
    await h.settle()  # a0 dispatched at once
    assert h.scheduler.push(job("a", 1)) == 1
    assert h.scheduler.push(job("a", 2)) == 2
    assert h.scheduler.push(job("b", 0)) == 1  # a was served last, so b goes first
    await h.settle()
    assert h.reports == [{"a1": 2, "a2": 3}]
    assert h.scheduler.remove("b0") is not None and h.scheduler.remove("b0") is None
    await h.settle()
    assert h.reports[-1] == {"a1": 1, "a2": 2}
    await h.finish("a0")
    assert h.reports[-1] == {"a2": 1}
    h.close()


async def test_pause_stops_dispatch_until_resume() -> None:
    h = Harness(capacity=4)
    h.scheduler.pause()
    h.scheduler.push(job("a", 0))
    await h.settle()
    assert h.dispatched == [] and len(h.scheduler) == 1
    h.scheduler.resume()
    await h.settle()
    assert h.dispatched == ["a0"] and len(h.scheduler) == 0
    h.close()
