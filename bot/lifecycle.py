"""Jobs between admission and their end: each state the queue reports is recorded, then sent to the handles."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot.jobs import (
    FINAL_EVENTS,
    Cancelled,
    Event,
    Failed,
    Handle,
    Job,
    Kind,
    Progress,
    Queued,
    Refused,
    Started,
    Status,
    ending,
)
from bot.metrics import Meter
from bot.results import Results
from bot.store import Store
from generator import protocol as wire

log = logging.getLogger(__name__)

SAVE_FAILED = "The images were made but could not be saved; please try again."
NOT_RECORDED = "The bot could not record how this job ended; please try again."


class Lifecycle:
    """The jobs not yet ended and the handles following them; every job ends exactly once, its end recorded
    before its final event is sent."""

    def __init__(self, store: Store, results: Results, meter: Meter) -> None:
        self._store = store
        self._results = results
        self._meter = meter
        self._jobs: dict[str, Job] = {}
        self._handles: dict[str, list[Handle]] = {}
        self._admitting: dict[str, list[wire.Message]] = {}  # messages that came before admission's answer
        self._ending: set[str] = set()  # jobs whose end is being recorded
        self._percent: dict[str, int] = {}
        self.saving: set[asyncio.Task[None]] = set()  # finished jobs whose pictures are being stored

    def get(self, job_id: str) -> Job | None:
        """A job not yet ended."""
        return self._jobs.get(job_id)

    def active(self) -> list[Job]:
        """Every job not yet ended, oldest first."""
        return list(self._jobs.values())

    def add(self, job: Job, *, admitting: bool = False) -> Handle:
        """Track a job; with `admitting`, its messages wait until `admitted` (or `withdraw`) says how it went."""
        self._jobs[job.id] = job
        if admitting:
            self._admitting[job.id] = []
        return self.follow(job)

    async def admitted(self, job: Job, position: int) -> None:
        """The queue took the job: Queued first, then whatever it said of the job in the meantime."""
        self.emit(Queued(job.id, position))
        for message in self._admitting.pop(job.id, []):
            await self.on_message(message)

    def withdraw(self, job_id: str) -> None:
        """Forget a job the queue refused."""
        self._jobs.pop(job_id, None)
        self._handles.pop(job_id, None)
        self._admitting.pop(job_id, None)

    # -- handles --

    def follow(self, job: Job) -> Handle:
        """A new handle on a tracked job's events from now on."""
        handle = Handle(job)
        self._handles.setdefault(job.id, []).append(handle)
        return handle

    def unfollow(self, handle: Handle) -> None:
        if handle in self._handles.get(handle.job.id, []):
            self._handles[handle.job.id].remove(handle)

    def emit(self, event: Event) -> None:
        """Send an event to the job's handles (a final one ends them)."""
        final = isinstance(event, FINAL_EVENTS)
        handles = self._handles.pop(event.job_id, []) if final else self._handles.get(event.job_id, [])
        for handle in handles:
            handle.put(event)

    # -- what the queue says --

    async def on_message(self, message: wire.Message) -> None:
        """Record and pass on one message of the queue's stream."""
        job_id = getattr(message, "job_id", "")
        if (early := self._admitting.get(job_id)) is not None:
            early.append(message)  # a worker elsewhere was quicker than admission's answer
            return
        job = self._jobs.get(job_id)
        if job is None or job_id in self._ending:
            return  # a late message about a job that already ended
        if isinstance(message, wire.Waiting):
            self.emit(Queued(job.id, message.position))
        elif isinstance(message, wire.JobStarted):
            if job.status is not Status.RUNNING:  # a supervisor re-run starts a job twice
                job = self._jobs[job.id] = replace(job, status=Status.RUNNING, started_at=time.time())
                await self._store.update_job(job)
                self.emit(Started(job.id))
        elif isinstance(message, wire.JobProgress):
            self._meter.progress(job.id, message.step)
            percent = min(100, message.step * 100 // max(1, message.total))
            if percent != self._percent.get(job.id) or message.preview is not None:
                self._percent[job.id] = percent
                self.emit(Progress(job.id, percent, message.preview))
        elif isinstance(message, wire.JobDone):
            saving = asyncio.create_task(self.complete(job, message.images, message.tokens, message.model))
            self.saving.add(saving)
            saving.add_done_callback(self.saving.discard)
        elif isinstance(message, wire.Described):
            described = replace(job, model=message.model or job.model)
            await self._finish_with(job, lambda: self._results.save_described(described, message.prompts,
                                                                               message.tokens))
        elif isinstance(message, wire.JobFailed):
            await self.fail(job, message.reason)
        elif isinstance(message, wire.JobCancelled):
            await self.end(replace(job, status=Status.CANCELLED, finished_at=time.time()), Cancelled(job.id))

    async def upscale(self, job: Job) -> None:
        """Make an upscale job's picture, in the bot: Started, then Done (or Failed, saying why)."""
        self.emit(Started(job.id))
        try:
            source = await self._results.image(job.parent_id or "", job.parent_index or 0)
            png = await self._results.upscaled(source)
        except Exception as error:
            log.exception("upscale of job %s failed", job.id)
            reason = str(error) if isinstance(error, Refused) else "The image could not be upscaled; try again."
            await self.fail(job, reason)
            return
        await self.complete(job, [png], [source.tokens])

    # -- ends --

    async def complete(self, job: Job, pngs: list[bytes], tokens: list[list[int]], model: str | None = None) -> None:
        """Store a finished job's pictures, then send Done (or Failed, saying they could not be saved)."""
        await self._finish_with(job, lambda: self._results.save(replace(job, model=model or job.model), pngs, tokens))

    async def _finish_with(self, job: Job, save: Callable[[], Awaitable[tuple[Job, Event]]]) -> None:
        """Record a job's result (`save` it), then send its event; Failed when it could not be saved."""
        if job.id not in self._jobs or job.id in self._ending:
            return
        self._ending.add(job.id)
        try:
            done, event = await save()
        except Exception as error:
            log.error("could not store the result of job %s (%s: %s)", job.id, type(error).__name__, error)
            self._ending.discard(job.id)
            await self.fail(job, SAVE_FAILED)
            return
        self._ending.discard(job.id)
        self._finished(done, event)

    async def fail(self, job: Job, reason: str) -> None:
        """End a job as failed, saying why."""
        failed = replace(job, status=Status.FAILED, finished_at=time.time(), error=reason)
        await self.end(failed, Failed(job.id, reason))

    async def end(self, job: Job, event: Event) -> None:
        """Record a job's final state, then send its final event, exactly once.

        A write that fails (a full disk, a locked database) still ends the job, as failed: its user hears so
        and its slot is freed; the store still says it runs, so the next start resumes it.
        """
        if job.id not in self._jobs or job.id in self._ending:
            return
        self._ending.add(job.id)
        try:
            await self._store.update_job(job)
        except Exception as error:
            log.error("could not record the end of job %s (%s: %s); the next start runs it again",
                      job.id, type(error).__name__, error)
            job = replace(job, status=Status.FAILED, finished_at=job.finished_at or time.time(), error=NOT_RECORDED)
            event = Failed(job.id, NOT_RECORDED)
        finally:
            self._ending.discard(job.id)
        self._finished(job, event)

    def _finished(self, job: Job, event: Event) -> None:
        if self._jobs.pop(job.id, None) is None:
            return
        log.log(logging.WARNING if job.status is Status.FAILED else logging.INFO, "%s", ending(job))
        made = len(getattr(event, "images", ())) if job.kind is not Kind.UPSCALE else 0
        self._meter.finished(job.id, job.status.value, made)
        self._percent.pop(job.id, None)
        self.emit(event)
