"""Whether and how a job enters: the bot accepting, bans and the blocklist, the generator's capacity, then
the job recorded and handed to the queue under its user's limits (upscales, made in the bot: their own)."""

from __future__ import annotations

import random
import time

from bot.jobqueue import JobQueue
from bot.jobs import Handle, Job, Kind, Options, Queued, Refused, Requester, new_job_id
from bot.lifecycle import Lifecycle
from bot.policy import Policy
from bot.ratelimit import Clock, TokenBucket, queue_full, rate_limited
from bot.results import Results
from bot.store import Store
from generator import protocol as wire
from generator.protocol import SEED_MAX

UPSCALE_RETRY_S = 5.0


class Admission:
    """The door of the service; `accepting` is False while the bot starts or stops."""

    def __init__(self, policy: Policy, store: Store, queue: JobQueue, jobs: Lifecycle, results: Results,
                 clock: Clock) -> None:
        self.accepting = False
        self._policy = policy
        self._store = store
        self._queue = queue
        self._jobs = jobs
        self._results = results
        self._upscales = TokenBucket(clock)  # upscales are made outside the queue: a bucket of their own

    def check(self, requester: Requester, prompt: str | None = None, count: int | None = None) -> None:
        """Refused unless the bot is accepting, the requester may ask here, and the job fits the generator."""
        if not self.accepting:
            raise Refused("The bot is restarting; try again in a minute.", 60.0)
        self._policy.check(requester, prompt)
        self._policy.check_channel(requester)
        capacity = self._queue.backend.max_images
        if count is not None and count > capacity:
            raise Refused(f"This bot makes at most {capacity} images per job; ask for {capacity} or fewer.")

    async def message(self, job: Job) -> wire.Generate:
        """What the generator is told to make for a job (a variation's kept rows read from its source)."""
        prefix = await self._results.kept_rows(job) if job.kind is Kind.VARIATION else None
        o = job.options
        return wire.Generate(job.id, job.prompt, o.count, o.cfg, o.temperature, job.seed, prefix, o.negative)

    async def admit(self, requester: Requester, prompt: str, options: Options, **parent: object) -> Handle:
        """Record a new job, then queue it under the requester's limits; Refused undoes the record."""
        self.check(requester, prompt, options.count)
        seed = options.seed if options.seed is not None else random.randint(0, SEED_MAX)
        job = Job(new_job_id(), requester, prompt, options, seed, time.time(), **parent)  # type: ignore[arg-type]
        msg = await self.message(job)
        limits, exempt = self._policy.limits(requester), self._policy.exempt(requester)
        await self._store.add_job(job)  # first: a job the queue knows of is one the next start can resume
        handle = self._jobs.add(job, admitting=True)
        try:
            position = await self._queue.admit(job, msg, limits, exempt=exempt)
        except BaseException:
            self._jobs.withdraw(job.id)
            await self._store.delete_job(job.id)
            raise
        await self._jobs.admitted(job, position)
        return handle

    async def resume(self, job: Job, handle: Handle) -> None:
        """After a restart: hand a job the last run accepted to the queue again, past every limit."""
        try:
            msg = await self.message(job)
        except Refused as refused:  # a variation whose source image is gone
            await self._jobs.fail(job, str(refused))
            return
        limits, exempt = self._policy.limits(job.requester), self._policy.exempt(job.requester)
        position = await self._queue.resume(job, msg, limits, exempt=exempt)
        if position is not None:
            handle.put(Queued(job.id, position))

    def admit_upscale(self, requester: Requester) -> None:
        """An upscale counts against the user's running jobs and the queue cap while it is made, and takes a
        token from their upscale bucket (the server's figures for jobs)."""
        self.check(requester)
        limits = self._policy.limits(requester)
        upscaling = [job for job in self._jobs.active() if job.kind is Kind.UPSCALE]
        if len(upscaling) >= limits.queue_cap:
            raise queue_full(len(upscaling))
        if self._policy.exempt(requester):
            return
        if sum(job.requester.user_key == requester.user_key for job in upscaling) >= limits.max_running_per_user:
            raise Refused("Your last upscale is still being made; try again in a moment.", UPSCALE_RETRY_S)
        r = requester
        if wait := self._upscales.take(f"{r.platform}:{r.server}:{r.user}", limits.jobs_per_period, limits.period_s):
            raise rate_limited(limits, wait, "upscales")
