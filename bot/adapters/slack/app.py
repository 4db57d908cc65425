"""The bolt app: `/imagine`, `/imagine-admin` and the job buttons, each a free function that answers at once."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack import blocks
from bot.adapters.slack.admin import run_admin
from bot.adapters.slack.api import SlackProblem, call
from bot.adapters.slack.messages import Messages, Notify, Place
from bot.commandline import CommandError, parse_imagine
from bot.jobs import Handle, Refused, Requester, Strength
from bot.service import Service

log = logging.getLogger(__name__)
PLATFORM = "slack"
NOT_ADMIN = "Sorry, /imagine-admin is for workspace admins and owners and for this bot's admins."


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
    """/imagine <prompt> [--count N] [--cfg W] [--temperature T] [--seed S]: queue images, show them in the channel.

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
            seed=parsed.seed,
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
    """A job button (reroll, upscale U, vary V, cancel) or the strong-variation menu; the job id travels in the
    value."""
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
    try:
        if clicked.verb == "cancel":
            await bot.service.cancel(requester, clicked.job_id)
            return
        if clicked.verb == "reroll":
            handle = await bot.service.reroll(requester, clicked.job_id)
        elif clicked.verb == "upscale":
            handle = await bot.service.upscale(requester, clicked.job_id, clicked.index or 0)
        else:
            handle = await bot.service.vary(requester, clicked.job_id, clicked.index or 0, Strength(clicked.strength))
    except Refused as refused:
        await notify(str(refused))
        return
    thread = (body.get("message") or {}).get("thread_ts") or (body.get("container") or {}).get("thread_ts")
    bot.follow(context.client, handle, Place(channel, thread), notify)


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
    return app
