"""The one seam between the service and whatever runs its jobs: a JobQueue.

Two implementations: `bot.local_queue.LocalQueue` (the fair scheduler, the rate limiter and one supervised
generator process on this machine) and `bot.redis_queue.RedisQueue` (a pool of GPU workers and bot instances
sharing one queue in Redis). The service builds each job's Generate message at admission and never asks which
of the two it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from bot.config import LimitSettings
from bot.jobs import Job
from generator import protocol as wire


@dataclass(frozen=True)
class Backend:
    """What runs the jobs, as the banner and the health check show it."""

    where: str  # a phrase for the operator: "Janus-Pro-7B on cuda, 16 image slots"
    up: bool  # jobs can run: the generator is up, or the pool's Redis answers
    model: str | None  # None while unknown (a pool whose workers have not reported)
    device: str | None
    max_images: int  # the most images one job may ask for
    restarts: int = 0  # generator restarts since start (local only)
    prompt_tokens: int | None = None  # the most tokens a prompt's text may take, when known
    tokenizer: str | None = None  # the model's tokenizer.json on this machine, to count them with


class JobQueue(Protocol):
    """Admits jobs under the limits, runs them fairly, and streams what happens to them.

    `events()` yields, for every admitted or resumed job, Waiting whenever its place changes, then JobStarted,
    JobProgress, and exactly one final message (JobDone, JobFailed or JobCancelled); it ends after `close()`.
    """

    async def start(self) -> None:
        """Connect or start the generator; returns once jobs can be admitted."""
        ...

    @property
    def backend(self) -> Backend:
        """What runs the jobs now."""
        ...

    @property
    def paused(self) -> bool:
        """Whether a bot admin has stopped new jobs from starting."""
        ...

    async def admit(self, job: Job, msg: wire.Work, limits: LimitSettings, *, exempt: bool) -> int:
        """Queue a new job if its user's limits, the bans and the queue cap allow it, else raise Refused; its
        position (1 is next). `exempt` (bot and server admins) skips the per-user limits, never the cap."""
        ...

    async def resume(self, job: Job, msg: wire.Work, limits: LimitSettings, *, exempt: bool) -> int | None:
        """After a restart: carry on with a job the last run accepted, past every limit (it was admitted once);
        its position when known now (else a Waiting message brings it)."""
        ...

    async def cancel(self, job_id: str) -> bool:
        """Stop a job: JobCancelled follows, or nothing if it already ended. True when the job was waiting and
        has been taken out (its JobCancelled is on its way at once), False when it runs (it follows when the
        job stops) or is unknown."""
        ...

    async def set_paused(self, paused: bool) -> None:
        """Start no new jobs (running ones finish), or start them again."""
        ...

    async def set_ban(self, platform: str, server: str, user: str, banned: bool) -> None:
        """Refuse (or again admit) a user's jobs in a server, wherever the queue is shared."""
        ...

    def positions(self) -> dict[str, int]:
        """This bot's waiting jobs and their positions, as last reported."""
        ...

    async def position(self, job_id: str) -> int | None:
        """A waiting job's position in the whole queue; None unless it is waiting."""
        ...

    def events(self) -> AsyncIterator[wire.Message]:
        """Waiting, JobStarted, JobProgress and the final message of each job, in order; ends after close()."""
        ...

    async def metrics(self) -> str:
        """The backend's own metrics in Prometheus' text format (the pool's workers); may be empty."""
        ...

    async def close(self, grace: float) -> None:
        """Stop taking jobs; let running ones finish for up to `grace` seconds where they run here; end events().

        Jobs still waiting or running are the next start's to resume.
        """
        ...
