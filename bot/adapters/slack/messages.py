"""One channel message per job, edited in place as the job moves: queued, generating with a preview, then done (a
describe job: its prompts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack import blocks
from bot.adapters.slack.api import UNREACHABLE, SlackProblem, call
from bot.jobs import Cancelled, Described, Done, Event, Failed, Handle, Job, Kind, Progress, Queued, Refused, Started
from bot.service import Service

log = logging.getLogger(__name__)

Notify = Callable[[str], Awaitable[None]]  # an ephemeral sentence to the person who asked


@dataclass(frozen=True)
class Place:
    """Where a job's message goes: a channel, and a thread in it when the job started from one."""

    channel: str
    thread_ts: str | None = None


@dataclass
class _Message:
    channel: str
    ts: str
    previews: list[str]  # uploaded preview files, deleted when the job ends


@dataclass(frozen=True)
class Shown:
    """Where a job is shown, as the store keeps it: "<channel> <ts> [<thread ts>] [grid:<file id>]"."""

    channel: str
    ts: str
    thread_ts: str | None = None
    grid: str | None = None  # the file of its grid (an upscale: its image), shared in the message's thread

    def __str__(self) -> str:
        grid = f"grid:{self.grid}" if self.grid else None
        return " ".join(filter(None, (self.channel, self.ts, self.thread_ts, grid)))

    @classmethod
    def parse(cls, text: str) -> Shown:
        """The place `str` wrote (or the "<channel> <ts> [<thread ts>]" of earlier versions)."""
        channel, ts, *rest = text.split()
        grid = next((w.removeprefix("grid:") for w in rest if w.startswith("grid:")), None)
        thread = next((w for w in rest if not w.startswith("grid:")), None)
        return cls(channel, ts, thread, grid)


