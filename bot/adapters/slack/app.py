"""The bolt app: `/imagine`, `/imagine-admin`, the message shortcuts and the job buttons, each a free function that
answers at once."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack import blocks, files
from bot.adapters.slack.admin import run_admin
from bot.adapters.slack.api import SlackProblem, call
from bot.adapters.slack.messages import Messages, Notify, Place, Shown
from bot.commandline import CommandError, parse_imagine
from bot.jobs import REGIONS, Handle, Job, Kind, Refused, Requester, Strength
from bot.service import Service

log = logging.getLogger(__name__)
PLATFORM = "slack"
NOT_ADMIN = "Sorry, /imagine-admin is for workspace admins and owners and for this bot's admins."
NO_PICTURE = "Vary with janus starts from a picture; use it on a message with a PNG, JPEG, WebP or GIF file."
NOTHING_TO_DESCRIBE = ("Describe with janus reads a picture into prompts; use it on a message with a PNG, JPEG, WebP "
                       "or GIF file, or on one of my pictures.")  # fmt: skip


class SlackBot:
    """What the listeners share: the service, who is a workspace admin, and the jobs being shown."""

    def __init__(
        self,
        service: Service,
        *,
        update_interval: float = 2.0,
        preview_interval: float = 5.0,
        admin_cache_s: float = 300.0,
        lookup_timeout: float = 2.0,
    ) -> None:
        self.service = service
        self.update_interval = update_interval
        self.preview_interval = preview_interval
        self.admin_cache_s = admin_cache_s
        self.lookup_timeout = lookup_timeout
        self._admins: dict[tuple[str, str], tuple[float, bool]] = {}
        self.lookup_problem: str | None = None  # why the last users.info lookup failed, for admins told no
        self._following: set[asyncio.Task[None]] = set()

    @property
    def max_upload_bytes(self) -> int:
        """The largest picture a job may start from ([images] max_upload_mb)."""
        return round(self.service.settings.images.max_upload_mb * 2**20)

    async def requester(self, client: AsyncWebClient, team: str, channel: str, user: str) -> Requester:
        """Who is asking; workspace admins and owners (users.info, cached) are admins of their workspace."""
        return Requester(PLATFORM, team, channel, user, await self._workspace_admin(client, team, user))

    async def _workspace_admin(self, client: AsyncWebClient, team: str, user: str) -> bool:
        cached = self._admins.get((team, user))
        if cached is not None and time.monotonic() - cached[0] < self.admin_cache_s:
            return cached[1]
        try:
            response = await asyncio.wait_for(call(client.users_info, attempts=1, user=user), self.lookup_timeout)
        except (SlackProblem, TimeoutError) as problem:
            self.lookup_problem = str(problem) if isinstance(problem, SlackProblem) else "Slack did not answer in time."
            log.warning("could not look up whether %s is a workspace admin: %s", user, self.lookup_problem)
            return False  # asked again next time
        self.lookup_problem = None
        info: dict[str, Any] = response.get("user") or {}
        admin = bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))
        self._admins[(team, user)] = (time.monotonic(), admin)
        return admin

    def _messages(self, client: AsyncWebClient) -> Messages:
        return Messages(
            client, self.service, update_interval=self.update_interval, preview_interval=self.preview_interval
        )

    def follow(self, client: AsyncWebClient, handle: Handle, place: Place, notify: Notify) -> asyncio.Task[None]:
        """Show a job in its channel until it ends, in the background."""
        return self._track(self._messages(client).follow(handle, place, notify), handle.job.id)

    def recover(self, client: AsyncWebClient, handle: Handle, notify: Notify) -> asyncio.Task[None]:
        """Show a job from before a restart until it ends, in its old message when possible, in the background."""
        return self._track(self._messages(client).recover(handle, notify), handle.job.id)

    async def remove(self, client: AsyncWebClient, job: Job, clicked: Shown | None) -> None:
        """Take a deleted job's message and grid out of Slack."""
        await self._messages(client).remove(job, clicked)

    def _track(self, work: Awaitable[None], job_id: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._logged(work, job_id))
        self._following.add(task)
        task.add_done_callback(self._following.discard)
        return task

    @staticmethod
    async def _logged(work: Awaitable[None], job_id: str) -> None:
        try:
            await work
        except Exception:
            log.exception("showing job %s in Slack failed", job_id)

    async def close(self) -> None:
        """Stop following jobs; undelivered results are shown again after the next start."""
        for task in self._following:
            task.cancel()
        await asyncio.gather(*self._following, return_exceptions=True)


def _bot(context: AsyncBoltContext) -> SlackBot:
    bot: SlackBot = context["janus"]
    return bot


