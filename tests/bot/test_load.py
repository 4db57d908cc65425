from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from bot.jobs import FINAL_EVENTS, Cancelled, Done, Event, Failed, Handle, Progress, Queued, Refused, Started, Status
from tests.bot.helpers import FakeClock, FakeGenerator, requester, running, settings

pytestmark = pytest.mark.asyncio

USERS, PER_USER, BURST = 50, 10, 4
REFUSALS = ("You already have 3 jobs waiting", "You can start 7 jobs every 10 minutes", "The queue is full")


async def test_500_submissions_from_50_users_each_end_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(4)
    config = settings(tmp_path, limits={"jobs_per_period": 7, "max_queued_per_user": 3, "queue_cap": 120,
                                       "server_share": 1.0})  # every user is in one server here
    fake = FakeGenerator(max_batch_images=16, steps=4, step_delay=0.005)
    handles: list[Handle] = []
    refusals: Counter[str] = Counter()
    streams: dict[str, list[Event]] = {}

    async def follow(handle: Handle) -> None:
        streams[handle.job.id] = [event async for event in handle]

    async def attempt(name: str, n: int) -> asyncio.Task[None] | None:
        prompt = "please fail" if rng.random() < 0.1 else f"{name} picture {n}"
        try:
            handle = await service.submit(requester(name), prompt, count=rng.randint(1, 4))
        except Refused as refusal:
            assert "try again" in str(refusal)  # each refusal says why and when
            refusals[next(r for r in REFUSALS if str(refusal).startswith(r))] += 1
            return None
        handles.append(handle)
        follower = asyncio.create_task(follow(handle))
        if rng.random() < 0.1:
            await service.cancel(requester(name), handle.job.id)
        return follower

    async def burst(name: str) -> None:
        for n in range(BURST):
            if follower := await attempt(name, n):
                followers.append(follower)

    async def patiently(name: str) -> None:  # one job at a time, each awaited
        for n in range(BURST, PER_USER):
            if follower := await attempt(name, n):
                await follower

    followers: list[asyncio.Task[None]] = []
    async with running(config, fake, clock=FakeClock()) as (service, _, store):
        # A burst while the generator holds every job fills the queue; then patient users empty their
        # buckets (the clock stands still, so they never refill).
        fake.hold.clear()
        await asyncio.gather(*(burst(f"user{i}") for i in range(USERS)))
        fake.hold.set()
        await asyncio.wait_for(asyncio.gather(*followers), 30)
        await asyncio.wait_for(asyncio.gather(*(patiently(f"user{i}") for i in range(USERS))), 30)
        jobs = {h.job.id: await store.job(h.job.id) for h in handles}

    assert len(handles) + sum(refusals.values()) == USERS * PER_USER
    assert all(refusals[reason] > 0 for reason in REFUSALS), refusals
    finals: Counter[type] = Counter()
    for job_id, events in streams.items():
        assert isinstance(events[0], Queued), events
        assert sum(isinstance(e, FINAL_EVENTS) for e in events) == 1 and isinstance(events[-1], FINAL_EVENTS)
        assert sum(isinstance(e, Started) for e in events) <= 1
        positions = [e.position for e in events if isinstance(e, Queued)]
        # Reported only when changed; it can grow when a newcomer (served less recently) is put ahead.
        assert all(a != b for a, b in zip(positions, positions[1:], strict=False)) and min(positions) >= 1
        final = events[-1]
        finals[type(final)] += 1
        if isinstance(final, Done):  # nothing lost on the way
            assert [type(e) for e in events if not isinstance(e, Queued)] == [Started, *[Progress] * 4, Done]
        stored = jobs[job_id]
        assert stored is not None and stored.status is {Done: Status.DONE, Failed: Status.FAILED}.get(
            type(final), Status.CANCELLED
        )
    assert len(streams) == len(handles)
    assert finals[Done] > 200 and finals[Failed] > 10 and finals[Cancelled] > 10
    submitted = [m.job_id for m in fake.submitted]
    assert len(submitted) == len(set(submitted))  # no job generated twice
    assert fake.peak_in_flight <= 16
