"""Admin operations, each checking the requester's rights and leaving an audit row: what adapters' admin
commands call, through `service.admin`."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot.blocklist import pattern_problem
from bot.config import BlocklistSettings
from bot.jobqueue import JobQueue
from bot.jobs import Job, Kind, Refused, Requester
from bot.policy import CHANNELS, OVERRIDABLE, STRICTER_WHEN_LARGER, Policy, audit_entry
from bot.store import AuditEntry, Ban, Store, Usage


@dataclass(frozen=True)
class JobStatus:
    job: Job
    position: int | None  # 1 is next; None unless waiting


CHANNEL_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # a Discord snowflake or a Slack channel id


class Admin:
    """Settings, blocklist, bans, the queue, pause and usage, for server admins and the bot's admins."""

    def __init__(self, policy: Policy, store: Store, queue: JobQueue, active: Callable[[], list[Job]]) -> None:
        self.policy = policy
        self._store = store
        self._queue = queue
        self._active = active  # the jobs not yet ended

    async def _audit(self, requester: Requester, action: str, **detail: Any) -> None:
        await self._store.audit(audit_entry(requester, action, **detail))

    # -- settings and blocklist --

    def server_settings(self, requester: Requester) -> dict[str, Any]:
        """The settings in effect in the requester's server, by "section.key", overrides included."""
        self.policy.require_admin(requester)
        view = {
            f"{name}.{k}": v
            for name in ("defaults", "limits", "blocklist")
            for k, v in self.policy.section(requester, name).items()
        }
        view["paused"] = self._queue.paused
        return view

    async def set_setting(self, requester: Requester, key: str, value: Any) -> None:
        """Override one setting for the requester's server (None removes the override)."""
        self.policy.require_admin(requester)
        model = OVERRIDABLE.get(key)
        if model is None:
            raise Refused(f"{key} is not a setting you can change here; try one of: {', '.join(sorted(OVERRIDABLE))}.")
        section, field = key.split(".")
        if value is not None:
            try:
                model.model_validate({**self.policy.section(requester, section), field: value})
            except ValidationError as error:
                raise Refused(f"{key} {error.errors()[0]['msg'].lower()}; you gave {value}.") from None
            self._check_stricter(requester, key, value)
        await self.policy.set_override(requester, key, value, audit_entry(requester, "set", key=key, to=value))

    def _check_stricter(self, requester: Requester, key: str, value: Any) -> None:
        """Server admins may tighten the bot's limits for their server, not loosen them (bot admins may)."""
        larger_is_stricter = STRICTER_WHEN_LARGER.get(key)
        if larger_is_stricter is None or self.policy.is_owner(requester):
            return
        section, field = key.split(".")
        configured = getattr(getattr(self.policy.settings, section), field)
        if larger_is_stricter and value < configured:
            raise Refused(f"{key} can be at least {configured:g} here (the bot's own limit); you gave {value}.")
        if not larger_is_stricter and value > configured:
            raise Refused(f"{key} can be at most {configured:g} here (the bot's own limit); you gave {value}.")

    async def block(self, requester: Requester, text: str, regex: bool = False) -> None:
        """Add a word (or, with regex, a regular expression) to the server's prompt blocklist."""
        self.policy.require_admin(requester)
        text = text.strip()
        if not text:
            raise Refused("Give the word or pattern to block.")
        if regex and (problem := pattern_problem(text)):
            raise Refused(f"{problem[0].upper()}{problem[1:]}; fix it and try again.")
        key = "blocklist.patterns" if regex else "blocklist.words"
        listed = list(self.policy.overrides(requester).get(key, []))
        if text not in listed:
            audit = audit_entry(requester, "block", key=key, text=text, regex=regex)
            await self.policy.set_override(requester, key, [*listed, text], audit)

    async def unblock(self, requester: Requester, text: str) -> None:
        """Remove a word or pattern from the server's blocklist (entries from the config file stay)."""
        self.policy.require_admin(requester)
        for key in ("blocklist.words", "blocklist.patterns"):
            listed = list(self.policy.overrides(requester).get(key, []))
            if text in listed:
                listed.remove(text)
                audit = audit_entry(requester, "unblock", key=key, text=text)
                await self.policy.set_override(requester, key, listed or None, audit)
                return
        raise Refused(f'"{text}" is not on this server\'s blocklist.')

    def blocklist(self, requester: Requester) -> BlocklistSettings:
        """The blocked words and patterns in effect in the requester's server."""
        self.policy.require_admin(requester)
        return self.policy.blocklist(requester)

    # -- channels --

    def channels(self, requester: Requester) -> list[str]:
        """The channels the bot answers in, in the requester's server (empty: everywhere)."""
        self.policy.require_admin(requester)
        return self.policy.channels(requester)

    async def set_channels(self, requester: Requester, channels: list[str]) -> None:
        """Let the bot answer only in these channels of the requester's server (an empty list: everywhere)."""
        self.policy.require_admin(requester)
        listed = list(dict.fromkeys(c.strip() for c in channels if c.strip()))
        if any(not CHANNEL_ID.fullmatch(c) for c in listed):
            raise Refused("Give channels as the platform names them (a mention such as #general, or its id).")
        action = "channels" if listed else "channels-clear"
        await self.policy.set_override(requester, CHANNELS, listed or None, audit_entry(requester, action, to=listed))

    # -- bans --

    async def ban(self, requester: Requester, user: str, reason: str = "") -> None:
        """Ban a user from making images in the requester's server."""
        self.policy.require_admin(requester)
        ban = Ban(requester.platform, requester.server, user, reason, requester.user, time.time())
        await self.policy.ban(ban, audit_entry(requester, "ban", user=user, reason=reason))
        await self._queue.set_ban(ban.platform, ban.server, ban.user, True)

    async def unban(self, requester: Requester, user: str) -> None:
        """Lift a ban in the requester's server."""
        self.policy.require_admin(requester)
        if not self.policy.banned(requester.platform, requester.server, user):
            raise Refused("That user is not banned here.")
        audit = audit_entry(requester, "unban", user=user)
        await self.policy.unban(requester.platform, requester.server, user, audit)
        await self._queue.set_ban(requester.platform, requester.server, user, False)

    def bans(self, requester: Requester) -> list[Ban]:
        """The users banned in the requester's server."""
        self.policy.require_admin(requester)
        return self.policy.bans(requester.platform, requester.server)

    # -- the queue --

    def queue(self, requester: Requester) -> list[JobStatus]:
        """Running then waiting jobs, in the queue's order (the requester's server only, unless a bot admin)."""
        self.policy.require_admin(requester)
        places = self._queue.positions()
        jobs = [JobStatus(j, places.get(j.id)) for j in self._active() if j.kind is not Kind.UPSCALE]
        jobs.sort(key=lambda s: (s.position is not None, s.position or 0, s.job.created_at))
        return [s for s in jobs if self.policy.admin_of(requester, s.job)]

    async def pause(self, requester: Requester) -> None:
        """Start no new jobs (running ones finish; new ones still queue). Bot admins only."""
        self.policy.require_admin(requester, owner=True)
        await self._queue.set_paused(True)
        await self._audit(requester, "pause")

    async def resume(self, requester: Requester) -> None:
        """Start jobs again. Bot admins only."""
        self.policy.require_admin(requester, owner=True)
        await self._queue.set_paused(False)
        await self._audit(requester, "resume")

    # -- reports --

    async def usage(self, requester: Requester, days: int = 30) -> list[Usage]:
        """Jobs and images per user in the requester's server over the last `days` days."""
        self.policy.require_admin(requester)
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - (days - 1) * 86400))
        return await self._store.usage(requester.platform, requester.server, since)

    async def audit_log(self, requester: Requester, limit: int = 50) -> list[AuditEntry]:
        """The requester's server's most recent admin actions, newest first."""
        self.policy.require_admin(requester)
        return await self._store.audit_log(requester.platform, requester.server, limit)
