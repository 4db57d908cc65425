"""The job queue of one machine: the fair scheduler, the rate limiter and one supervised generator."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from bot.config import LimitSettings
from bot.generator import Generator
from bot.jobqueue import Backend
from bot.jobs import Job
from bot.ratelimit import Clock, RateLimiter
from bot.scheduler import Scheduler
from generator import protocol as wire

log = logging.getLogger(__name__)

GENERATOR_GONE = "The image generator stopped before finishing this job; please try again."


class LocalQueue:
    """bot.jobqueue.JobQueue on this machine: jobs wait in the Scheduler and run in one generator's slots."""

    def __init__(self, generator: Generator, *, clock: Clock = time.monotonic) -> None:
        self._generator = generator
        self._limiter = RateLimiter(clock)
        self._scheduler = Scheduler(self._dispatch, self._on_positions, self._max_running_of)
        self._ready: wire.Ready | None = None
        self._messages: dict[str, wire.Work] = {}  # admitted jobs not yet handed to the generator
        self._max_running: dict[str, int | None] = {}  # job -> running jobs its user may have (None: exempt)
        self._cancelling: set[str] = set()
        self._events: asyncio.Queue[wire.Message | None] = asyncio.Queue()
        self._pump_task: asyncio.Task[None] | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the generator (the model loads) and the scheduler."""
        self._ready = await self._generator.start()
        self._scheduler.capacity = self._ready.max_batch_images
        self._pump_task = asyncio.create_task(self._pump())
        self._scheduler_task = asyncio.create_task(self._scheduler.run())

    @property
    def backend(self) -> Backend:
        ready = self._ready
        if ready is None:
            return Backend("no model yet", False, None, None, 0)
        up = not self._closing and getattr(self._generator, "pid", 0) is not None  # None while it restarts
        where = f"{ready.model} on {ready.device}, {ready.max_batch_images} image slots"
        restarts = getattr(self._generator, "restarts", 0)
        return Backend(where, up, ready.model, ready.device, ready.max_batch_images, restarts, ready.prompt_tokens,
                       ready.tokenizer)

    @property
    def paused(self) -> bool:
        return self._scheduler.paused

    # -- admission --

    async def admit(self, job: Job, msg: wire.Work, limits: LimitSettings, *, exempt: bool) -> int:
        """Take a token from the user's bucket and queue the job, or raise Refused; no await in between."""
        r = job.requester
        waiting = self._scheduler.waiting()
        self._limiter.admit(
            f"{r.platform}:{r.server}:{r.user}",
            limits,
            admin=exempt,
            queued=self._scheduler.waiting_for(r.user_key),
            queue_total=len(waiting),
            server_total=sum((j.requester.platform, j.requester.server) == (r.platform, r.server) for j in waiting),
        )
        return self._push(job, msg, None if exempt else limits.max_running_per_user)

    async def resume(self, job: Job, msg: wire.Work, limits: LimitSettings, *, exempt: bool) -> int:
        return self._push(job, msg, None if exempt else limits.max_running_per_user)

    def _push(self, job: Job, msg: wire.Work, max_running: int | None) -> int:
        self._messages[job.id] = msg
        self._max_running[job.id] = max_running
        return self._scheduler.push(job)

    async def cancel(self, job_id: str) -> bool:
        if self._scheduler.remove(job_id) is not None:
            self._forget(job_id)
            self._events.put_nowait(wire.JobCancelled(job_id))
            return True
        if self._scheduler.is_running(job_id) and job_id not in self._cancelling:
            self._cancelling.add(job_id)
            await self._generator.cancel(job_id)
        return False

    async def set_paused(self, paused: bool) -> None:
        if paused:
            self._scheduler.pause()
        else:
            self._scheduler.resume()

    async def set_ban(self, platform: str, server: str, user: str, banned: bool) -> None:
        """Nothing to share: this bot's service checks its own bans."""

    def positions(self) -> dict[str, int]:
        return self._scheduler.positions()

    async def position(self, job_id: str) -> int | None:
        return self._scheduler.positions().get(job_id)

    async def metrics(self) -> str:
        return ""

    # -- running --

    async def events(self) -> AsyncIterator[wire.Message]:
        while (message := await self._events.get()) is not None:
            yield message

    def _on_positions(self, positions: dict[str, int]) -> None:
        for job_id, position in positions.items():
            self._events.put_nowait(wire.Waiting(job_id, position))

    async def _dispatch(self, job: Job) -> None:
        try:
            await self._generator.submit(self._messages.pop(job.id))
        except Exception:
            log.exception("could not hand job %s to the generator", job.id)
            self._end(wire.JobFailed(job.id, GENERATOR_GONE))
            return
        if job.id in self._cancelling:  # cancelled while it was being handed over
            await self._generator.cancel(job.id)

    def _max_running_of(self, job: Job) -> int | None:
        return self._max_running.get(job.id)

    async def _pump(self) -> None:
        """The generator's messages to events(); a final one frees the job's image slots."""
        async for message in self._generator.events():
            if isinstance(message, wire.FINAL):
                self._end(message)
            else:
                self._events.put_nowait(message)
        if not self._closing:  # after close(), unfinished jobs are the next start's to resume
            log.error("the generator's event stream ended; failing the jobs it was running")
            for job in self._scheduler.running():
                self._end(wire.JobFailed(job.id, GENERATOR_GONE))
        self._events.put_nowait(None)

    def _end(self, message: wire.JobDone | wire.Described | wire.JobFailed | wire.JobCancelled) -> None:
        if isinstance(message, wire.JobDone | wire.Described) and message.model is None and self._ready is not None:
            message = replace(message, model=self._ready.model)
        self._scheduler.finish(message.job_id)
        self._forget(message.job_id)
        self._events.put_nowait(message)

    def _forget(self, job_id: str) -> None:
        self._messages.pop(job_id, None)
        self._max_running.pop(job_id, None)
        self._cancelling.discard(job_id)

    async def close(self, grace: float) -> None:
        """Start nothing new, let running jobs finish for up to `grace` seconds, then stop the generator."""
        self._scheduler.pause()
        deadline = time.monotonic() + grace
        while self._scheduler.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._closing = True
        await self._generator.close()
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
        if self._pump_task is None:
            self._events.put_nowait(None)
            return
        try:  # it ends with the generator's events, after passing on the last ones
            await asyncio.wait_for(self._pump_task, timeout=5)
        except TimeoutError:
            self._events.put_nowait(None)
