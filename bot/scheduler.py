"""The fair order, defined here once: round-robin across users, dispatching whenever image slots are free.

bot/redis_queue.py's Lua scripts (ORDER, TAKE) implement the same order for the Redis pool;
tests/bot/test_fair_order.py runs the same scenarios against both.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from bot.jobs import Job

log = logging.getLogger(__name__)


class Scheduler:
    """Waiting jobs per user, served round-robin into the generator's free image slots.

    Users are served least recently served first: a newcomer goes ahead of users already served, and a
    user whose queue ran dry does not jump the line by queueing again.

    A job is dispatched when the images in flight plus its own fit in `capacity` (or nothing is in
    flight), and its user runs fewer than `max_running(job)` jobs. The next fair job waits for room
    rather than letting smaller jobs overtake it, so large jobs are never starved.
    """

    def __init__(
        self,
        dispatch: Callable[[Job], Awaitable[None]],
        on_positions: Callable[[dict[str, int]], None],
        max_running: Callable[[Job], int | None],
        capacity: int = 1,
    ) -> None:
        self.capacity = capacity
        self.images_in_flight = 0
        self.paused = False
        self._dispatch = dispatch
        self._on_positions = on_positions
        self._max_running = max_running
        self._queues: dict[str, deque[Job]] = {}
        self._order: deque[str] = deque()  # users with waiting jobs, least recently served first
        self._served: dict[str, int] = {}  # user -> dispatch number of their latest job
        self._dispatches = 0
        self._running: dict[str, Job] = {}
        self._running_by: Counter[str] = Counter()
        self._reported: dict[str, int] = {}
        self._wake = asyncio.Event()

    # -- what the service tells it --

    def push(self, job: Job) -> int:
        """Queue a job; its position (1 is next), which counts as reported."""
        user = job.requester.user_key
        if user not in self._queues:
            self._queues[user] = deque()
            served = self._served.get(user, -1)
            at = next((i for i, u in enumerate(self._order) if self._served.get(u, -1) > served), len(self._order))
            self._order.insert(at, user)
        self._queues[user].append(job)
        position = self.positions()[job.id]
        self._reported[job.id] = position
        self._wake.set()
        return position

    def remove(self, job_id: str) -> Job | None:
        """Take a waiting job out of the queue; None if it is not waiting."""
        for user, jobs in self._queues.items():
            for job in jobs:
                if job.id == job_id:
                    jobs.remove(job)
                    if not jobs:
                        del self._queues[user]
                        self._order.remove(user)
                    self._reported.pop(job_id, None)
                    self._wake.set()
                    return job
        return None

    def finish(self, job_id: str) -> None:
        """A dispatched job ended (done, failed or cancelled): free its image slots."""
        job = self._running.pop(job_id, None)
        if job is not None:
            self.images_in_flight -= job.slots
            self._running_by[job.requester.user_key] -= 1
            self._wake.set()

    def pause(self) -> None:
        """Dispatch nothing new; running jobs go on."""
        self.paused = True

    def resume(self) -> None:
        """Dispatch again."""
        self.paused = False
        self._wake.set()

    # -- what it knows --

    def waiting(self) -> list[Job]:
        """Waiting jobs in the order they would be dispatched if nothing changed."""
        order = [self._queues[user] for user in self._order]
        result: list[Job] = []
        depth = 0
        while order:
            order = [jobs for jobs in order if len(jobs) > depth]
            result += [jobs[depth] for jobs in order]
            depth += 1
        return result

    def positions(self) -> dict[str, int]:
        """Each waiting job's position, 1 being next."""
        return {job.id: i for i, job in enumerate(self.waiting(), 1)}

    def running(self) -> list[Job]:
        """Dispatched jobs that have not ended."""
        return list(self._running.values())

    def is_running(self, job_id: str) -> bool:
        """Whether the job has been dispatched and has not ended."""
        return job_id in self._running

    def waiting_for(self, user_key: str) -> int:
        """How many jobs the user has waiting."""
        return len(self._queues.get(user_key, ()))

    def running_for(self, user_key: str) -> int:
        """How many of the user's jobs are dispatched."""
        return self._running_by[user_key]

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._queues.values())

    # -- the loop --

    def _fits(self, job: Job) -> bool:
        return self.images_in_flight == 0 or self.images_in_flight + job.slots <= self.capacity

    def _next(self) -> Job | None:
        for i, user in enumerate(self._order):
            job = self._queues[user][0]
            limit = self._max_running(job)
            if limit is not None and self._running_by[user] >= limit:
                continue  # this user waits; the next user is served
            if not self._fits(job):
                return None
            del self._order[i]
            self._queues[user].popleft()
            self._dispatches += 1
            self._served[user] = self._dispatches
            if self._queues[user]:
                self._order.append(user)
            else:
                del self._queues[user]
            return job
        return None

    def _report(self) -> None:
        positions = self.positions()
        changed = {job_id: p for job_id, p in positions.items() if self._reported.get(job_id) != p}
        self._reported = positions
        if changed:
            self._on_positions(changed)

    async def run(self) -> None:
        """Dispatch jobs as room appears, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self.paused and (job := self._next()) is not None:
                self._running[job.id] = job
                self._running_by[job.requester.user_key] += 1
                self.images_in_flight += job.slots
                self._reported.pop(job.id, None)
                try:
                    await self._dispatch(job)
                except Exception:  # the dispatcher reports its own failures; keep serving the others
                    log.exception("dispatching job %s failed", job.id)
                    self.finish(job.id)
            self._report()
