"""Chat platforms: thin layers from platform events to service calls and back to messages."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Mapping
from typing import Any, Protocol

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


def check_listener(section: str, host: str, port: int, other_port: str) -> None:
    """ConfigError (one line) now if a listener could not start on host:port, before minutes of loading a model.

    The socket is bound and let go: the adapter binds it again when it starts, seconds later.
    """
    if port == 0:
        return  # any free port: nothing can be taken
    for family, kind, proto, _, address in _addresses(section, host, port, other_port):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is no clash
            try:
                probe.bind(address)
            except OSError as error:
                raise listen_error(section, host, port, error, other_port) from None


def _addresses(section: str, host: str, port: int, other_port: str) -> list[Any]:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise listen_error(section, host, port, error, other_port) from None


class Adapter(Protocol):
    """One platform. `run` builds adapters before the app starts, so recovered jobs can reach them early.

    An adapter may also have `async def check(self) -> None`, which `run` calls before the model loads: it
    raises ConfigError (or PlatformUnreachable) if the adapter could not start, its port taken or its token
    refused, so that a mistake costs seconds rather than a large model's loading time.
    """

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
