"""Whether and how a job enters: the bot accepting, bans and the blocklist, the generator's capacity, then
the job recorded and handed to the queue under its user's limits (upscales, made in the bot: their own)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace

from tokenizers import Tokenizer

from bot import images
from bot.jobqueue import Backend, JobQueue
from bot.jobs import (
    BOTTOM_HALF,
    Handle,
    Invalid,
    Job,
    Kind,
    Options,
    Queued,
    Refused,
    Region,
    Requester,
    Status,
    checked_prompt,
    checked_region,
    new_job_id,
)
from bot.lifecycle import Lifecycle
from bot.policy import Policy
from bot.ratelimit import Clock, TokenBucket, queue_full, rate_limited
from bot.results import Results
from bot.store import Store
from generator import protocol as wire
from generator.protocol import SEED_MAX

UPSCALE_RETRY_S = 5.0
MOST_PROMPTS = 8  # a describe's answers
TOKEN_MARGIN = 2  # a text's tokens alone and inside the chat template can differ by a merge at either end

log = logging.getLogger(__name__)


class PromptLengths:
    """Counts a prompt's tokens with the model's own tokenizer (torch-free), so that one too long for the
    generator is refused now, with a sentence, not after its wait in the queue."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._tokenizer: Tokenizer | None = None

    def check(self, name: str, text: str, backend: Backend) -> None:
        """Refused when `text` cannot fit the generator's prompt tokens (nothing is checked when unknown)."""
        if backend.prompt_tokens is None or backend.tokenizer is None:
            return  # a pool's workers, or a model without a tokenizer file here: the generator checks
        if backend.tokenizer != self._path:
            self._path, self._tokenizer = backend.tokenizer, None
            try:
                self._tokenizer = Tokenizer.from_file(backend.tokenizer)
            except Exception as error:  # not a tokenizers file: the generator still says it, later
                log.warning("cannot count prompt tokens with %s: %s", backend.tokenizer, error)
        if self._tokenizer is None:
            return
        count = len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        most = backend.prompt_tokens - TOKEN_MARGIN
        if count > most:
            raise Invalid(f"The {name} is too long for this model ({count} tokens, at most {most}); shorten it.")