def _ephemeral(respond: AsyncRespond) -> Notify:
    async def notify(text: str) -> None:
        await respond(text=text, response_type="ephemeral", replace_original=False)

    return notify


async def imagine(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext) -> None:
    """/imagine <prompt> [--count N] [--cfg W] [--temperature T] [--seed S] [--no TEXT]: queue images, show them in
    the channel.

    The acknowledgement carries the answer (the queue position or why not), so the quick work comes first.
    """
    bot = _bot(context)
    try:
        parsed = parse_imagine(blocks.unescape(command.get("text") or ""))
    except CommandError as error:
        await ack(text=str(error), response_type="ephemeral")
        return
    requester = await bot.requester(context.client, command["team_id"], command["channel_id"], command["user_id"])
    try:
        handle = await bot.service.submit(
            requester, parsed.prompt, count=parsed.count, cfg=parsed.cfg, temperature=parsed.temperature,
            seed=parsed.seed, negative=parsed.negative,
        )  # fmt: skip
    except Refused as refused:
        await ack(text=str(refused), response_type="ephemeral")
        return
    status = await bot.service.status(handle.job.id)
    position = status.position if status is not None and status.position is not None else 0
    await ack(text=f"Queued, position {position}." if position else "Starting now.", response_type="ephemeral")
    bot.follow(context.client, handle, Place(command["channel_id"]), _ephemeral(respond))


