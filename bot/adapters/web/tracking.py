"""Jobs the web adapter follows: where each one stands (replayed to late listeners), its percent and preview."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bot.jobs import FINAL_EVENTS, Cancelled, Described, Done, Event, Failed, Handle, Progress, Queued, Started

log = logging.getLogger(__name__)

KEEP_FINISHED = 500  # finished jobs whose latest events stay in memory
HEARTBEAT_S = 15.0

Message = tuple[str, dict[str, Any]]  # (SSE event name, JSON data); ("", {}) is a heartbeat


def job_url(job_id: str) -> str:
    """Where the API serves a job."""
    return f"/api/jobs/{job_id}"


def image_urls(job_id: str, count: int) -> list[str]:
    """Each image of a finished job, in order."""
    return [f"{job_url(job_id)}/images/{i}.png" for i in range(count)]


def message(event: Event, preview_version: int = 0) -> Message:
    """A job event as a server-sent event: its name and JSON data."""
    base = {"job_id": event.job_id}
    if isinstance(event, Queued):
        return "queued", {**base, "position": event.position}
    if isinstance(event, Started):
        return "started", base
    if isinstance(event, Progress):
        preview = f"{job_url(event.job_id)}/preview.png?v={preview_version}" if preview_version else None
        return "progress", {**base, "percent": event.percent, "preview_url": preview}
    if isinstance(event, Done):
        urls = image_urls(event.job_id, len(event.images))
        grid = f"{job_url(event.job_id)}/grid.png"
        return "done", {**base, "seed": str(event.seed), "grid_url": grid, "image_urls": urls}  # exact in JavaScript
    if isinstance(event, Described):  # done too, for listeners that wait for done, failed or cancelled
        return "done", {**base, "seed": str(event.seed), "prompts": event.prompts}
    if isinstance(event, Failed):
        return "failed", {**base, "error": event.reason}
    assert isinstance(event, Cancelled)
    return "cancelled", base


class Tracked:
    """One job followed to its end; `stream()` replays where it stands, then goes on live.

    Only the latest event of each kind is kept (queued with its latest position, started, the latest
    progress, the final one): a job waiting behind n others hears of n positions, so keeping them all
    would grow with the square of the queue. A finished job's preview is dropped; its grid replaces it.
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.latest: dict[str, tuple[int, Message]] = {}  # event name -> (sequence number, message)
        self.sequence = 0
        self.percent: int | None = None
        self.preview: bytes | None = None
        self.preview_version = 0
        self.ended = False  # the final event arrived, or the adapter is closing
        self._changed = asyncio.Condition()

    @property
    def history(self) -> list[Message]:
        """What a late listener hears: the latest event of each kind, in the order they came."""
        return [item for _, item in sorted(self.latest.values(), key=lambda entry: entry[0])]

    async def record(self, event: Event) -> None:
        """Take one event from the job's handle."""
        if isinstance(event, Progress):
            self.percent = event.percent
            if event.preview is not None:
                self.preview = event.preview
                self.preview_version += 1
        elif isinstance(event, Done | Described):
            self.percent = 100
        name, data = message(event, self.preview_version)
        async with self._changed:
            self.sequence += 1
            if isinstance(event, Queued):  # waiting again (its generator restarted): an earlier run is void
                self.latest.pop("started", None)
                self.latest.pop("progress", None)
            if isinstance(event, FINAL_EVENTS):
                self.preview = None
                if "progress" in self.latest:
                    number, (_, shown) = self.latest["progress"]
                    self.latest["progress"] = number, ("progress", {**shown, "preview_url": None})
            self.latest[name] = self.sequence, (name, data)
            self.ended = self.ended or isinstance(event, FINAL_EVENTS)
            self._changed.notify_all()

    async def end(self) -> None:
        """Close every stream (the adapter is shutting down)."""
        async with self._changed:
            self.ended = True
            self._changed.notify_all()

    async def stream(self, heartbeat: float = HEARTBEAT_S) -> AsyncIterator[Message]:
        """Where the job stands, then what changes as it comes (a heartbeat when quiet); ends after the final event.

        A listener that falls behind hears only the latest of each kind of event it missed.
        """
        heard = 0  # the sequence number of the last event this listener was sent

        def news() -> bool:
            return self.sequence > heard or self.ended

        while True:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(news), heartbeat)
                fresh = sorted(entry for entry in self.latest.values() if entry[0] > heard)
                heard = self.sequence
                ended = self.ended
            for _, item in fresh:
                yield item
            if ended:
                return
            if not fresh:
                yield "", {}


class Tracker:
    """The jobs the web adapter follows, the live ones and the most recent finished ones."""

    def __init__(self, on_final: Callable[[str], Awaitable[None]]) -> None:
        self._jobs: OrderedDict[str, Tracked] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_final = on_final

    def get(self, job_id: str) -> Tracked | None:
        """The followed job, if it is still remembered."""
        return self._jobs.get(job_id)

    def follow(self, handle: Handle) -> Tracked:
        """Follow a job's handle to its final event in the background."""
        tracked = self._jobs.get(handle.job.id) or Tracked(handle.job.id)
        self._jobs[handle.job.id] = tracked
        task = asyncio.create_task(self._follow(handle, tracked))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return tracked

    async def _follow(self, handle: Handle, tracked: Tracked) -> None:
        try:
            async for event in handle:
                await tracked.record(event)
            await self._on_final(tracked.job_id)
        except Exception:
            log.exception("could not follow job %s", tracked.job_id)
        finally:
            self._forget_old()

    def _forget_old(self) -> None:
        finished = [job_id for job_id, tracked in self._jobs.items() if tracked.ended]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job_id]

    async def close(self) -> None:
        """Stop following and end every open stream."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for tracked in self._jobs.values():
            await tracked.end()