class Admission:
    """The door of the service; `accepting` is False while the bot starts or stops."""

    def __init__(self, policy: Policy, store: Store, queue: JobQueue, jobs: Lifecycle, results: Results,
                 clock: Clock) -> None:
        self.accepting = False
        self._settings = policy.settings.images
        self._policy = policy
        self._store = store
        self._queue = queue
        self._jobs = jobs
        self._results = results
        self._upscales = TokenBucket(clock)  # upscales are made outside the queue: a bucket of their own
        self._lengths = PromptLengths()

    def check(self, requester: Requester, prompt: str | None = None, count: int | None = None,
              negative: str | None = None) -> None:
        """Refused unless the bot is accepting, the requester may ask here, and the job fits the generator."""
        if not self.accepting:
            raise Refused("The bot is restarting; try again in a minute.", 60.0)
        self._policy.check(requester, prompt)
        self._policy.check_channel(requester)
        backend = self._queue.backend
        if count is not None and count > backend.max_images:
            raise Refused(f"This bot makes at most {backend.max_images} images per job; ask for {backend.max_images} "
                          f"or fewer.")
        for name, text in (("prompt", prompt), ("negative prompt", negative)):
            if text is not None:
                self._lengths.check(name, text, backend)

    async def message(self, job: Job) -> wire.Work:
        """What the generator is told to make for a job: a variation's kept rows, a region's source grid, an
        image prompt's picture, read from the store; a describe job's picture and instruction."""
        if job.kind is Kind.DESCRIBE:
            told = self._policy.settings.describe
            return wire.Describe(job.id, await self._results.source(job), job.options.count, job.options.temperature,
                                 job.seed, told.instruction, told.max_tokens)
        prefix = await self._results.kept_rows(job) if job.kind is Kind.VARIATION else None
        codes = None
        if job.kind is Kind.REGION:
            codes = (await self._results.image(job.parent_id or "", job.parent_index or 0)).tokens
        image = await self._results.source(job) if job.source else None
        region = list(job.region) if job.region else None
        o = job.options
        return wire.Generate(job.id, job.prompt, o.count, o.cfg, o.temperature, job.seed, prefix, o.negative,
                             image=image, codes=codes, region=region)

    def describe_options(self, count: int | None) -> Options:
        """A describe job's options: `count` prompts ([describe] count by default) at [describe] temperature."""
        told = self._policy.settings.describe
        n = told.count if count is None else count
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MOST_PROMPTS:
            raise Invalid(f"count must be a whole number from 1 to {MOST_PROMPTS} prompts; you gave {n}.")
        return Options(n, 1.0, told.temperature)

    async def admit(self, requester: Requester, prompt: str, options: Options, *, source: bytes | None = None,
                    **parent: object) -> Handle:
        """Record a new job (with the picture it starts from, if any), then queue it under the requester's
        limits; Refused undoes the record."""
        drawn = None if parent.get("kind") is Kind.DESCRIBE else options.count  # a describe draws no images
        self.check(requester, prompt, drawn, options.negative)
        seed = options.seed if options.seed is not None else random.randint(0, SEED_MAX)
        job = Job(new_job_id(), requester, prompt, options, seed, time.time(), **parent)  # type: ignore[arg-type]
        if source is not None:
            job = replace(job, source=await self._results.keep_source(job.id, source))
        msg = await self.message(job)
        limits, exempt = self._policy.limits(requester), self._policy.exempt(requester)
        await self._store.add_job(job)  # first: a job the queue knows of is one the next start can resume
        handle = self._jobs.add(job, admitting=True)
        try:
            position = await self._queue.admit(job, msg, limits, exempt=exempt)
        except BaseException:
            self._jobs.withdraw(job.id)
            await self._store.delete_job(job.id)
            await self._results.forget(job)
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

    async def parent(self, job_id: str, index: int | None = None, *, images_optional: bool = False) -> Job:
        """The job a button points at (with image `index`, when given), or Refused saying why it cannot be used;
        a describe job only when `images_optional` (it has prompts, no images)."""
        job = self._jobs.get(job_id) or await self._store.job(job_id)
        if job is None:
            raise Refused("That job no longer exists; start a new one with /imagine.")
        if job.deleted:
            raise Refused("That job was deleted; start a new one with /imagine.")
        if job.kind is Kind.DESCRIBE and (index is not None or not images_optional):
            raise Refused("That job read a picture into prompts and has no images of its own; use its prompts with "
                          "/imagine.")
        if index is not None:
            if job.status is not Status.DONE:
                raise Refused("That job has no images yet; wait until it is done.")
            if not 0 <= index < job.options.count:
                raise Refused(f"That job has images 1 to {job.options.count}; pick one of those.")
        return job

    def options(self, requester: Requester, count: int | None, cfg: float | None, temperature: float | None,
                seed: int | None, negative: str | None) -> Options:
        """An /imagine's options: what the requester gave, the server's defaults for the rest."""
        d = self._policy.defaults(requester)
        return Options.checked(d.count if count is None else count, d.cfg if cfg is None else cfg,
                               d.temperature if temperature is None else temperature, seed, negative)

    async def source(self, image: bytes | None, region: object | None) -> tuple[bytes | None, Region | None]:
        """The picture an /imagine starts from (checked) and the cells of it made again (the bottom half unless
        `region` says); (None, None) for a job from text alone."""
        if image is None:
            if region is not None:
                raise Refused("A region says which part of a picture to make again; send the picture too.")
            return None, None
        return await self.checked_upload(image), checked_region(region) if region is not None else BOTTOM_HALF

    async def checked_upload(self, data: bytes) -> bytes:
        """A picture a user starts from, as a plain PNG (decoded in a thread, off the event loop), or Invalid
        saying what to send instead."""
        limits = self._settings
        try:
            return await asyncio.to_thread(images.checked_upload, data, round(limits.max_upload_mb * 2**20),
                                           round(limits.max_upload_megapixels * 1e6))
        except images.NotAPicture as refusal:
            raise Invalid(str(refusal)) from None

    async def admit_upscale(self, requester: Requester, parent: Job, index: int) -> Handle:
        """Record an upscale of image `index` of `parent`, to be made in the bot. It counts against the user's
        running jobs and the queue cap while it is made, and takes a token from their upscale bucket (the
        server's figures for jobs)."""
        self._check_upscale(requester)
        options = replace(parent.options, count=1)
        job = Job(new_job_id(), requester, parent.prompt, options, parent.seed, time.time(), kind=Kind.UPSCALE,
                  parent_id=parent.id, parent_index=index, model=parent.model)
        await self._store.add_job(job)
        return self._jobs.add(job)

    def _check_upscale(self, requester: Requester) -> None:
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


def remixed(parent: Job, prompt: str | None, negative: str | None) -> tuple[str, Options]:
    """A new job's prompt and options from its parent's, a new seed, and what a remix changed."""
    text = parent.prompt if prompt is None else checked_prompt(prompt)
    options = replace(parent.options, seed=None)
    if negative is not None:
        o = options
        options = Options.checked(o.count, o.cfg, o.temperature, None, negative)
    return text, options
