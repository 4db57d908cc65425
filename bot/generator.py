"""The generator as a job queue drives it: what the process client implements and test fakes imitate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from generator import protocol as wire


class Generator(Protocol):
    """One image generator (a process per GPU behind a supervisor, or a fake in tests).

    `events()` yields JobStarted, JobProgress, JobDone, JobFailed and JobCancelled for submitted jobs; every
    submitted job ends in exactly one of JobDone, JobFailed or JobCancelled. JobDone carries one PNG and one
    row-major token grid per image. The iterator ends after `close()`.
    """

    async def start(self) -> wire.Ready:
        """Start the generator and wait until the model is loaded."""
        ...

    async def submit(self, msg: wire.Work) -> None:
        """Queue a job (Generate or Describe); it starts as soon as the generator has room."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Stop a job; answered by JobCancelled, or by nothing if it already finished."""
        ...

    async def close(self) -> None:
        """Let the current step finish, then stop the generator."""
        ...

    def events(self) -> AsyncIterator[wire.Message]:
        """Messages from the generator about submitted jobs, in the order they happened."""
        ...