async def imagine_admin(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
    """/imagine-admin <subcommand>: view and change this workspace's settings, bans, blocklist and queue."""
    bot = _bot(context)
    requester = await bot.requester(context.client, command["team_id"], command["channel_id"], command["user_id"])
    if not bot.service.policy.is_admin(requester):
        why = f" I could not check whether you are one: {bot.lookup_problem}" if bot.lookup_problem else ""
        await ack(text=NOT_ADMIN + why, response_type="ephemeral")
        return
    try:
        reply = await run_admin(bot.service, requester, blocks.unescape(command.get("text") or ""))
    except Refused as refused:
        reply = str(refused)
    await ack(text=reply, response_type="ephemeral")


async def button(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """A job button (reroll, remix, upscale U, vary V, info, delete, cancel, a describe job's Imagine k) or menu
    (strong variations, Vary (Region)); the job id travels in the value."""
    await ack()
    bot = _bot(context)
    notify = _ephemeral(respond)
    value = action.get("value") or (action.get("selected_option") or {}).get("value", "")
    clicked = blocks.parse_button(action.get("action_id", ""), value)
    if clicked is None:
        await notify("That button is from an older version of this bot; start a new job with /imagine.")
        return
    channel = (body.get("channel") or {}).get("id") or body["container"]["channel_id"]
    team = (body.get("team") or {}).get("id") or body["user"].get("team_id", "")
    requester = await bot.requester(context.client, team, channel, body["user"]["id"])
    thread = (body.get("message") or {}).get("thread_ts") or (body.get("container") or {}).get("thread_ts")
    try:
        if clicked.verb == "cancel":
            await bot.service.cancel(requester, clicked.job_id)
            return
        if clicked.verb in ("info", "remix"):
            job = await bot.service.job(clicked.job_id)
            if clicked.verb == "info":
                await notify(blocks.info_text(job))
            else:  # the trigger id is good for three seconds: open the modal first thing
                view = blocks.remix_view(job, channel, thread)
                await call(context.client.views_open, attempts=1, trigger_id=body["trigger_id"], view=view)
            return
        if clicked.verb == "delete":
            job = await bot.service.delete(requester, clicked.job_id)
            await bot.remove(context.client, job, _clicked(body, channel, thread))
            gone = "its prompts are" if job.kind is Kind.DESCRIBE else "its pictures are"
            await notify(f"Deleted *{blocks.subject(job)}*: {gone} gone.")
            return
        if clicked.verb == "prompt":
            handle = await _imagine_prompt(bot, requester, clicked.job_id, clicked.index or 0)
        elif clicked.verb == "region":
            region = REGIONS[clicked.region or "bottom half"]
            handle = await bot.service.vary_region(requester, clicked.job_id, clicked.index or 0, region)
        elif clicked.verb == "reroll":
            handle = await bot.service.reroll(requester, clicked.job_id)
        elif clicked.verb == "upscale":
            handle = await bot.service.upscale(requester, clicked.job_id, clicked.index or 0)
        else:
            handle = await bot.service.vary(requester, clicked.job_id, clicked.index or 0, Strength(clicked.strength))
    except (Refused, SlackProblem) as refused:
        await notify(str(refused))
        return
    bot.follow(context.client, handle, Place(channel, thread), notify)


def _clicked(body: dict[str, Any], channel: str, thread: str | None) -> Shown | None:
    """The message a button was clicked on, and the grid file it shows, if the payload says."""
    message = body.get("message") or {}
    ts = message.get("ts") or (body.get("container") or {}).get("message_ts")
    if not ts:
        return None
    images = [b for b in message.get("blocks") or [] if b.get("type") == "image"]
    grid = (images[0].get("slack_file") or {}).get("id") if images else None
    return Shown(channel, str(ts), thread, grid)


async def _imagine_prompt(bot: SlackBot, requester: Requester, job_id: str, index: int) -> Handle:
    """The "Imagine k" button under a describe job: /imagine of its prompt k as the job stores it (the message may
    show it cut, and says nothing a button should trust), for whoever pressed it, under their own limits."""
    prompts = (await bot.service.job(job_id)).prompts or ()
    if not 0 <= index < len(prompts):
        raise Refused(f"That job has no prompt {index + 1}; describe the picture again for new ones.")
    return await bot.service.submit(requester, prompts[index])


async def _remix(bot: SlackBot, requester: Requester, job_id: str, prompt: str, negative: str) -> Handle:
    """A reroll with the edited text, or for a variation or upscale a variation of its image."""
    job = await bot.service.job(job_id)
    return await bot.service.remix(requester, job.id, prompt, negative)


def _typed(values: dict[str, Any], block: str) -> str:
    """What was typed in a submitted modal's input (its action id is its block's); empty inputs come as null."""
    return str(((values.get(block) or {}).get(block) or {}).get("value") or "")


async def remix_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
                          ) -> None:
    """The remix modal submitted: the new job is the submitter's, shown where the button was; a refusal stays in
    the modal, under the prompt, so the text can be fixed."""
    bot = _bot(context)
    place = json.loads(view.get("private_metadata") or "{}")
    channel, user = str(place["channel"]), body["user"]["id"]
    team = (body.get("team") or {}).get("id") or body["user"].get("team_id", "")
    requester = await bot.requester(context.client, team, channel, user)
    values = (view.get("state") or {}).get("values") or {}
    try:
        handle = await _remix(bot, requester, str(place["job"]), _typed(values, "prompt"), _typed(values, "negative"))
    except Refused as refused:
        await ack(response_action="errors", errors={"prompt": str(refused)})
        return
    await ack()
    client = context.client

    async def notify(text: str) -> None:  # a modal has no response_url: an ephemeral message in the channel
        await call(client.chat_postEphemeral, attempts=1, channel=channel, user=user, text=text)

    bot.follow(client, handle, Place(channel, place.get("thread")), notify)


def _posting(client: AsyncWebClient, channel: str, user: str) -> Notify:
    """Ephemeral sentences in a channel, for what has no response_url (a modal's submission)."""

    async def notify(text: str) -> None:
        await call(client.chat_postEphemeral, attempts=1, channel=channel, user=user, text=text)

    return notify


def _shared_file(message: dict[str, Any]) -> dict[str, Any] | None:
    """The file a message shares that a shortcut starts from: the first picture, as Slack labels it, else the first
    file (the core judges it by its content once fetched, and says what is wrong with it)."""
    shared = [f for f in message.get("files") or [] if f.get("id")]
    return next((f for f in shared if str(f.get("mimetype", "")).startswith("image/")), shared[0] if shared else None)


def _shown_file(message: dict[str, Any]) -> dict[str, Any] | None:
    """The file an image block shows by id: the grid on one of the bot's own job messages, which share no files
    (the grid is shared in their thread)."""
    images = [b for b in message.get("blocks") or [] if b.get("type") == "image"]
    file_id = next((i for b in images if (i := (b.get("slack_file") or {}).get("id"))), None)
    return {"id": file_id} if file_id else None


async def picture_shortcut(ack: AsyncAck, shortcut: dict[str, Any], respond: AsyncRespond,
                           context: AsyncBoltContext) -> None:
    """The "Vary with janus" message shortcut: a modal for the prompt and region over the message's picture
    (Slack's slash commands carry no files)."""
    await ack()
    bot = _bot(context)
    notify = _ephemeral(respond)
    message = shortcut.get("message") or {}
    file = _shared_file(message)
    if file is None:
        await notify(NO_PICTURE)
        return
    if (why := files.too_large_to_fetch(file, bot.max_upload_bytes)) is not None:
        await notify(why)  # before the modal: no prompt typed for nothing
        return
    view = blocks.picture_view(file, shortcut["channel"]["id"], message.get("thread_ts"))
    try:  # the trigger id is good for three seconds
        await call(context.client.views_open, attempts=1, trigger_id=shortcut["trigger_id"], view=view)
    except SlackProblem as problem:
        await notify(str(problem))


def _whispering(client: AsyncWebClient, respond: AsyncRespond, channel: str, user: str, thread: str | None
                ) -> Notify:
    """Ephemeral sentences where a shortcut was used (a channel, or the thread the message is in), or through its
    response_url where Slack will not let the bot post there (a private channel it is not in)."""

    async def notify(text: str) -> None:
        try:
            await call(client.chat_postEphemeral, attempts=1, channel=channel, user=user, thread_ts=thread, text=text)
        except SlackProblem:
            await respond(text=text, response_type="ephemeral", replace_original=False)

    return notify


async def describe_shortcut(ack: AsyncAck, shortcut: dict[str, Any], respond: AsyncRespond,
                            context: AsyncBoltContext) -> None:
    """The "Describe with janus" message shortcut: prompts that would draw the message's picture (a file shared in
    it, or the bot's own grid), shown in the message's thread with an Imagine button for each."""
    await ack()
    bot = _bot(context)
    client = context.client
    message = shortcut.get("message") or {}
    channel, user = shortcut["channel"]["id"], shortcut["user"]["id"]
    thread = str(message.get("thread_ts") or message.get("ts") or shortcut.get("message_ts"))
    notify = _whispering(client, respond, channel, user, message.get("thread_ts"))
    file = _shared_file(message) or _shown_file(message)
    if file is None:
        await notify(NOTHING_TO_DESCRIBE)
        return
    team = (shortcut.get("team") or {}).get("id") or shortcut["user"].get("team_id", "")
    try:  # the size Slack gives is checked before anything is fetched; the core checks the rest
        if (why := files.too_large_to_fetch(file, bot.max_upload_bytes)) is not None:
            raise Refused(why)
        requester = await bot.requester(client, team, channel, user)
        picture = await files.fetch(client, str(file["id"]), bot.max_upload_bytes)
        handle = await bot.service.describe(requester, image=picture)
    except (Refused, SlackProblem) as refused:
        await notify(str(refused))
        return
    bot.follow(client, handle, Place(channel, thread), notify)


def _chosen(values: dict[str, Any], block: str) -> str:
    """The value of the option chosen in a submitted modal's select (its action id is its block's)."""
    return str((((values.get(block) or {}).get(block) or {}).get("selected_option") or {}).get("value") or "")


async def picture_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
                            ) -> None:
    """The "Vary with janus" modal submitted: fetch the picture, start the job where the picture was shared; a
    refusal is an ephemeral sentence there (the modal has closed: fetching can take longer than Slack waits)."""
    await ack()
    bot = _bot(context)
    client = context.client
    place = json.loads(view.get("private_metadata") or "{}")
    channel, user = str(place["channel"]), body["user"]["id"]
    team = (body.get("team") or {}).get("id") or body["user"].get("team_id", "")
    values = (view.get("state") or {}).get("values") or {}
    region = REGIONS.get(_chosen(values, "region"))
    notify = _posting(client, channel, user)
    try:
        requester = await bot.requester(client, team, channel, user)
        picture = await files.fetch(client, str(place["file"]), bot.max_upload_bytes)
        handle = await bot.service.submit(requester, _typed(values, "prompt"), negative=_typed(values, "negative")
                                          or None, image=picture, region=region)  # fmt: skip
    except (Refused, SlackProblem) as refused:
        await notify(str(refused))
        return
    bot.follow(client, handle, Place(channel, place.get("thread")), notify)


