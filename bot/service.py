"""What adapters call: submit, reroll, upscale, vary, cancel, status and admin operations; owns policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from bot import images
from bot.config import BlocklistSettings, DefaultSettings, LimitSettings, Settings
from bot.generator import Generator, SharedQueue
from bot.jobs import (
    FINAL_EVENTS,
    Cancelled,
    Done,
    Event,
    Failed,
    Image,
    Job,
    Kind,
    Options,
    Progress,
    Queued,
    Refused,
    Requester,
    Started,
    Status,
    Strength,
    checked_prompt,
    new_job_id,
)
from bot.metrics import Meter, Stats
from bot.queue import Scheduler
from bot.ratelimit import Blocklist, Clock, RateLimiter, compile_pattern
from bot.store import AuditEntry, Ban, Store, Usage
from generator import protocol as wire
from generator.protocol import SEED_MAX

log = logging.getLogger(__name__)

# Settings a server's admins may override, by "section.key".
OVERRIDABLE = {
    f"{section}.{key}": model
    for section, model in (("defaults", DefaultSettings), ("limits", LimitSettings))
    for key in model.model_fields
    if key != "queue_cap"  # one queue for every server
}
GENERATOR_GONE = "The image generator stopped before finishing this job; please try again."


class Handle:
    """A job's events as they happen: iterate it until the final one (Done, Failed or Cancelled)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        """Hand over one event (the service does this)."""
        self._events.put_nowait(event)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, FINAL_EVENTS):
                return

    async def final(self) -> Event:
        """Wait for the final event, skipping the others."""
        async for event in self:
            if isinstance(event, FINAL_EVENTS):
                return event
        raise AssertionError("a stream ends with its final event")


@dataclass(frozen=True)
class JobStatus:
    job: Job
    position: int | None  # 1 is next; None unless waiting


Hook = Callable[[Handle], Awaitable[None]]


def ending(job: Job) -> str:
    """The operator's log line for a job that ended: what and whose it was, how it ended, how long it took."""
    images = "" if job.kind is Kind.UPSCALE else f", {job.options.count} image{'s' * (job.options.count != 1)}"
    line = f"job {job.id} ({job.kind.value}{images}, {job.requester.user_key}): {job.status.value}"
    if job.finished_at is not None:
        line += f" in {job.finished_at - job.created_at:.1f}s"
        if job.started_at is not None:
            line += f" (waited {job.started_at - job.created_at:.1f}s)"
    return line + (f": {job.error}" if job.status is Status.FAILED and job.error else "")