class Messages:
    """Posts each job's message and keeps it in step with the job's events.

    Status edits come at most every `update_interval` seconds and new previews at most every
    `preview_interval` seconds (Slack rate-limits chat.update per workspace); the final state always lands.
    """

    def __init__(
        self, client: AsyncWebClient, service: Service, *, update_interval: float = 2.0, preview_interval: float = 5.0
    ) -> None:
        self.client = client
        self.service = service
        self.update_interval = update_interval
        self.preview_interval = preview_interval

    async def recover(self, handle: Handle, notify: Notify) -> None:
        """Show a job from before a restart: in its old message when that is known, else in a new one."""
        job = handle.job
        place, message = Place(job.requester.channel), None
        if remembered := await self.service.message(job.id):
            shown = Shown.parse(remembered)
            place, message = Place(shown.channel, shown.thread_ts), _Message(shown.channel, shown.ts, [])
        await self.follow(handle, place, notify, message)

    async def remove(self, job: Job, clicked: Shown | None) -> None:
        """Take a deleted job out of Slack: its grid's file and its message (the one remembered, and the one
        clicked if that is another copy); SlackProblem for what Slack refuses."""
        remembered = await self.service.message(job.id)
        places = [p for p in (Shown.parse(remembered) if remembered else None, clicked) if p is not None]
        for file_id in dict.fromkeys(p.grid for p in places if p.grid):
            try:
                await call(self.client.files_delete, file=file_id)
            except SlackProblem as problem:
                if problem.error not in ("file_not_found", "file_deleted"):
                    raise
        for channel, ts in dict.fromkeys((p.channel, p.ts) for p in places):
            try:
                await call(self.client.chat_delete, channel=channel, ts=ts)
            except SlackProblem as problem:
                if problem.error != "message_not_found":
                    raise

    async def follow(self, handle: Handle, place: Place, notify: Notify, message: _Message | None = None) -> None:
        """Show one job from its first event to its last; problems go to `notify` and the log."""
        job = handle.job
        last_edit = last_preview = float("-inf")
        status = blocks.queued_status(0)
        preview: str | None = None
        previews = True
        try:
            async for event in handle:
                if isinstance(event, Done | Described | Failed | Cancelled):
                    await self._final(job, place, message, event, notify)
                    return
                if isinstance(event, Queued):
                    status = blocks.queued_status(event.position)
                elif isinstance(event, Started):
                    status = blocks.started_status(job)
                elif isinstance(event, Progress):
                    status = blocks.progress_status(event.percent)
                    now = time.monotonic()
                    if event.preview and message and previews and now - last_preview >= self.preview_interval:
                        last_preview = now
                        uploaded = await self._upload_preview(job, event.preview, message)
                        previews = uploaded is not None  # no more tries for this job after a failure
                        preview = uploaded or preview
                    elif now - last_edit < self.update_interval:
                        continue
                message = await self._show(job, place, message, status, preview)
                last_edit = time.monotonic()
        except SlackProblem as problem:
            await self._give_up(job, problem, notify)

    async def _give_up(self, job: Job, problem: SlackProblem, notify: Notify) -> None:
        """The job's message cannot be shown: tell the person and stop the job, since no one would see it."""
        with contextlib.suppress(Exception):
            await notify(str(problem))
        with contextlib.suppress(Refused):
            await self.service.cancel(job.requester, job.id)

    async def _show(
        self, job: Job, place: Place, message: _Message | None, status: str, preview: str | None
    ) -> _Message:
        """Edit the job's message, or post it when there is none yet (or it was deleted)."""
        if message is not None:
            try:
                await self._edit(job, message, status, preview)
                return message
            except SlackProblem as problem:
                if problem.error != "message_not_found":
                    raise
        return await self._post(job, place, status)

    async def _post(self, job: Job, place: Place, status: str) -> _Message:
        kwargs: dict[str, Any] = {
            "channel": place.channel,
            "thread_ts": place.thread_ts,
            "text": blocks.fallback(job, status),
            "blocks": blocks.waiting_blocks(job, status),
        }
        try:
            response = await call(self.client.chat_postMessage, **kwargs)
        except SlackProblem as problem:
            if problem.error != "not_in_channel":
                raise
            # A public channel the bot was not invited to: join it (needs channels:join) and post again.
            await call(self.client.conversations_join, channel=place.channel)
            response = await call(self.client.chat_postMessage, **kwargs)
        message = _Message(str(response["channel"]), str(response["ts"]), [])
        await self._remember(job, Shown(message.channel, message.ts, place.thread_ts))
        return message

    async def _remember(self, job: Job, shown: Shown) -> None:
        try:
            await self.service.remember_message(job.id, str(shown))
        except Exception:
            log.exception("could not remember where job %s is shown", job.id)  # a restart then posts anew

    async def _edit(self, job: Job, message: _Message, status: str, preview: str | None) -> None:
        text = blocks.fallback(job, status)
        try:
            await call(
                self.client.chat_update,
                attempts=1,  # a progress edit that misses is replaced by the next one
                channel=message.channel,
                ts=message.ts,
                text=text,
                blocks=blocks.waiting_blocks(job, status, preview),
            )
        except SlackProblem as problem:
            if problem.error in UNREACHABLE or problem.error in ("message_not_found", "missing_scope"):
                raise
            log.info("skipped a progress edit of job %s: %s", job.id, problem.error)

    async def _upload_preview(self, job: Job, png: bytes, message: _Message) -> str | None:
        """Upload a preview without sharing it anywhere; the message shows it by file id."""
        try:
            response = await call(
                self.client.files_upload_v2, attempts=1, file=png, filename=f"preview-{job.id}.png", title="preview"
            )
        except SlackProblem as problem:
            log.info("no preview for job %s: %s", job.id, problem.error)
            return None
        file_id = str(response["file"]["id"])
        message.previews.append(file_id)
        return file_id

    async def _final(self, job: Job, place: Place, message: _Message | None, event: Event, notify: Notify) -> None:
        """Show how the job ended; mark it delivered once the person can see it."""
        delivered = True
        note: str | None = None
        grid: str | None = None
        try:
            if message is None:  # a job that ended before its message was posted, or one recovered after a restart
                message = await self._post(job, place, blocks.queued_status(0))
            if isinstance(event, Done):
                try:
                    grid = await self._upload_result(job, event, place, message)
                    await self._remember(job, Shown(message.channel, message.ts, place.thread_ts, grid))  # for delete
                except SlackProblem as problem:
                    # The images are stored; a restart after the problem is fixed delivers them again.
                    delivered = problem.error in UNREACHABLE
                    note = f"⚠️ {problem}"
                    await notify(str(problem))
                final = blocks.done_blocks(job, grid, note)
                text = blocks.fallback(job, "done")
            elif isinstance(event, Described):  # the buttons read the prompts from the job as stored
                final = blocks.described_blocks(job, event.prompts)
                text = blocks.fallback(job, "done")
            elif isinstance(event, Failed):
                final = blocks.ended_blocks(job, f"❌ {event.reason}")
                text = blocks.fallback(job, "failed")
            else:
                final = blocks.ended_blocks(job, "🚫 Cancelled.")
                text = blocks.fallback(job, "cancelled")
            try:
                await self._edit_final(job, message, text, final, grid)
            except SlackProblem as problem:
                if problem.error != "message_not_found":
                    raise
                message = await self._post(job, place, blocks.queued_status(0))  # someone deleted it
                await self._edit_final(job, message, text, final, grid)
        except SlackProblem as problem:
            log.warning("could not show the end of job %s: %s", job.id, problem.error)
            delivered = problem.error in UNREACHABLE
            with contextlib.suppress(Exception):
                await notify(str(problem))
        finally:
            if message is not None:
                await self._delete_previews(message)
        if delivered:
            await self.service.delivered(job.id)

    async def _upload_result(self, job: Job, done: Done, place: Place, message: _Message) -> str:
        """Share the grid (an upscale: its one image) in the job message's thread; its file id."""
        upscale = job.kind is Kind.UPSCALE
        response = await call(
            self.client.files_upload_v2,
            file=done.images[0] if upscale else done.grid,
            filename=f"{job.id}.png",
            title=job.prompt[:250],
            alt_txt=job.prompt[:1000],
            channel=message.channel,
            thread_ts=place.thread_ts or message.ts,
        )
        return str(response["file"]["id"])

    async def _edit_final(self, job: Job, message: _Message, text: str, final: list[Any], grid: str | None) -> None:
        try:
            await call(self.client.chat_update, channel=message.channel, ts=message.ts, text=text, blocks=final)
        except SlackProblem as problem:
            if problem.error != "invalid_blocks" or grid is None:
                raise
            # A file Slack has not finished processing cannot be shown yet; the thread holds it meanwhile.
            await asyncio.sleep(1.0)
            try:
                await call(self.client.chat_update, channel=message.channel, ts=message.ts, text=text, blocks=final)
            except SlackProblem:
                without = [b for b in final if b.get("type") != "image"]
                await call(self.client.chat_update, channel=message.channel, ts=message.ts, text=text, blocks=without)

    async def _delete_previews(self, message: _Message) -> None:
        for file_id in message.previews:
            try:
                await call(self.client.files_delete, attempts=1, file=file_id)
            except SlackProblem as problem:
                log.info("could not delete preview %s: %s", file_id, problem.error)
        message.previews.clear()
