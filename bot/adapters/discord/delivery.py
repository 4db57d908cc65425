"""One message per job, edited in place: through the interaction while its token lasts, then in the channel."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from typing import Any

import discord

from bot.adapters.discord import messages
from bot.jobs import FINAL_EVENTS, Described, Done, Event, Handle, Job, Kind, Progress
from bot.service import Service

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()


class CannotPost(Exception):
    """Discord refuses the bot a message in the job's channel (missing permissions or access)."""


class Reply:
    """Where a job's message lives.

    An interaction's token lasts 15 minutes; after that (or when Discord refuses it) the message moves to a
    normal channel message that mentions the requester once, and later edits go to that message.
    """

    def __init__(self, client: discord.Client, job: Job, interaction: discord.Interaction | None = None) -> None:
        self._client = client
        self._job = job
        self._interaction = interaction
        self._message: discord.PartialMessage | discord.Message | None = None
        self._files: dict[str, bytes] = {}
        self.refused: discord.Forbidden | None = None  # once the channel refused a message, it is not asked again

    async def show(self, content: str, files: dict[str, bytes] | None, view: discord.ui.View | None) -> None:
        """Put `content` and the buttons on the job's message, and `files` in place of the earlier ones (None
        keeps them: a progress edit without a new preview uploads nothing)."""
        if files is not None:
            self._files = files
        if self._interaction is not None and not self._interaction.is_expired():
            try:
                await self._interaction.edit_original_response(
                    content=content, attachments=_files(files), view=view, allowed_mentions=NO_PINGS
                )
                return
            except discord.HTTPException as error:
                if error.status not in (401, 404):  # 401: the token has expired; 404: someone deleted the message
                    raise
                log.info("job %s: interaction message gone (%s); posting in the channel", self._job.id, error.status)
        self._interaction = None
        if self.refused is not None:
            raise CannotPost(self.refused)
        if self._message is not None:
            try:
                await self._message.edit(content=content, attachments=_files(files), view=view)
                return
            except discord.NotFound:
                self._message = None
        channel = self._client.get_partial_messageable(int(self._job.requester.channel))
        try:
            self._message = await channel.send(
                content=content,
                files=_files(self._files),
                view=view or discord.utils.MISSING,
                # The requester, once; never someone a prompt names, never @everyone.
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False,
                                                         users=[discord.Object(int(self._job.requester.user))]),
            )
        except discord.Forbidden as error:
            self.refused = error
            raise CannotPost(error) from None

    async def tell_requester(self, text: str) -> None:
        """A direct message to the job's requester, if Discord lets the bot send one."""
        try:
            dm = await self._client.create_dm(discord.Object(int(self._job.requester.user)))
            await dm.send(text, allowed_mentions=NO_PINGS)
        except (discord.HTTPException, ValueError) as error:
            log.info("job %s: could not tell the requester in a direct message either (%s)", self._job.id, error)


def _files(files: dict[str, bytes] | None) -> Any:
    """Fresh uploads (a discord.File is read once), or MISSING to leave the attachments alone."""
    if files is None:
        return discord.utils.MISSING
    return [discord.File(io.BytesIO(data), filename=name) for name, data in files.items()]


def _content(job: Job, event: Event) -> tuple[str, dict[str, bytes], discord.ui.View | None]:
    text = messages.text(job, event)
    if isinstance(event, Done):
        return text, {messages.file_name(job, event): event.grid}, messages.result_view(job)
    if isinstance(event, Described):
        return text, {}, messages.described_view(job, len(event.prompts))
    if isinstance(event, FINAL_EVENTS):
        return text, {}, None
    return text, {}, messages.working_view(job)  # files: the preview, which follow() keeps


async def follow(service: Service, handle: Handle, reply: Reply, every_s: float) -> None:
    """Show a job's events on its message until the final one, at most one edit per `every_s` seconds.

    Edits coalesce: a burst of progress shows only its latest state (and the latest preview). A job starting
    from a picture (an image prompt, Vary (Region)) shows its first preview at once, out of turn: it is that
    picture with the cells it keeps. Once the final state is shown the job is marked delivered, so a restart
    does not post it again.
    """
    job = handle.job
    state: Event | None = None
    preview: dict[str, bytes] = {}
    shown: dict[str, bytes] | None = None  # the preview on the message (None: nothing shown yet)
    changed = asyncio.Event()
    first_preview = asyncio.Event()  # ends the editor's pause, once
    showing = asyncio.Lock()

    async def editor() -> None:
        nonlocal shown
        while True:
            await changed.wait()
            changed.clear()
            assert state is not None
            content, _, view = _content(job, state)
            files, shown = (None if preview is shown else preview), preview
            if preview:
                first_preview.clear()  # this edit shows it
            async with showing:
                try:
                    await reply.show(content, files, view)
                except CannotPost:
                    pass  # said once, with the final state
                except discord.HTTPException as error:
                    log.warning("job %s: could not show progress: %s", job.id, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_preview.wait(), every_s)

    task = asyncio.create_task(editor())
    try:
        async for event in handle:
            if isinstance(event, FINAL_EVENTS):
                break
            if isinstance(event, Progress) and event.preview is not None:
                if not preview and job.region is not None:  # the picture it starts from, with the kept cells
                    first_preview.set()
                preview = {messages.file_name(job, event): event.preview}
            state = event
            changed.set()
    except BaseException:
        task.cancel()
        raise
    # An edit cut off halfway could still land after the final one, or post a second message.
    async with showing:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    content, files, view = _content(job, event)
    try:
        await reply.show(content, files, view)
    except CannotPost as refused:
        # Kept undelivered: posted after the next start, once the bot may write in the channel.
        log.warning("job %s: Discord refuses the bot a message in channel %s (%s); give it View Channel, Send "
                    "Messages and Attach Files there. The result is kept and posted after the next start",
                    job.id, job.requester.channel, refused.args[0].text or refused.args[0].status)
        what = f"images for {messages.bold_prompt(job)}"
        if job.kind is Kind.DESCRIBE:
            what = f"prompts for {messages.described_picture(job)}"
        await reply.tell_requester(
            f"I could not post your {what} in <#{job.requester.channel}>: the bot may not send messages there. "
            f"Ask a server admin to let it; they will be posted then."
        )
        return
    await service.delivered(job.id)
