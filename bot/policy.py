"""Server policy: who is an admin, each server's defaults, limits and blocklist (config plus overrides), bans."""

from __future__ import annotations

import time
from typing import Any

from bot.blocklist import blocklist
from bot.config import BlocklistSettings, DefaultSettings, LimitSettings, Settings
from bot.jobs import Job, Refused, Requester
from bot.store import AuditEntry, Ban, Store

# Settings a server's admins may override, by "section.key".
OVERRIDABLE = {
    f"{section}.{key}": model
    for section, model in (("defaults", DefaultSettings), ("limits", LimitSettings))
    for key in model.model_fields
    if key not in ("queue_cap", "server_share")  # one queue for every server, shared out by the bot's admins
}
CHANNELS = "channels.allowed"  # the override naming the channels a server's admins let the bot answer in
# Limits a server's admins may only make stricter than the config's: (key, True when larger is stricter).
STRICTER_WHEN_LARGER = {"limits.period_s": True, "limits.jobs_per_period": False,
                        "limits.max_queued_per_user": False, "limits.max_running_per_user": False}


class Policy:
    """The rules in effect for each requester; overrides and bans are read once at start and kept in step."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self._store = store
        self._overrides: dict[tuple[str, str], dict[str, Any]] = {}
        self._bans: dict[tuple[str, str, str], Ban] = {}

    async def load(self) -> None:
        """Read every server's overrides and the bans from the store."""
        self._overrides = await self._store.overrides()
        self._bans = {(b.platform, b.server, b.user): b for b in await self._store.bans()}

    # -- who --

    def is_admin(self, requester: Requester) -> bool:
        """A server admin (as the platform says) or a bot admin from the config."""
        return requester.is_admin or self.is_owner(requester)

    def exempt(self, requester: Requester) -> bool:
        """Whether the per-user limits pass the requester by: bot admins only (a server admin of any server,
        their own included, could otherwise fill the queue every server shares)."""
        return self.is_owner(requester)

    def is_owner(self, requester: Requester) -> bool:
        """A bot admin from the config: admin of every server, and the only one who may pause the bot."""
        return requester.user_key in self.settings.bot.admins

    def admin_of(self, requester: Requester, job: Job) -> bool:
        """Whether the requester may act on someone else's job: a bot admin, or an admin of its server."""
        same_server = (job.requester.platform, job.requester.server) == (requester.platform, requester.server)
        return self.is_owner(requester) or (requester.is_admin and same_server)

    def require_admin(self, requester: Requester, owner: bool = False) -> None:
        """Refused unless the requester is a server admin (or, with `owner`, a bot admin)."""
        if not (self.is_owner(requester) if owner else self.is_admin(requester)):
            who = "the bot's admins" if owner else "server admins"
            raise Refused(f"Only {who} can do that.")

    # -- what applies --

    def overrides(self, requester: Requester) -> dict[str, Any]:
        """The requester's server's overrides, by "section.key"."""
        return self._overrides.get((requester.platform, requester.server), {})

    def section(self, requester: Requester, name: str) -> dict[str, Any]:
        """One settings section as it applies in the requester's server: the config with its overrides."""
        base: dict[str, Any] = getattr(self.settings, name).model_dump()
        prefix = f"{name}."
        base.update({k.removeprefix(prefix): v for k, v in self.overrides(requester).items() if k.startswith(prefix)})
        return base

    def defaults(self, requester: Requester) -> DefaultSettings:
        """The option defaults in the requester's server."""
        return DefaultSettings.model_validate(self.section(requester, "defaults"))

    def limits(self, requester: Requester) -> LimitSettings:
        """The per-user limits in the requester's server."""
        return LimitSettings.model_validate(self.section(requester, "limits"))

    def blocklist(self, requester: Requester) -> BlocklistSettings:
        """The blocked words and patterns in the requester's server."""
        return BlocklistSettings.model_validate(self.section(requester, "blocklist"))

    def check(self, requester: Requester, prompt: str | None = None) -> None:
        """Refused if the requester is banned in their server or the prompt is blocked there."""
        ban = self._bans.get((requester.platform, requester.server, requester.user))
        if ban is not None:
            because = f" ({ban.reason})" if ban.reason else ""
            raise Refused(f"You are banned from making images here{because}; ask a server admin if this is a mistake.")
        if prompt is not None:
            listed = self.blocklist(requester)
            if blocked := blocklist(listed.words, listed.patterns).match(prompt):
                raise Refused(f'Your prompt contains "{blocked}", which is not allowed here; rephrase it and try '
                              f'again.')

    def channels(self, requester: Requester) -> list[str]:
        """The channels of the requester's server the bot answers in; empty: everywhere."""
        return list(self.overrides(requester).get(CHANNELS, []))

    def check_channel(self, requester: Requester) -> None:
        """Refused, naming where the bot works, in a channel its server's admins left out."""
        allowed = self.channels(requester)
        if allowed and requester.channel not in allowed:
            where = ", ".join(f"<#{channel}>" for channel in allowed)
            raise Refused(f"The bot works only in {where} here; use it there.")

    # -- changes (the admin operations make them, with their audit rows) --

    async def set_override(self, requester: Requester, key: str, value: object, audit: AuditEntry) -> None:
        """Set one override for the requester's server (None removes it)."""
        server = (requester.platform, requester.server)
        await self._store.set_override(requester.platform, requester.server, key, value, audit)
        overrides = dict(self._overrides.get(server, {}))
        if value is None:
            overrides.pop(key, None)
        else:
            overrides[key] = value
        self._overrides[server] = overrides

    def bans(self, platform: str, server: str) -> list[Ban]:
        """The users banned in a server."""
        return [b for b in self._bans.values() if (b.platform, b.server) == (platform, server)]

    def banned(self, platform: str, server: str, user: str) -> bool:
        return (platform, server, user) in self._bans

    async def ban(self, ban: Ban, audit: AuditEntry) -> None:
        await self._store.ban(ban, audit)
        self._bans[(ban.platform, ban.server, ban.user)] = ban

    async def unban(self, platform: str, server: str, user: str, audit: AuditEntry) -> None:
        await self._store.unban(platform, server, user, audit)
        self._bans.pop((platform, server, user), None)


def audit_entry(requester: Requester, action: str, **detail: Any) -> AuditEntry:
    """An audit row for an admin action by `requester`, now."""
    r = requester
    return AuditEntry(time.time(), r.platform, r.server, r.user, action, detail)
