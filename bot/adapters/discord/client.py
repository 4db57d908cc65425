"""The discord.py client: /imagine, /describe, the Describe menu, /imagine-admin and the buttons, each a thin call
into the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import discord
from discord import app_commands

from bot.adapters.discord import messages
from bot.adapters.discord.attachments import NO_PICTURE, fetch, picture_of
from bot.adapters.discord.delivery import Reply, follow
from bot.admission import MOST_PROMPTS
from bot.commandline import setting_value
from bot.config import Settings
from bot.jobs import REGIONS, Handle, Job, Kind, Refused, Region, Requester, Strength
from bot.policy import OVERRIDABLE
from bot.service import Service
from generator.protocol import CFG_RANGE, COUNT_RANGE, MAX_PROMPT_CHARS, SEED_MAX, TEMPERATURE_RANGE

log = logging.getLogger(__name__)

PLATFORM = "discord"
DM_SERVER = "dm"  # the "server" of direct messages with the bot, for settings and bans
SORRY = "Something went wrong on the bot's side; try again, and tell its operator if it keeps happening."
SEED_DIGITS = len(str(SEED_MAX))  # a text option: Discord's integer options stop at 2^53, seeds go to 2^63
CHANNEL_MENTION = re.compile(r"<#(\d+)>|(\d+)")


def requester(interaction: discord.Interaction) -> Requester:
    """Who pressed or typed, where; Manage Server (or Administrator) in a server makes a server admin."""
    perms = interaction.permissions
    admin = interaction.guild_id is not None and (perms.manage_guild or perms.administrator)
    server = str(interaction.guild_id) if interaction.guild_id is not None else DM_SERVER
    user = interaction.user
    return Requester(PLATFORM, server, str(interaction.channel_id), str(user.id), admin, user.display_name)


def _seed(text: str | None) -> int | None:
    """The seed option as a number (it is text: Discord's numbers stop at 2^53)."""
    if text is None:
        return None
    if not text.strip().isdigit():
        raise Refused(f"seed must be a whole number from 0 to {SEED_MAX}; you gave {text}.")
    return int(text)


def _region(name: str | None) -> Region | None:
    """A region menus name ("bottom half"), as fractions."""
    if name is None:
        return None
    if name not in REGIONS:
        raise Refused("That menu is from an older version of this bot; pick the region again from a new one.")
    return REGIONS[name]


def _client(interaction: discord.Interaction) -> ImagineClient:
    client = interaction.client
    assert isinstance(client, ImagineClient)
    return client


class ImagineClient(discord.Client):
    """A Discord connection serving one service; commands and buttons are registered in setup_hook."""

    def __init__(self, service: Service, settings: Settings, *, guild_ready_timeout: float = 2.0) -> None:
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice here: no warning about it
        # Slash commands and buttons arrive as interactions: no privileged intents, no message content.
        super().__init__(intents=discord.Intents(guilds=True), guild_ready_timeout=guild_ready_timeout)
        self.service = service
        self.settings = settings
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_command_error  # type: ignore[method-assign]
        self._tasks: set[asyncio.Task[None]] = set()

    async def setup_hook(self) -> None:
        """Register the commands and the persistent buttons, and tell Discord about the commands."""
        self.tree.add_command(imagine)
        self.tree.add_command(describe)
        self.tree.add_command(AdminCommands())
        self.tree.add_command(describe_message)
        self.add_dynamic_items(messages.JobButton, messages.JobPick, messages.RegionPick)
        if self.settings.discord.sync_commands:
            guilds = [discord.Object(guild) for guild in self.settings.discord.guild_ids]
            for guild in guilds:  # the chosen servers' own copies show at once
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            if guilds:
                self.tree.clear_commands(guild=None)  # and no global commands are left behind
            await self.tree.sync()

    async def close(self) -> None:
        """Stop following jobs (unfinished ones are delivered after the next start), then disconnect."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().close()

    def spawn(self, work: Awaitable[None]) -> None:
        """Run `work` in the background, logging its failure."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("following a job failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def deliver(self, handle: Handle, interaction: discord.Interaction | None = None) -> None:
        """Follow a job on its own message (the interaction's, else a new one in the job's channel)."""
        reply = Reply(self, handle.job, interaction)
        self.spawn(follow(self.service, handle, reply, self.settings.discord.edit_every_s))

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A submitted remix form: handled here by its custom id (not by discord.py's store of open modals), so it
        works for anyone who opened it, and after a restart."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: dict[str, Any] = interaction.data or {}  # type: ignore[assignment]
        match = messages.REMIX_ID.match(str(data.get("custom_id", "")))
        if match is not None:
            values = _text_inputs(data.get("components", []))
            await self.remixed(interaction, match["job"], values.get("prompt", ""), values.get("negative", ""))

    async def imagine(self, interaction: discord.Interaction, prompt: str, seed: str | None, *,
                      image: discord.Attachment | None = None, region: str | None = None, **options: Any) -> None:
        """Queue a job (from the attached picture, when there is one) and follow it on the interaction's message."""
        await interaction.response.defer(thinking=True)  # fetching the picture may take longer than Discord waits
        try:
            picture = await fetch(image, round(self.settings.images.max_upload_mb * 2**20)) if image else None
            handle = await self.service.submit(requester(interaction), prompt, seed=_seed(seed), image=picture,
                                               region=_region(region), **options)  # fmt: skip
        except Refused as refusal:
            await refuse(interaction, refusal)
            return
        self.deliver(handle, interaction)

    async def describe(self, interaction: discord.Interaction, picture: discord.Attachment | str,
                       count: int | None = None) -> None:
        """Queue a describe job of a picture (an attachment, or an embed's picture by its URL) and follow it on the
        interaction's message."""
        await interaction.response.defer(thinking=True)  # fetching the picture may take longer than Discord waits
        try:
            data = await fetch(picture, round(self.settings.images.max_upload_mb * 2**20))
            handle = await self.service.describe(requester(interaction), image=data, count=count)
        except Refused as refusal:
            await refuse(interaction, refusal)
            return
        self.deliver(handle, interaction)

    async def imagine_prompt(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """An "Imagine k" button under a describe job: /imagine of its prompt k as stored (the message may show it
        cut), for whoever pressed it, under their own limits, on a new message."""
        await interaction.response.defer(thinking=True)
        try:
            prompts = (await self.service.job(job_id)).prompts or ()
            if not 0 <= index < len(prompts):
                raise Refused(f"That job has no prompt {index + 1}; describe the picture again for new ones.")
            handle = await self.service.submit(requester(interaction), prompts[index])
        except Refused as refusal:
            await refuse(interaction, refusal)
            return
        except Exception:
            log.exception("Imagine %d of job %s failed", index + 1, job_id)
            await refuse(interaction, Refused(SORRY))
            return
        self.deliver(handle, interaction)

    async def pressed(self, interaction: discord.Interaction, action: str, job_id: str, index: int | None) -> None:
        """A grid button or menu: the new job is the presser's own, on a new message; cancel edits nothing."""
        who = requester(interaction)
        if action == "cancel":
            await interaction.response.defer()
            try:
                await self.service.cancel(who, job_id)
            except Refused as refusal:
                await interaction.followup.send(str(refusal), ephemeral=True)
            return
        if action == "delete":
            await self.delete(interaction, who, job_id)
            return
        if action == "prompt":
            await self.imagine_prompt(interaction, job_id, index or 0)
            return
        if action in ("remix", "info", "region"):
            try:
                job = await self.service.job(job_id)
            except Refused as refusal:
                await interaction.response.send_message(str(refusal), ephemeral=True)
                return
            if action == "info":
                await interaction.response.send_message(embed=messages.info_embed(job), ephemeral=True)
                return
            if action == "region":  # an image of a grid too big for one menu of images and regions
                await interaction.response.send_message(
                    f"Which part of image {(index or 0) + 1} should be made again? The rest of it is kept.",
                    view=messages.region_view(job.id, index or 0), ephemeral=True,
                )  # fmt: skip
                return
            modal = messages.remix_modal(job)
            modal.stop()  # kept out of discord.py's store of open modals: on_interaction handles the submission
            await interaction.response.send_modal(modal)
            return
        await interaction.response.defer(thinking=True)
        try:
            if action == "reroll":
                handle = await self.service.reroll(who, job_id)
            elif action == "upscale":
                handle = await self.service.upscale(who, job_id, index or 0)
            else:
                strength = Strength.STRONG if action == "strong" else Strength.SUBTLE
                handle = await self.service.vary(who, job_id, index or 0, strength)
        except Refused as refusal:
            await refuse(interaction, refusal)
            return
        except Exception:
            log.exception("%s of job %s failed", action, job_id)
            await refuse(interaction, Refused(SORRY))
            return
        self.deliver(handle, interaction)

    async def vary_region(self, interaction: discord.Interaction, job_id: str, index: int, region: str) -> None:
        """A region picked for image `index`: Vary (Region), the presser's own job on a new message."""
        await interaction.response.defer(thinking=True)
        try:
            handle = await self.service.vary_region(requester(interaction), job_id, index, _region(region))
        except Refused as refusal:
            await refuse(interaction, refusal)
            return
        except Exception:
            log.exception("Vary (Region) of job %s failed", job_id)
            await refuse(interaction, Refused(SORRY))
            return
        self.deliver(handle, interaction)

    async def remixed(self, interaction: discord.Interaction, job_id: str, prompt: str, negative: str) -> None:
        """A submitted remix: a reroll with the edited text, or for a variation or upscale a variation of its
        image; the new job is the submitter's, on a new message."""
        await interaction.response.defer(thinking=True)
        who = requester(interaction)
        try:
            job = await self.service.job(job_id)
            handle = await self.service.remix(who, job.id, prompt, negative)
        except Refused as refusal:
            await refuse(interaction, refusal)
            return
        except Exception:
            log.exception("remix of job %s failed", job_id)
            await refuse(interaction, Refused(SORRY))
            return
        self.deliver(handle, interaction)

    async def delete(self, interaction: discord.Interaction, who: Requester, job_id: str) -> None:
        """Delete a job's result (its requester, or an admin): the message with the button goes, the job stays
        as a tombstone."""
        await interaction.response.defer()  # for a button, the original response is the message it is on
        try:
            job = await self.service.delete(who, job_id)
        except Refused as refusal:
            await interaction.followup.send(str(refusal), ephemeral=True)
            return
        with contextlib.suppress(discord.NotFound):  # someone deleted the message already
            await interaction.delete_original_response()
        await interaction.followup.send(f"Deleted {messages.bold_prompt(job)}.", ephemeral=True,
                                        allowed_mentions=discord.AllowedMentions.none())  # fmt: skip

    async def _on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.error("command %s failed", interaction.command and interaction.command.qualified_name, exc_info=error)
        if interaction.response.is_done():
            await refuse(interaction, Refused(SORRY))
        else:
            await interaction.response.send_message(SORRY, ephemeral=True)


def _text_inputs(components: list[dict[str, Any]]) -> dict[str, str]:
    """The values of a submitted modal's text inputs by custom id (under labels, or in action rows)."""
    values: dict[str, str] = {}
    for component in components:
        for item in component.get("components") or [component.get("component") or {}]:
            if "custom_id" in item:
                values[item["custom_id"]] = str(item.get("value") or "")
    return values


async def refuse(interaction: discord.Interaction, refusal: Refused) -> None:
    """Replace the public "thinking…" message with a sentence only the requester sees."""
    with contextlib.suppress(discord.HTTPException):
        await interaction.delete_original_response()
    await interaction.followup.send(str(refusal), ephemeral=True)


@app_commands.command(name="imagine")
@app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
@app_commands.describe(
    prompt="What to draw",
    count="How many images (the server's default if left out)",
    cfg="How closely to follow the prompt: higher is more literal",
    temperature="How adventurous the sampling is: 0 is always the same picture",
    seed="Repeat a result: the seed its message shows (a whole number)",
    negative="What to keep out of the pictures (Midjourney's --no), like: text, blur",
    image="Start from this picture (PNG, JPEG, WebP or GIF): part of it is made again, the rest kept",
    region="Which part of the picture to make again (the bottom half if left out)",
)
@app_commands.choices(region=[app_commands.Choice(name=name.capitalize(), value=name) for name in REGIONS])
async def imagine(
    interaction: discord.Interaction,
    prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
    count: app_commands.Range[int, COUNT_RANGE[0], COUNT_RANGE[1]] | None = None,
    cfg: app_commands.Range[float, CFG_RANGE[0], CFG_RANGE[1]] | None = None,
    temperature: app_commands.Range[float, TEMPERATURE_RANGE[0], TEMPERATURE_RANGE[1]] | None = None,
    seed: app_commands.Range[str, 1, SEED_DIGITS] | None = None,
    negative: app_commands.Range[str, 1, MAX_PROMPT_CHARS] | None = None,
    image: discord.Attachment | None = None,
    region: str | None = None,
) -> None:
    """Make images from a text prompt."""
    await _client(interaction).imagine(interaction, prompt, count=count, cfg=cfg, temperature=temperature, seed=seed,
                                       negative=negative, image=image, region=region)  # fmt: skip


@app_commands.command(name="describe")
@app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
@app_commands.describe(
    image="The picture to write prompts for (PNG, JPEG, WebP or GIF)",
    count="How many prompts (the bot's default if left out)",
)
async def describe(
    interaction: discord.Interaction,
    image: discord.Attachment,
    count: app_commands.Range[int, 1, MOST_PROMPTS] | None = None,
) -> None:
    """Write prompts that would draw a picture."""
    await _client(interaction).describe(interaction, image, count)


@app_commands.context_menu(name="Describe")
@app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
async def describe_message(interaction: discord.Interaction, message: discord.Message) -> None:
    """The menu on a message (Apps -> Describe): /describe of the first picture it shows, the bot's own grids too.
    A message without one is told so at once, before anything public is posted."""
    picture = picture_of(message)
    if picture is None:
        await interaction.response.send_message(NO_PICTURE, ephemeral=True)
        return
    await _client(interaction).describe(interaction, picture)


def channel_ids(text: str) -> list[str]:
    """The channel ids in an admin's list of channel mentions (`<#123>`, as Discord sends a #channel) or ids."""
    ids = []
    for word in text.replace(",", " ").replace("<", " <").replace(">", "> ").split():
        match = CHANNEL_MENTION.fullmatch(word)
        if match is None:
            shown = discord.utils.escape_markdown(word)
            raise Refused(f'"{shown}" is not a channel; type # and pick it from the list, or give its id.')
        ids.append(match[1] or match[2])
    if not ids:
        raise Refused("Name at least one channel; /imagine-admin channels clear lets the bot work everywhere.")
    return ids


def _mentions(channels: list[str]) -> str:
    return ", ".join(f"<#{c}>" for c in channels)


def _subject(job: Job) -> str:
    """A job's prompt in a list of jobs (a describe job has none: what it does)."""
    return "(describing a picture)" if job.kind is Kind.DESCRIBE else discord.utils.escape_markdown(job.prompt[:80])


def _when(at: float) -> str:
    return discord.utils.format_dt(datetime.fromtimestamp(at, UTC), "R")


@app_commands.default_permissions(manage_guild=True)
@app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
class AdminCommands(app_commands.Group, name="imagine-admin", description="Manage the image bot in this server"):
    """/imagine-admin: every reply is ephemeral; refusals are sentences saying why."""

    blocklist = app_commands.Group(name="blocklist", description="Words and patterns refused in prompts")

    async def _reply(self, interaction: discord.Interaction, work: Awaitable[str]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await work
        except Refused as refusal:
            text = str(refusal)
        await interaction.edit_original_response(content=text[:2000], allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="settings")
    async def settings(self, interaction: discord.Interaction) -> None:
        """Show the defaults, limits and blocklist in effect here."""

        async def show() -> str:
            view = _client(interaction).service.admin.server_settings(requester(interaction))
            return "\n".join(f"`{key}` = {value}" for key, value in view.items())

        await self._reply(interaction, show())

    @app_commands.command(name="set")
    @app_commands.describe(key="The setting to change", value='The new value, or "default" to drop the override')
    @app_commands.choices(key=[app_commands.Choice(name=key, value=key) for key in sorted(OVERRIDABLE)])
    async def set(self, interaction: discord.Interaction, key: str, value: str) -> None:
        """Change a default or a limit for this server."""

        async def change() -> str:
            parsed = setting_value(value)
            await _client(interaction).service.admin.set_setting(requester(interaction), key, parsed)
            return f"`{key}` is back to the bot's default." if parsed is None else f"`{key}` is now {parsed}."

        await self._reply(interaction, change())

    @app_commands.command(name="ban")
    @app_commands.describe(user="Who may no longer make images here", reason="Shown to them when refused")
    async def ban(self, interaction: discord.Interaction, user: discord.User, reason: str = "") -> None:
        """Stop someone making images in this server."""

        async def ban() -> str:
            await _client(interaction).service.admin.ban(requester(interaction), str(user.id), reason)
            return f"{user.mention} can no longer make images here."

        await self._reply(interaction, ban())

    @app_commands.command(name="unban")
    @app_commands.describe(user="Who may make images again")
    async def unban(self, interaction: discord.Interaction, user: discord.User) -> None:
        """Let a banned user make images again."""

        async def unban() -> str:
            await _client(interaction).service.admin.unban(requester(interaction), str(user.id))
            return f"{user.mention} can make images here again."

        await self._reply(interaction, unban())

    @app_commands.command(name="bans")
    async def bans(self, interaction: discord.Interaction) -> None:
        """List the users banned in this server."""

        async def bans() -> str:
            listed = _client(interaction).service.admin.bans(requester(interaction))
            lines = [
                f"<@{b.user}> by <@{b.banned_by}> {_when(b.at)}{': ' + b.reason if b.reason else ''}" for b in listed
            ]
            return "\n".join(lines) or "Nobody is banned here."

        await self._reply(interaction, bans())

    @blocklist.command(name="add")
    @app_commands.describe(
        text="A word or phrase, or a regular expression", regex="Treat the text as a regular expression"
    )
    async def block(self, interaction: discord.Interaction, text: str, regex: bool = False) -> None:
        """Refuse prompts containing a word, phrase or pattern."""

        async def block() -> str:
            await _client(interaction).service.admin.block(requester(interaction), text, regex)
            return f"Prompts matching `{text}` are now refused here."

        await self._reply(interaction, block())

    @blocklist.command(name="remove")
    @app_commands.describe(text="The word or pattern exactly as listed")
    async def unblock(self, interaction: discord.Interaction, text: str) -> None:
        """Allow a blocked word or pattern again."""

        async def unblock() -> str:
            await _client(interaction).service.admin.unblock(requester(interaction), text)
            return f"`{text}` is no longer blocked here."

        await self._reply(interaction, unblock())

    @blocklist.command(name="list")
    async def listed(self, interaction: discord.Interaction) -> None:
        """Show the blocked words and patterns in effect here."""

        async def listed() -> str:
            blocked = _client(interaction).service.admin.blocklist(requester(interaction))
            words = ", ".join(f"`{w}`" for w in blocked.words) or "none"
            patterns = ", ".join(f"`{p}`" for p in blocked.patterns) or "none"
            return f"Words: {words}\nPatterns: {patterns}"

        await self._reply(interaction, listed())

    channels = app_commands.Group(name="channels", description="The channels /imagine works in here")

    @channels.command(name="set")
    @app_commands.describe(channels="Type # and pick each channel, like: #art #memes")
    async def set_channels(self, interaction: discord.Interaction, channels: str) -> None:
        """Let the bot work only in these channels."""

        async def set_channels() -> str:
            listed = channel_ids(channels)
            await _client(interaction).service.admin.set_channels(requester(interaction), listed)
            return f"The bot now works only in {_mentions(listed)} here."

        await self._reply(interaction, set_channels())

    @channels.command(name="list")
    async def list_channels(self, interaction: discord.Interaction) -> None:
        """Show the channels the bot works in."""

        async def list_channels() -> str:
            listed = _client(interaction).service.admin.channels(requester(interaction))
            if not listed:
                return "The bot works in every channel here."
            return f"The bot works only in {_mentions(listed)} here."

        await self._reply(interaction, list_channels())

    @channels.command(name="clear")
    async def clear_channels(self, interaction: discord.Interaction) -> None:
        """Let the bot work in every channel again."""

        async def clear_channels() -> str:
            await _client(interaction).service.admin.set_channels(requester(interaction), [])
            return "The bot works in every channel here again."

        await self._reply(interaction, clear_channels())

    @app_commands.command(name="queue")
    async def queue(self, interaction: discord.Interaction) -> None:
        """List the running and waiting jobs."""

        async def queue() -> str:
            jobs = _client(interaction).service.admin.queue(requester(interaction))
            lines = [
                f"`{s.job.id}` {'running' if s.position is None else f'#{s.position}'} <@{s.job.requester.user}>: "
                f"{_subject(s.job)}"
                for s in jobs[:25]
            ]
            more = f"\n…and {len(jobs) - 25} more" if len(jobs) > 25 else ""
            return "\n".join(lines) + more if lines else "No jobs are running or waiting."

        await self._reply(interaction, queue())

    @app_commands.command(name="cancel")
    @app_commands.describe(job="The job id, as /imagine-admin queue shows it")
    async def cancel(self, interaction: discord.Interaction, job: str) -> None:
        """Cancel someone's job."""

        async def cancel() -> str:
            await _client(interaction).service.cancel(requester(interaction), job.strip())
            return f"Job `{job}` is cancelled."

        await self._reply(interaction, cancel())

    @app_commands.command(name="pause")
    async def pause(self, interaction: discord.Interaction) -> None:
        """Start no new jobs until resumed (bot admins only)."""

        async def pause() -> str:
            await _client(interaction).service.admin.pause(requester(interaction))
            return "Paused: running jobs finish, new ones wait until you resume."

        await self._reply(interaction, pause())

    @app_commands.command(name="resume")
    async def resume(self, interaction: discord.Interaction) -> None:
        """Start jobs again after a pause (bot admins only)."""

        async def resume() -> str:
            await _client(interaction).service.admin.resume(requester(interaction))
            return "Resumed: waiting jobs start again."

        await self._reply(interaction, resume())

    @app_commands.command(name="usage")
    @app_commands.describe(days="How many days back to count")
    async def usage(self, interaction: discord.Interaction, days: app_commands.Range[int, 1, 365] = 30) -> None:
        """Jobs and images per user over the last days."""

        async def usage() -> str:
            rows = await _client(interaction).service.admin.usage(requester(interaction), days)
            lines = [f"<@{u.user}>: {u.jobs} jobs, {u.images} images" for u in rows[:40]]
            return "\n".join(lines) or f"No images made here in the last {days} days."

        await self._reply(interaction, usage())

    @app_commands.command(name="audit")
    async def audit(self, interaction: discord.Interaction) -> None:
        """The latest admin actions in this server."""

        async def audit() -> str:
            entries = await _client(interaction).service.admin.audit_log(requester(interaction), 20)
            lines = [f"{_when(e.at)} <@{e.actor}> {e.action} {e.detail}" for e in entries]
            return "\n".join(lines) or "No admin actions yet."

        await self._reply(interaction, audit())
