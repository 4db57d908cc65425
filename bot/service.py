"""The bot's core: jobs from admission to their final event, and that event to every handle following them.

Adapters call `submit`, `reroll`, `vary`, `upscale`, `cancel`, `status` and `watch` here, and admin commands
through `service.admin`. Jobs run in a JobQueue (this machine's generator, or the Redis pool); finished
pictures are stored by `Results`; server rules come from `Policy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot.admin import Admin, JobStatus
from bot.admission import Admission, remixed
from bot.config import Settings
from bot.jobqueue import Backend, JobQueue
from bot.jobs import (
    Handle,
    Invalid,
    Job,
    Kind,
    Refused,
    Requester,
    Status,
    Strength,
    checked_prompt,
    checked_region,
)
from bot.lifecycle import Lifecycle
from bot.metrics import Meter, Stats
from bot.policy import Policy, audit_entry
from bot.ratelimit import Clock
from bot.results import PICTURE_GONE, Results
from bot.store import Store

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0

Hook = Callable[[Handle], Awaitable[None]]


class Service:
    """One per process, shared by every adapter.

    After a restart `on_recovered` gets a handle for every job the last run left unfinished (resumed, its
    stream goes on) and for every finished job whose result the adapters had not marked `delivered` (its
    stream holds just the final event).
    """

    def __init__(self, settings: Settings, store: Store, queue: JobQueue, *, on_recovered: Hook | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.policy = Policy(settings, store)
        self.meter = Meter()
        self.admin = Admin(self.policy, store, queue, lambda: self._jobs.active())
        self._store = store
        self._queue = queue
        self._results = Results(store, settings.images)
        self._jobs = Lifecycle(store, self._results, self.meter)
        self._on_recovered = on_recovered
        self._admission = Admission(self.policy, store, queue, self._jobs, self._results, clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None

    @property
    def backend(self) -> Backend:
        """What runs the jobs."""
        return self._queue.backend

    # -- life cycle --

    async def start(self) -> None:
        """Start the queue, resume unfinished jobs, hand undelivered ones to the hook, then accept jobs."""
        await self.policy.load()
        await self._queue.start()
        recovered: list[Handle] = []
        for job in await self._store.jobs(Status.QUEUED, Status.RUNNING):
            job = replace(job, status=Status.QUEUED, started_at=None)
            await self._store.update_job(job)
            recovered.append(handle := self._jobs.add(job))
            if job.kind is Kind.UPSCALE:
                self._spawn(self._jobs.upscale(job))
            else:
                await self._admission.resume(job, handle)
        for job in await self._store.undelivered() if self._on_recovered is not None else []:
            if job.deleted:  # its requester or an admin deleted it: nothing to show any more
                await self._store.update_job(replace(job, delivered=True))
                continue
            handle = Handle(job)
            handle.put(await self._results.final_event(job))
            recovered.append(handle)
        if recovered:
            log.info("recovered %d jobs", len(recovered))
        self._pump = asyncio.create_task(self._follow_queue())
        self._spawn(self._keep_data_in_bounds())
        if self._on_recovered is not None:
            for handle in recovered:
                self._spawn(self._on_recovered(handle))
        self._admission.accepting = True

    async def close(self) -> None:
        """Stop accepting, let the queue finish what it runs here (up to the grace period), then stop.

        Jobs still waiting or running stay in the store as they are and are resumed on the next start.
        """
        self._admission.accepting = False
        await self._queue.close(self.settings.bot.shutdown_grace_s)
        if self._pump is not None:  # it ends with the queue's events; let it record the last ones
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), timeout=5)
        if self._jobs.saving:
            await asyncio.wait(self._jobs.saving, timeout=5)
        for task in [*filter(None, [self._pump]), *self._tasks]:
            task.cancel()
        await asyncio.gather(*filter(None, [self._pump]), *self._tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background work failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- events --

    async def _keep_data_in_bounds(self) -> None:
        """Retention ([bot] keep_days, max_data_gb): at start, then every hour."""
        while True:
            try:
                await self._results.sweep(self.settings.bot)
            except Exception as error:
                log.error("deleting old pictures failed: %s: %s", type(error).__name__, error)
            await asyncio.sleep(RETENTION_EVERY_S)

    async def _follow_queue(self) -> None:
        async for message in self._queue.events():
            try:
                await self._jobs.on_message(message)
            except Exception:
                log.exception("could not handle %s", type(message).__name__)

    # -- what adapters call --

    async def submit(
        self,
        requester: Requester,
        prompt: str,
        *,
        count: int | None = None,
        cfg: float | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        negative: str | None = None,
        image: bytes | None = None,
        region: object | None = None,
    ) -> Handle:
        """Queue an /imagine job, from a picture (`image`, a file's bytes) when given: only `region` of it (four
        fractions x0,y0,x1,y1; the bottom half by default) is made again. Refused says why not and when to try
        again."""
        text = checked_prompt(prompt)
        options = self._admission.options(requester, count, cfg, temperature, seed, negative)
        source, cells = await self._admission.source(image, region)
        return await self._admission.admit(requester, text, options, source=source, region=cells)

    async def reroll(self, requester: Requester, job_id: str, *, prompt: str | None = None,
                     negative: str | None = None) -> Handle:
        """The same prompt and options with a new seed; remix: with `prompt` and/or `negative` (None keeps the
        job's, an empty negative drops it)."""
        parent = await self._admission.parent(job_id)
        if parent.kind is Kind.REGION and parent.region is not None:  # the same part of the same image, again
            return await self.vary_region(requester, parent.parent_id or "", parent.parent_index or 0, parent.region,
                                          prompt=parent.prompt if prompt is None else prompt,
                                          negative=parent.options.negative or "" if negative is None else negative)
        text, options = remixed(parent, prompt, negative)
        source = await self._results.source(parent) if parent.source else None  # an image prompt's picture, again
        return await self._admission.admit(requester, text, options, source=source, kind=Kind.REROLL,
                                           parent_id=parent.id, region=parent.region)

    async def vary(self, requester: Requester, job_id: str, index: int, strength: Strength, *,
                   prompt: str | None = None, negative: str | None = None) -> Handle:
        """Variations of image `index` (0-based): keep the top rows of its token grid, resample the rest (under
        the remixed `prompt` and `negative`, if given)."""
        parent = await self._admission.parent(job_id, index)
        await self._results.image(parent.id, index)
        text, options = remixed(parent, prompt, negative)
        return await self._admission.admit(requester, text, options, kind=Kind.VARIATION, parent_id=parent.id,
                                           parent_index=index, strength=Strength(strength))

    async def describe(self, requester: Requester, *, image: bytes | None = None, job_id: str | None = None,
                       index: int | None = None, count: int | None = None) -> Handle:
        """Prompts that would draw a picture: one sent (`image`, a file's bytes) or image `index` of a finished
        job; `count` of them ([describe] count by default), read by the model that draws."""
        options = self._admission.describe_options(count)
        if (image is None) == (job_id is None):
            raise Invalid("Send the picture to describe, or name a job and image; one of the two.")
        parent = None
        if image is None:  # one of the bot's own pictures, as stored
            parent = await self._admission.parent(job_id or "", index or 0)
            source = await self._results.picture(parent.id, index or 0)
        else:
            source = await self._admission.checked_upload(image)
        return await self._admission.admit(requester, "", options, source=source, kind=Kind.DESCRIBE,
                                           parent_id=parent and parent.id, parent_index=parent and (index or 0))

    async def vary_region(self, requester: Requester, job_id: str, index: int, region: object, *,
                          prompt: str | None = None, negative: str | None = None) -> Handle:
        """Vary (Region): image `index` (0-based) with only `region` of it made again (under the remixed prompt
        and negative, if given); every other cell keeps its token."""
        parent = await self._admission.parent(job_id, index)
        await self._results.image(parent.id, index)
        text, options = remixed(parent, prompt, negative)
        return await self._admission.admit(requester, text, options, kind=Kind.REGION, parent_id=parent.id,
                                           parent_index=index, region=checked_region(region))

    async def remix(self, requester: Requester, job_id: str, prompt: str | None, negative: str | None) -> Handle:
        """The Remix button: a reroll with the edited text, or for a variation or an upscale, variations of its
        source image (Job.remix_strength); for a Vary (Region), the same region of the same image again."""
        job = await self._admission.parent(job_id)
        if job.kind is Kind.REGION and job.region is not None:
            return await self.vary_region(requester, job.parent_id or "", job.parent_index or 0, job.region,
                                          prompt=prompt, negative=negative)
        strength = job.remix_strength
        if strength is None:
            return await self.reroll(requester, job.id, prompt=prompt, negative=negative)
        return await self.vary(requester, job.parent_id or job.id, job.parent_index or 0, strength, prompt=prompt,
                               negative=negative)

    async def upscale(self, requester: Requester, job_id: str, index: int) -> Handle:
        """Image `index` (0-based) alone, Lanczos-upscaled in the bot; streams Started then Done."""
        parent = await self._admission.parent(job_id, index)
        await self._results.image(parent.id, index)
        if parent.removed_at is not None:
            raise Refused(PICTURE_GONE)
        handle = await self._admission.admit_upscale(requester, parent, index)
        self._spawn(self._jobs.upscale(handle.job))
        return handle

    async def cancel(self, requester: Requester, job_id: str) -> None:
        """Cancel a waiting or running job of one's own (admins: any job in their server)."""
        job = self._jobs.get(job_id)
        if job is None:
            raise Refused("That job has already finished.")
        owner = job.requester.platform == requester.platform and job.requester.user == requester.user
        if not owner and not self.policy.admin_of(requester, job):
            raise Refused("Only the person who asked for that job, or an admin, can cancel it.")
        if not owner:
            await self._store.audit(audit_entry(requester, "cancel", job_id=job_id, user=job.requester.user))
        if job.kind is Kind.UPSCALE:
            return  # made in a moment, in the bot
        follow = self._jobs.follow(job)  # before asking: the queue's answer may come back at once
        if await self._queue.cancel(job_id):
            await follow.final()  # it was waiting: it ends now, not when the stream is next read
        else:
            self._jobs.unfollow(follow)

    async def delete(self, requester: Requester, job_id: str) -> Job:
        """Delete a finished job's result (one's own; admins: any in their server): its pictures and token grids
        go, the row stays as a tombstone. The job as it now is, for the adapter to remove its message."""
        job = self._jobs.get(job_id) or await self._store.job(job_id)
        if job is None:
            raise Refused("That job no longer exists.")
        if not job.status.final:
            raise Refused("That job is still being made; cancel it first.")
        if job.deleted:
            raise Refused("That job was already deleted.")
        owner = job.requester.platform == requester.platform and job.requester.user == requester.user
        if not owner and not self.policy.admin_of(requester, job):
            raise Refused("Only the person who asked for that job, or an admin, can delete it.")
        deleted = await self._results.delete(job, requester)
        if not owner:
            await self._store.audit(audit_entry(requester, "delete", job_id=job_id, user=job.requester.user))
        return deleted

    async def job(self, job_id: str) -> Job:
        """A job whose details or prompt may be shown, or Refused saying it is gone or was deleted."""
        return await self._admission.parent(job_id, images_optional=True)

    async def status(self, job_id: str) -> JobStatus | None:
        """Where a job stands; None if there is no such job."""
        job = self._jobs.get(job_id) or await self._store.job(job_id)
        if job is None:
            return None
        waiting = self._jobs.get(job.id) is not None and job.status is Status.QUEUED
        return JobStatus(job, await self._queue.position(job_id) if waiting else None)

    async def watch(self, job_id: str) -> Handle:
        """A new handle on a job's events from now on (a finished job's holds just its final event)."""
        job = self._jobs.get(job_id)
        if job is not None:
            return self._jobs.follow(job)
        stored = await self._store.job(job_id)
        if stored is None:
            raise Refused("That job no longer exists; start a new one with /imagine.")
        handle = Handle(stored)
        handle.put(await self._results.final_event(stored))
        return handle

    async def history(self, requester: Requester, *, everyone: bool = False, before: float | None = None,
                      limit: int = 20) -> list[Job]:
        """The requester's jobs on their platform, newest first (created before `before`, for the next page);
        with `everyone`, every user's (the platform's admins only)."""
        if everyone:
            self.policy.require_admin(requester)
        user = None if everyone else requester.user
        return await self._store.recent(requester.platform, user, before=before, limit=max(1, min(limit, 100)))

    async def delivered(self, job_id: str) -> None:
        """The adapter has shown a finished job's result; it will not be handed over again after a restart."""
        job = await self._store.job(job_id)
        if job is not None and job.status.final and not job.delivered:
            await self._store.update_job(replace(job, delivered=True))

    async def remember_message(self, job_id: str, place: str) -> None:
        """Where the adapter shows a job (its own reference), so after a restart it can edit that message."""
        await self._store.set_message(job_id, place)

    async def message(self, job_id: str) -> str | None:
        """The place remember_message recorded for a job, if any."""
        return await self._store.message(job_id)

    # -- health --

    def stats(self) -> Stats:
        """Queue and throughput figures for health checks and metrics."""
        waiting = len(self._queue.positions())
        return self.meter.stats(self._queue.backend, up=self._admission.accepting, waiting=waiting,
                                running=len(self._jobs.active()) - waiting, paused=self._queue.paused)

    async def backend_metrics(self) -> str:
        """The queue's own metrics in Prometheus' text format (the pool's workers); empty for a local queue."""
        return await self._queue.metrics()

