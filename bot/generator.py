"""The generator as the bot's core sees it: what the process client implements and test fakes imitate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from bot.config import LimitSettings
from bot.jobs import Job
from generator import protocol as wire


class Generator(Protocol):
    """One image generator (a process per GPU behind a supervisor, or a fake in tests).

    `events()` yields Started, Progress, Done, Failed and Cancelled for submitted jobs; every submitted
    job ends in exactly one of Done, Failed or Cancelled. Done carries one PNG and one row-major token
    grid per image. The iterator ends after `close()`.
    """

    async def start(self) -> wire.Ready:
        """Start the generator and wait until the model is loaded."""
        ...

    async def submit(self, msg: wire.Generate) -> None:
        """Queue a job; it starts as soon as the generator has free image slots."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Stop a job; answered by Cancelled, or by nothing if it already finished."""
        ...

    async def close(self) -> None:
        """Let the current step finish, then stop the generator."""
        ...

    def events(self) -> AsyncIterator[wire.Message]:
        """Messages from the generator about submitted jobs, in the order they happened."""
        ...


@runtime_checkable
class SharedQueue(Generator, Protocol):
    """A generator pool fed by one queue that several bot instances share (bot.redis_queue over Redis).

    The queue, not the service, then enforces the limits, bans and cap (atomically, across instances),
    orders jobs fairly across every instance's users, and reports positions as Waiting events.
    """

    async def admit(self, job: Job, msg: wire.Generate, limits: LimitSettings, *, admin: bool) -> int:
        """Queue a new job if the limits allow it, else raise Refused; its position (1 is next)."""
        ...

    async def requeue(self, job: Job, msg: wire.Generate, limits: LimitSettings, *, admin: bool) -> None:
        """After a restart: keep, re-deliver or queue again a job the last run accepted."""
        ...

    async def set_ban(self, platform: str, server: str, user: str, banned: bool) -> None:
        """Apply a ban, or lift it, in every instance."""
        ...

    async def set_paused(self, paused: bool) -> None:
        """Stop every worker from starting jobs (running ones finish), or let them start again."""
        ...

    def positions(self) -> dict[str, int]:
        """This instance's waiting jobs and their positions, as last reported."""
        ...

    async def position(self, job_id: str) -> int | None:
        """A waiting job's position in the whole queue; None unless waiting."""
        ...
