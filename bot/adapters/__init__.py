"""Chat platforms: thin layers from platform events to service calls and back to messages."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Mapping
from typing import Protocol

from bot.config import ConfigError, Settings
from bot.jobs import Handle
from bot.service import Service


class PlatformUnreachable(ConnectionError):
    """A chat platform could not be reached at start; the message is one line for the operator."""


def listen_error(section: str, host: str, port: int, error: OSError, other_port: str) -> ConfigError:
    """The one line for a listener that could not start: the host is no address of this machine, or the port
    is taken (`other_port` says where to pick another)."""
    if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{section}.host: cannot listen on {host} ({error.strerror}); give an address of this "
                           f"machine, such as 127.0.0.1")
    return ConfigError(f"{section}.port: cannot listen on {host}:{port} ({error.strerror}); {other_port}")


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
    secrets = settings.secrets
    if secrets.slack_bot_token and (secrets.slack_app_token or secrets.slack_signing_secret):
        from bot.adapters.slack import SlackAdapter

        adapters.append(
            SlackAdapter(
                settings,
                secrets.slack_bot_token,
                app_token=secrets.slack_app_token,
                signing_secret=secrets.slack_signing_secret,
            )
        )
    elif secrets.slack_bot_token:
        logging.getLogger(__name__).warning(
            "SLACK_BOT_TOKEN is set without SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode); "
            "Slack stays off"
        )
    # The web page stays last: it runs when asked ([web] enabled, --web-port) or when no chat platform is set.
    if settings.web.enabled or not adapters:
        from bot.adapters.web import WebAdapter

        adapters.append(WebAdapter.from_settings(settings))
    return adapters