class Service:
    """The bot's core: one per process, shared by every adapter.

    After a restart `on_recovered` gets a handle for every job the last run left unfinished (re-queued,
    its stream goes on) and for every finished job whose result the adapters had not marked `delivered`
    (its stream holds just the final event).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        generator: Generator,
        *,
        clock: Clock = time.monotonic,
        on_recovered: Hook | None = None,
    ) -> None:
        self.settings = settings
        self.ready: wire.Ready | None = None
        self._store = store
        self._generator = generator
        self._limiter = RateLimiter(clock)
        self._on_recovered = on_recovered
        self._scheduler = Scheduler(self._dispatch, self._on_positions, self._max_running)
        self._jobs: dict[str, Job] = {}  # every job not yet final
        self._handles: dict[str, list[Handle]] = {}
        self._percent: dict[str, int] = {}
        self._cancelling: set[str] = set()
        self._overrides: dict[tuple[str, str], dict[str, Any]] = {}
        self._bans: dict[tuple[str, str, str], Ban] = {}
        self._accept = asyncio.Lock()
        self._accepting = False
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._completing: dict[str, asyncio.Task[None]] = {}  # finished jobs whose files are being written
        self._loops: list[asyncio.Task[None]] = []
        self._shared = generator if isinstance(generator, SharedQueue) else None  # a queue several bots share
        self._requeue: set[str] = set()  # recovered jobs the shared queue is asked to keep or queue again
        self.meter = Meter()

    # -- life cycle --

    async def start(self) -> None:
        """Start the generator, re-queue unfinished jobs, hand undelivered ones to the hook, then accept jobs."""
        self.ready = await self._generator.start()
        # With a shared queue every job goes straight to it: the pool's workers own the image slots.
        self._scheduler.capacity = sys.maxsize if self._shared else self.ready.max_batch_images
        self._overrides = await self._store.overrides()
        self._bans = {(b.platform, b.server, b.user): b for b in await self._store.bans()}
        recovered: list[Handle] = []
        for job in await self._store.jobs(Status.QUEUED, Status.RUNNING):
            job = replace(job, status=Status.QUEUED, started_at=None)
            await self._store.update_job(job)
            self._jobs[job.id] = job
            handle = self._handle(job)
            if job.kind is Kind.UPSCALE:
                self._spawn(self._upscale(job))
            else:
                if self._shared is not None:
                    self._requeue.add(job.id)
                handle.put(Queued(job.id, self._scheduler.push(job)))
            recovered.append(handle)
        for job in await self._store.undelivered() if self._on_recovered is not None else []:
            handle = Handle(job)
            handle.put(await self._final_event(job))
            recovered.append(handle)
        if recovered:
            log.info("recovered %d jobs", len(recovered))
        self._loops = [asyncio.create_task(self._pump()), asyncio.create_task(self._scheduler.run())]
        if self._on_recovered is not None:
            for handle in recovered:
                self._spawn(self._on_recovered(handle))
        self._accepting = True

    async def close(self) -> None:
        """Stop accepting, let running jobs finish for up to the grace period, then stop the generator.

        Jobs still waiting or running stay in the store as they are and are re-queued on the next start.
        """
        self._accepting = False
        self._scheduler.pause()
        deadline = time.monotonic() + self.settings.bot.shutdown_grace_s
        # A shared queue's jobs go on in the pool; their results wait in Redis for the next start.
        while self._shared is None and self._scheduler.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._closing = True
        await self._generator.close()
        if self._loops:  # the pump ends with the generator's events; let it record the last ones
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._loops[0], timeout=5)
        if self._completing:
            await asyncio.wait(self._completing.values(), timeout=5)
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background work failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events --

    def _handle(self, job: Job) -> Handle:
        handle = Handle(job)
        self._handles.setdefault(job.id, []).append(handle)
        return handle

    def _emit(self, event: Event) -> None:
        final = isinstance(event, FINAL_EVENTS)
        handles = self._handles.pop(event.job_id, []) if final else self._handles.get(event.job_id, [])
        for handle in handles:
            handle.put(event)

    def _on_positions(self, positions: dict[str, int]) -> None:
        for job_id, position in positions.items():
            self._emit(Queued(job_id, position))

    async def _end(self, job: Job, event: Event) -> None:
        """Record a job's final state and send its final event, exactly once."""
        if self._jobs.pop(job.id, None) is None:
            return
        await self._store.update_job(job)
        self._finished(job, event)

    async def _fail(self, job: Job, reason: str) -> None:
        await self._end(
            replace(job, status=Status.FAILED, finished_at=time.time(), error=reason), Failed(job.id, reason)
        )

    def _finished(self, job: Job, event: Event) -> None:
        log.log(logging.WARNING if job.status is Status.FAILED else logging.INFO, "%s", ending(job))
        made = len(event.images) if isinstance(event, Done) and job.kind is not Kind.UPSCALE else 0
        self.meter.finished(job.id, job.status.value, made)
        self._scheduler.finish(job.id)
        self._percent.pop(job.id, None)
        self._cancelling.discard(job.id)
        self._emit(event)

    async def _final_event(self, job: Job) -> Event:
        if job.status is Status.DONE:
            try:
                stored = await self._store.images(job.id)
                pngs = [await self._store.read_file(image.path) for image in stored]
                grid = await self._store.read_file(job.grid_path) if job.grid_path else pngs[0]
            except (OSError, IndexError):
                log.warning("the images of job %s are missing from the data directory", job.id)
                return Failed(job.id, "The images of this job are no longer stored; start a new one with /imagine.")
            return Done(job.id, job.seed, grid, pngs)
        if job.status is Status.FAILED:
            return Failed(job.id, job.error or GENERATOR_GONE)
        return Cancelled(job.id)

    # -- the generator side --

    def _max_running(self, job: Job) -> int | None:
        if self._shared is not None or self.is_admin(job.requester):
            return None  # a shared queue limits running jobs across every instance itself
        return self._limits(job.requester).max_running_per_user

    async def _dispatch(self, job: Job) -> None:
        try:
            if self._shared is None:
                await self._generator.submit(await self._message(job))
            elif job.id in self._requeue:  # new jobs went into the shared queue when admitted
                self._requeue.discard(job.id)
                limits, admin = self._limits(job.requester), self.is_admin(job.requester)
                await self._shared.requeue(job, await self._message(job), limits, admin=admin)
            else:
                return
        except Exception as error:
            log.exception("could not hand job %s to the generator", job.id)
            reason = str(error) if isinstance(error, Refused) else GENERATOR_GONE
            await self._fail(job, reason)
            return
        if job.id in self._cancelling:
            await self._generator.cancel(job.id)

    async def _message(self, job: Job) -> wire.Generate:
        prefix = await self._prefix(job) if job.kind is Kind.VARIATION else None
        o = job.options
        return wire.Generate(job.id, job.prompt, o.count, o.cfg, o.temperature, job.seed, prefix)

    async def _prefix(self, job: Job) -> list[list[int]]:
        source = await self._image(job.parent_id or "", job.parent_index or 0)
        side = round(len(source.tokens) ** 0.5)
        kept = round(side * (job.strength or Strength.SUBTLE).kept) * side
        return [source.tokens[:kept]] * job.options.count

    async def _pump(self) -> None:
        async for message in self._generator.events():
            try:
                await self._on_message(message)
            except Exception:
                log.exception("could not handle %s", type(message).__name__)
        if not self._closing:
            log.error("the generator's event stream ended; failing the jobs it was running")
            for running in self._scheduler.running():
                if running.id in self._completing:
                    continue
                job = self._jobs.get(running.id, running)
                await self._fail(job, GENERATOR_GONE)

    async def _on_message(self, message: wire.Message) -> None:
        job_id = getattr(message, "job_id", "")
        if self._shared is not None and job_id not in self._jobs:
            async with self._accept:  # a worker may finish a job before its admission has been recorded here
                pass
        job = self._jobs.get(job_id)
        if job is None or not self._scheduler.is_running(job.id):
            return  # a late message about a job that already ended
        if isinstance(message, wire.Waiting):
            self._emit(Queued(job.id, message.position))
        elif isinstance(message, wire.JobStarted):
            if job.status is not Status.RUNNING:  # a supervisor re-run starts a job twice
                job = replace(job, status=Status.RUNNING, started_at=time.time())
                self._jobs[job.id] = job
                await self._store.update_job(job)
                self._emit(Started(job.id))
        elif isinstance(message, wire.JobProgress):
            self.meter.progress(job.id, message.step)
            percent = min(100, message.step * 100 // max(1, message.total))
            if percent != self._percent.get(job.id) or message.preview is not None:
                self._percent[job.id] = percent
                self._emit(Progress(job.id, percent, message.preview))
        elif isinstance(message, wire.JobDone) and job.id not in self._completing:
            # Grids and files take a while; other jobs' events go on meanwhile.
            task = asyncio.create_task(self._complete(job, message.images, message.tokens))
            self._completing[job.id] = task
            task.add_done_callback(lambda _: self._completing.pop(job.id, None))
        elif isinstance(message, wire.JobFailed):
            await self._fail(job, message.reason)
        elif isinstance(message, wire.JobCancelled):
            await self._end(replace(job, status=Status.CANCELLED, finished_at=time.time()), Cancelled(job.id))

    async def _complete(self, job: Job, pngs: list[bytes], tokens: list[list[int]]) -> None:
        try:
            await self._save(job, pngs, tokens)
        except Exception:
            log.exception("could not store the images of job %s", job.id)
            await self._fail(job, "The images were made but could not be saved; please try again.")

    async def _save(self, job: Job, pngs: list[bytes], tokens: list[list[int]]) -> None:
        folder = f"images/{job.id}"
        grid = pngs[0] if len(pngs) == 1 else await asyncio.to_thread(images.grid, pngs)
        files = {f"{folder}/{i}.png": png for i, png in enumerate(pngs)}
        files[f"{folder}/grid.png"] = grid
        await self._store.save_files(files)
        stored = [Image(job.id, i, f"{folder}/{i}.png", job.seed, grid_tokens) for i, grid_tokens in enumerate(tokens)]
        done = replace(job, status=Status.DONE, finished_at=time.time(), grid_path=f"{folder}/grid.png")
        if self._jobs.pop(job.id, None) is None:
            return
        await self._store.finish_job(done, stored)
        self._finished(done, Done(job.id, job.seed, grid, pngs))

    # -- policy --

    def is_admin(self, requester: Requester) -> bool:
        """A server admin (as the platform says) or a bot admin from the config."""
        return requester.is_admin or self.is_owner(requester)

    def is_owner(self, requester: Requester) -> bool:
        """A bot admin from the config: admin of every server, and the only one who may pause the bot."""
        return requester.user_key in self.settings.bot.admins

    def _server(self, requester: Requester) -> dict[str, Any]:
        return self._overrides.get((requester.platform, requester.server), {})

    def _section(self, requester: Requester, name: str) -> dict[str, Any]:
        base: dict[str, Any] = getattr(self.settings, name).model_dump()
        prefix = f"{name}."
        base.update({k.removeprefix(prefix): v for k, v in self._server(requester).items() if k.startswith(prefix)})
        return base

    def _limits(self, requester: Requester) -> LimitSettings:
        return LimitSettings.model_validate(self._section(requester, "limits"))

    def defaults(self, requester: Requester) -> DefaultSettings:
        """The option defaults in the requester's server."""
        return DefaultSettings.model_validate(self._section(requester, "defaults"))

    def _blocklist(self, requester: Requester) -> Blocklist:
        listed = self._section(requester, "blocklist")
        return Blocklist(listed["words"], listed["patterns"])

    def _check(self, requester: Requester, prompt: str | None = None, count: int | None = None) -> None:
        if not self._accepting:
            raise Refused("The bot is restarting; try again in a minute.", 60.0)
        ban = self._bans.get((requester.platform, requester.server, requester.user))
        if ban is not None:
            because = f" ({ban.reason})" if ban.reason else ""
            raise Refused(f"You are banned from making images here{because}; ask a server admin if this is a mistake.")
        if prompt is not None and (blocked := self._blocklist(requester).match(prompt)):
            raise Refused(f'Your prompt contains "{blocked}", which is not allowed here; rephrase it and try again.')
        capacity = self.ready.max_batch_images if self.ready else 0
        if count is not None and count > capacity:
            raise Refused(f"This bot makes at most {capacity} images per job; ask for {capacity} or fewer.")

    async def _queue(self, requester: Requester, prompt: str, options: Options, **parent: Any) -> Handle:
        self._check(requester, prompt, options.count)
        async with self._accept:
            limits, admin = self._limits(requester), self.is_admin(requester)
            if self._shared is None:
                self._limiter.admit(
                    f"{requester.platform}:{requester.server}:{requester.user}",
                    limits,
                    admin=admin,
                    queued=self._scheduler.waiting_for(requester.user_key),
                    queue_total=len(self._scheduler),
                )
            seed = options.seed if options.seed is not None else random.randint(0, SEED_MAX)
            job = Job(new_job_id(), requester, prompt, options, seed, time.time(), **parent)
            if self._shared is not None:  # limits, bans and the cap hold across every instance
                shared_position = await self._shared.admit(job, await self._message(job), limits, admin=admin)
            await self._store.add_job(job)
            self._jobs[job.id] = job
            handle = self._handle(job)
            position = self._scheduler.push(job)
            handle.put(Queued(job.id, shared_position if self._shared is not None else position))
        return handle

    # -- the API adapters call --

    async def submit(
        self,
        requester: Requester,
        prompt: str,
        *,
        count: int | None = None,
        cfg: float | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> Handle:
        """Queue an /imagine job; Refused says why not and when to try again."""
        text = checked_prompt(prompt)
        defaults = self.defaults(requester)
        options = Options.checked(
            defaults.count if count is None else count,
            defaults.cfg if cfg is None else cfg,
            defaults.temperature if temperature is None else temperature,
            seed,
        )
        return await self._queue(requester, text, options)

    async def _parent(self, job_id: str, index: int | None = None) -> Job:
        job = self._jobs.get(job_id) or await self._store.job(job_id)
        if job is None:
            raise Refused("That job no longer exists; start a new one with /imagine.")
        if index is not None:
            if job.status is not Status.DONE:
                raise Refused("That job has no images yet; wait until it is done.")
            if not 0 <= index < job.options.count:
                raise Refused(f"That job has images 1 to {job.options.count}; pick one of those.")
        return job

    async def _image(self, job_id: str, index: int) -> Image:
        for image in await self._store.images(job_id):
            if image.index == index:
                return image
        raise Refused("That image is no longer stored; start a new job with /imagine.")

    async def reroll(self, requester: Requester, job_id: str) -> Handle:
        """The same prompt and options with a new seed."""
        parent = await self._parent(job_id)
        options = replace(parent.options, seed=None)
        return await self._queue(requester, parent.prompt, options, kind=Kind.REROLL, parent_id=parent.id)

    async def vary(self, requester: Requester, job_id: str, index: int, strength: Strength) -> Handle:
        """Variations of image `index` (0-based): keep the top rows of its token grid, resample the rest."""
        parent = await self._parent(job_id, index)
        await self._image(parent.id, index)
        options = replace(parent.options, seed=None)
        return await self._queue(
            requester,
            parent.prompt,
            options,
            kind=Kind.VARIATION,
            parent_id=parent.id,
            parent_index=index,
            strength=Strength(strength),
        )

    async def upscale(self, requester: Requester, job_id: str, index: int) -> Handle:
        """Image `index` (0-based) alone, Lanczos-upscaled in the bot; streams Started then Done."""
        parent = await self._parent(job_id, index)
        await self._image(parent.id, index)
        self._check(requester)
        options = replace(parent.options, count=1)
        job = Job(
            new_job_id(), requester, parent.prompt, options, parent.seed, time.time(),
            kind=Kind.UPSCALE, parent_id=parent.id, parent_index=index,
        )  # fmt: skip
        await self._store.add_job(job)
        self._jobs[job.id] = job
        handle = self._handle(job)
        self._spawn(self._upscale(job))
        return handle

    async def _upscale(self, job: Job) -> None:
        self._emit(Started(job.id))
        try:
            source = await self._image(job.parent_id or "", job.parent_index or 0)
            png = await asyncio.to_thread(
                images.upscale, await self._store.read_file(source.path), self.settings.images.upscale_px
            )
        except Exception as error:
            log.exception("upscale of job %s failed", job.id)
            reason = str(error) if isinstance(error, Refused) else "The image could not be upscaled; try again."
            await self._fail(job, reason)
            return
        await self._complete(job, [png], [source.tokens])

    async def cancel(self, requester: Requester, job_id: str) -> None:
        """Cancel a waiting or running job of one's own (admins: any job in their server)."""
        job = self._jobs.get(job_id)
        if job is None:
            raise Refused("That job has already finished.")
        owner = job.requester.platform == requester.platform and job.requester.user == requester.user
        if not owner and not self._admin_of(requester, job):
            raise Refused("Only the person who asked for that job, or an admin, can cancel it.")
        if not owner:
            await self._audit(requester, "cancel", job_id=job_id, user=job.requester.user)
        if self._scheduler.remove(job_id) is not None:
            await self._end(replace(job, status=Status.CANCELLED, finished_at=time.time()), Cancelled(job_id))
        elif self._scheduler.is_running(job_id) and job_id not in self._cancelling:
            self._cancelling.add(job_id)
            await self._generator.cancel(job_id)

    async def status(self, job_id: str) -> JobStatus | None:
        """Where a job stands; None if there is no such job."""
        job = self._jobs.get(job_id) or await self._store.job(job_id)
        if job is None:
            return None
        if self._shared is not None:
            position = await self._shared.position(job_id) if job.status is Status.QUEUED else None
            return JobStatus(job, position)
        return JobStatus(job, self._scheduler.positions().get(job_id))

    async def watch(self, job_id: str) -> Handle:
        """A new handle on a job's events from now on (a finished job's holds just its final event)."""
        job = self._jobs.get(job_id)
        if job is not None:
            return self._handle(job)
        stored = await self._store.job(job_id)
        if stored is None:
            raise Refused("That job no longer exists; start a new one with /imagine.")
        handle = Handle(stored)
        handle.put(await self._final_event(stored))
        return handle

    async def pool_metrics(self) -> str:
        """The shared pool's queue and workers in Prometheus' text format; empty with a local generator."""
        metrics = getattr(self._shared, "metrics", None)
        return await metrics() if metrics is not None else ""

    def stats(self) -> Stats:
        """Generator, queue and throughput figures for health checks and metrics."""
        waiting = len(self._scheduler) if self._shared is None else len(self._shared.positions())
        return Stats(
            generator_up=self.ready is not None and self._accepting and getattr(self._generator, "pid", 0) is not None,
            model=self.ready.model if self.ready else None,
            device=self.ready.device if self.ready else None,
            waiting=waiting,
            running=len(self._jobs) - waiting,
            paused=self._scheduler.paused,
            ended=dict(self.meter.ended),
            images=self.meter.images,
            step_seconds=self.meter.step_seconds,
            steps=self.meter.steps,
            images_per_second=self.meter.images_per_second(),
            generator_restarts=getattr(self._generator, "restarts", 0),
        )

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

    # -- admin operations: each checks rights and leaves an audit row --

    def _admin_of(self, requester: Requester, job: Job) -> bool:
        same_server = (job.requester.platform, job.requester.server) == (requester.platform, requester.server)
        return self.is_owner(requester) or (requester.is_admin and same_server)

    def _require_admin(self, requester: Requester, owner: bool = False) -> None:
        if not (self.is_owner(requester) if owner else self.is_admin(requester)):
            who = "the bot's admins" if owner else "server admins"
            raise Refused(f"Only {who} can do that.")

    async def _audit(self, requester: Requester, action: str, **detail: Any) -> None:
        await self._store.audit(self._entry(requester, action, **detail))

    def _entry(self, requester: Requester, action: str, **detail: Any) -> AuditEntry:
        r = requester
        return AuditEntry(time.time(), r.platform, r.server, r.user, action, detail)

    def server_settings(self, requester: Requester) -> dict[str, Any]:
        """The settings in effect in the requester's server, by "section.key", overrides included."""
        self._require_admin(requester)
        view = {
            f"{name}.{k}": v
            for name in ("defaults", "limits", "blocklist")
            for k, v in self._section(requester, name).items()
        }
        view["paused"] = self._scheduler.paused
        return view

    async def set_setting(self, requester: Requester, key: str, value: Any) -> None:
        """Override one setting for the requester's server (None removes the override)."""
        self._require_admin(requester)
        model = OVERRIDABLE.get(key)
        if model is None:
            raise Refused(f"{key} is not a setting you can change here; try one of: {', '.join(sorted(OVERRIDABLE))}.")
        section, field = key.split(".")
        if value is not None:
            try:
                model.model_validate({**self._section(requester, section), field: value})
            except ValidationError as error:
                raise Refused(f"{key} {error.errors()[0]['msg'].lower()}; you gave {value}.") from None
        await self._set_override(requester, key, value, "set", to=value)

    async def _set_override(self, requester: Requester, key: str, value: object, action: str, **detail: Any) -> None:
        server = (requester.platform, requester.server)
        entry = self._entry(requester, action, key=key, **detail)
        await self._store.set_override(requester.platform, requester.server, key, value, entry)
        overrides = dict(self._overrides.get(server, {}))
        if value is None:
            overrides.pop(key, None)
        else:
            overrides[key] = value
        self._overrides[server] = overrides

    async def block(self, requester: Requester, text: str, regex: bool = False) -> None:
        """Add a word (or, with regex, a regular expression) to the server's prompt blocklist."""
        self._require_admin(requester)
        text = text.strip()
        if not text:
            raise Refused("Give the word or pattern to block.")
        if regex:
            compile_pattern(text)
        key = "blocklist.patterns" if regex else "blocklist.words"
        listed = list(self._server(requester).get(key, []))
        if text not in listed:
            await self._set_override(requester, key, [*listed, text], "block", text=text, regex=regex)

    async def unblock(self, requester: Requester, text: str) -> None:
        """Remove a word or pattern from the server's blocklist (entries from the config file stay)."""
        self._require_admin(requester)
        for key in ("blocklist.words", "blocklist.patterns"):
            listed = list(self._server(requester).get(key, []))
            if text in listed:
                listed.remove(text)
                await self._set_override(requester, key, listed or None, "unblock", text=text)
                return
        raise Refused(f'"{text}" is not on this server\'s blocklist.')

    def blocklist(self, requester: Requester) -> BlocklistSettings:
        """The blocked words and patterns in effect in the requester's server."""
        self._require_admin(requester)
        return BlocklistSettings.model_validate(self._section(requester, "blocklist"))

    async def ban(self, requester: Requester, user: str, reason: str = "") -> None:
        """Ban a user from making images in the requester's server."""
        self._require_admin(requester)
        ban = Ban(requester.platform, requester.server, user, reason, requester.user, time.time())
        await self._store.ban(ban, self._entry(requester, "ban", user=user, reason=reason))
        self._bans[(ban.platform, ban.server, ban.user)] = ban
        if self._shared is not None:
            await self._shared.set_ban(ban.platform, ban.server, ban.user, True)

    async def unban(self, requester: Requester, user: str) -> None:
        """Lift a ban in the requester's server."""
        self._require_admin(requester)
        key = (requester.platform, requester.server, user)
        if key not in self._bans:
            raise Refused("That user is not banned here.")
        await self._store.unban(*key, self._entry(requester, "unban", user=user))
        del self._bans[key]
        if self._shared is not None:
            await self._shared.set_ban(*key, False)

    def bans(self, requester: Requester) -> list[Ban]:
        """The users banned in the requester's server."""
        self._require_admin(requester)
        return [b for b in self._bans.values() if (b.platform, b.server) == (requester.platform, requester.server)]

    def queue(self, requester: Requester) -> list[JobStatus]:
        """Running then waiting jobs (the requester's server only, unless a bot admin)."""
        self._require_admin(requester)
        if self._shared is not None:  # this instance's jobs, placed in the whole pool's queue
            places = self._shared.positions()
            shared = [JobStatus(j, places.get(j.id)) for j in self._jobs.values() if j.kind is not Kind.UPSCALE]
            jobs = sorted(shared, key=lambda s: (s.position is not None, s.position or 0, s.job.created_at))
            return [s for s in jobs if self._admin_of(requester, s.job)]
        positions = self._scheduler.positions()
        jobs = [JobStatus(self._jobs.get(j.id, j), None) for j in self._scheduler.running()]
        jobs += [JobStatus(j, positions[j.id]) for j in self._scheduler.waiting()]
        return [s for s in jobs if self._admin_of(requester, s.job)]

    async def pause(self, requester: Requester) -> None:
        """Start no new jobs (running ones finish; new ones still queue). Bot admins only."""
        self._require_admin(requester, owner=True)
        if self._shared is not None:  # every instance's jobs wait in the pool; local dispatch goes on
            await self._shared.set_paused(True)
        else:
            self._scheduler.pause()
        await self._audit(requester, "pause")

    async def resume(self, requester: Requester) -> None:
        """Start jobs again. Bot admins only."""
        self._require_admin(requester, owner=True)
        if self._shared is not None:
            await self._shared.set_paused(False)
        else:
            self._scheduler.resume()
        await self._audit(requester, "resume")

    async def usage(self, requester: Requester, days: int = 30) -> list[Usage]:
        """Jobs and images per user in the requester's server over the last `days` days."""
        self._require_admin(requester)
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - (days - 1) * 86400))
        return await self._store.usage(requester.platform, requester.server, since)

    async def audit_log(self, requester: Requester, limit: int = 50) -> list[AuditEntry]:
        """The requester's server's most recent admin actions, newest first."""
        self._require_admin(requester)
        return await self._store.audit_log(requester.platform, requester.server, limit)