def build_app(bot: SlackBot, *, token: str, signing_secret: str = "", api_url: str | None = None) -> AsyncApp:
    """The bolt app for one workspace's bot token; `signing_secret` verifies HTTP-mode requests."""
    app = AsyncApp(
        name="janus-bot",
        token=token,
        signing_secret=signing_secret,
        logger=logging.getLogger("bot.adapters.slack.bolt"),
    )
    if api_url:
        app.client.base_url = api_url if api_url.endswith("/") else f"{api_url}/"

    async def with_bot(context: AsyncBoltContext, next: Any) -> None:  # bolt passes arguments by these names
        context["janus"] = bot
        await next()

    app.use(with_bot)
    app.command("/imagine")(imagine)
    app.command("/imagine-admin")(imagine_admin)
    app.action(re.compile(f"^{re.escape(blocks.ACTION_PREFIX)}"))(button)
    app.view(blocks.REMIX_VIEW)(remix_submitted)
    app.shortcut({"type": "message_action", "callback_id": blocks.PICTURE_SHORTCUT})(picture_shortcut)
    app.view(blocks.PICTURE_VIEW)(picture_submitted)
    app.shortcut({"type": "message_action", "callback_id": blocks.DESCRIBE_SHORTCUT})(describe_shortcut)
    return app
