"""Chat platforms: thin layers from platform events to service calls and back to messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bot.config import Settings
from bot.service import Handle, Service


class Adapter(Protocol):
    """One platform. `run` builds adapters before the app starts, so recovered jobs can reach them early."""

    platform: str  # the Job.platform value this adapter delivers ("discord", "slack", "web")

    async def start(self, service: Service) -> None:
        """Connect and begin serving; returns once connected."""

    async def recovered(self, handle: Handle) -> None:
        """Follow a job the last run left unfinished or undelivered to its end and post the result."""

    async def close(self) -> None:
        """Stop taking commands and disconnect."""


def configured_adapters(settings: Settings, env: Mapping[str, str]) -> list[Adapter]:
    """The adapters the settings ask for: Discord and Slack when their tokens are set, else the web page."""
    adapters: list[Adapter] = []
    # Each platform adds its block here.
    if settings.secrets.discord_token:
        from bot.adapters.discord import DiscordAdapter

        adapters.append(DiscordAdapter(settings, settings.secrets.discord_token))
    # The web page stays last: it runs when asked ([web] enabled, --web-port) or when no chat platform is set.
    if settings.web.enabled or not adapters:
        from bot.adapters.web import WebAdapter

        adapters.append(WebAdapter.from_settings(settings))
    return adapters
