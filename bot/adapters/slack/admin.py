"""`/imagine-admin`: the service's admin operations as one slash command with subcommands, answered in text."""

from __future__ import annotations

import re
import time

from bot.adapters.slack.blocks import escape, subject
from bot.commandline import setting_value
from bot.jobs import Refused, Requester
from bot.service import Service

HELP = """\
*/imagine-admin* subcommands:
• `settings` - the defaults and limits in effect here
• `set <key> <value>` / `unset <key>` - override a default or limit for this workspace (`settings` lists the keys)
• `blocklist` · `block <word or phrase>` · `block-regex <pattern>` · `unblock <word or pattern>`
• `bans` · `ban @user [reason]` · `unban @user`
• `queue` - running and waiting jobs · `cancel <job id>`
• `usage [days]` - jobs and images per user · `audit [count]` - recent admin actions
• `channels` · `channels #a #b` · `channels clear` - where /imagine works here (everywhere until set)
• `pause` · `resume` - stop and restart the queue (bot admins only)"""
_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^([UW][A-Z0-9]{2,})$")
# A channel as Slack sends it with "escape channels" on (`<#C123|name>`, the name possibly empty), or its id.
_CHANNEL = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$|^([CG][A-Z0-9]{2,})$")


def user_id(text: str) -> str:
    """The user id in a mention (`<@U123|name>`) or a bare id; Refused for anything else."""
    match = _MENTION.match(text.strip())
    if match is None:
        raise Refused(f'"{text}" is not a user; mention them, like @name.')
    return match.group(1) or match.group(2)


def channel_ids(text: str) -> list[str]:
    """The channel ids in an admin's list of channels (mentions or ids); Refused for anything else."""
    ids = []
    for word in text.replace(",", " ").replace("<", " <").replace(">", "> ").split():
        match = _CHANNEL.match(word)
        if match is None:
            raise Refused(f'"{escape(word)}" is not a channel; type # and pick it from the list Slack shows.')
        ids.append(match.group(1) or match.group(2))
    return ids


def _mentions(channels: list[str]) -> str:
    return ", ".join(f"<#{c}>" for c in channels)


def _count(text: str, default: int, name: str) -> int:
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Refused(f'{name} is a whole number, like {default}; you gave "{text}".') from None
    if value < 1:
        raise Refused(f"{name} is at least 1; you gave {value}.")
    return value


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


async def run_admin(service: Service, requester: Requester, text: str) -> str:
    """Carry out one `/imagine-admin` command line; the answer for the admin (Refused for a refusal)."""
    verb, _, rest = text.strip().partition(" ")
    verb, rest = verb.lower(), rest.strip()
    if verb in ("", "help"):
        return HELP
    if verb == "settings":
        lines = [f"• `{key}` = `{value}`" for key, value in service.admin.server_settings(requester).items()]
        return "Settings in effect here:\n" + "\n".join(lines)
    if verb in ("set", "unset"):
        key, _, raw = rest.partition(" ")
        if not key or (verb == "set" and not raw.strip()):
            example = "set defaults.count 2" if verb == "set" else "unset defaults.count"
            raise Refused(f"Say which setting, like `{example}`.")
        value = setting_value(raw.strip()) if verb == "set" else None
        await service.admin.set_setting(requester, key, value)
        return f"`{key}` is now `{value}` here." if verb == "set" else f"`{key}` is back to the bot's default here."
    if verb in ("block", "block-regex"):
        await service.admin.block(requester, rest, regex=verb == "block-regex")
        return f"Blocked `{escape(rest)}`; prompts containing it are refused here."
    if verb == "unblock":
        await service.admin.unblock(requester, rest)
        return f"Unblocked `{escape(rest)}`."
    if verb == "blocklist":
        listed = service.admin.blocklist(requester)
        words = ", ".join(f"`{escape(w)}`" for w in listed.words) or "none"
        patterns = ", ".join(f"`{escape(p)}`" for p in listed.patterns) or "none"
        return f"Blocked words: {words}\nBlocked patterns: {patterns}"
    if verb == "ban":
        who, _, reason = rest.partition(" ")
        user = user_id(who)
        await service.admin.ban(requester, user, reason.strip())
        return f"<@{user}> can no longer make images here."
    if verb == "unban":
        user = user_id(rest)
        await service.admin.unban(requester, user)
        return f"<@{user}> can make images here again."
    if verb == "bans":
        bans = service.admin.bans(requester)
        lines = [f"• <@{b.user}> by <@{b.banned_by}> on {_when(b.at)}: {escape(b.reason) or 'no reason'}" for b in bans]
        return "Banned here:\n" + "\n".join(lines) if lines else "Nobody is banned here."
    if verb == "queue":
        jobs = service.admin.queue(requester)
        lines = [
            f"• `{s.job.id}` <@{s.job.requester.user}> "
            f"{'running' if s.position is None else f'waiting, position {s.position}'}: {subject(s.job, 80)}"
            for s in jobs
        ]
        return "Jobs:\n" + "\n".join(lines) if lines else "No jobs are running or waiting."
    if verb == "cancel":
        if not rest:
            raise Refused("Say which job, like `cancel 0123abcd`; `queue` lists them.")
        await service.cancel(requester, rest)
        return f"Cancelling `{escape(rest)}`."
    if verb == "usage":
        days = _count(rest, 30, "The number of days")
        usage = await service.admin.usage(requester, days)
        lines = [f"• <@{u.user}>: {u.jobs} jobs, {u.images} images" for u in usage]
        return f"Usage over {days} days:\n" + "\n".join(lines) if lines else f"No images in the last {days} days."
    if verb == "audit":
        entries = await service.admin.audit_log(requester, _count(rest, 20, "The number of entries"))
        lines = [
            f"• {_when(e.at)} <@{e.actor}> {e.action} " + " ".join(f"{k}={escape(str(v))}" for k, v in e.detail.items())
            for e in entries
        ]
        return "Recent admin actions:\n" + "\n".join(lines) if lines else "No admin actions yet."
    if verb == "channels":
        if rest.lower() == "clear":
            await service.admin.set_channels(requester, [])
            return "The bot works in every channel here again."
        if rest:
            channels = channel_ids(rest)
            await service.admin.set_channels(requester, channels)
            return f"The bot now works only in {_mentions(channels)} here."
        channels = service.admin.channels(requester)
        if not channels:
            return "The bot works in every channel here."
        return f"The bot works only in {_mentions(channels)} here."
    if verb == "pause":
        await service.admin.pause(requester)
        return "Paused: running jobs finish, new ones wait until `resume`."
    if verb == "resume":
        await service.admin.resume(requester)
        return "Resumed: waiting jobs start again."
    raise Refused(f'"{escape(verb)}" is not an /imagine-admin subcommand; try `help`.')
