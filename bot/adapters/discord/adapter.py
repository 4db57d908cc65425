"""The Discord adapter as `run` sees it: connect with a bot token, deliver recovered jobs, disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import discord

from bot.adapters import PlatformUnreachable
from bot.adapters.discord.client import PLATFORM, ImagineClient
from bot.config import ConfigError, Settings
from bot.jobs import Handle
from bot.service import Service

log = logging.getLogger(__name__)


class DiscordAdapter:
    """/imagine in Discord servers and DMs: one client connected to the gateway for the bot's lifetime."""

    platform = PLATFORM

    def __init__(self, settings: Settings, token: str, *, guild_ready_timeout: float = 2.0) -> None:
        self._settings = settings
        self._token = token
        self._guild_ready_timeout = guild_ready_timeout  # how long READY waits for the servers to stream in
        self._client: ImagineClient | None = None
        self._connection: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def client(self) -> ImagineClient:
        """The connected discord.py client."""
        assert self._client is not None, "start the adapter first"
        return self._client

    async def check(self) -> None:
        """Before the model loads: Discord accepts the token (a login of its own, closed at once)."""
        await self._login(discord.Client(intents=discord.Intents.none()))

    async def _login(self, client: discord.Client, keep: bool = False) -> None:
        """Log `client` in (closed again unless `keep`); one line for a refused token or an unreachable Discord."""
        try:
            await client.login(self._token)
        except discord.LoginFailure:
            await client.close()
            raise ConfigError(
                "DISCORD_TOKEN: Discord does not accept this token; copy a new one from the developer portal "
                "(your application -> Bot -> Reset Token)"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as error:  # DNS, refused, TLS, timed out
            await client.close()
            raise PlatformUnreachable(f"Discord cannot be reached ({error}); check this machine's network") from None
        except BaseException:
            await client.close()
            raise
        if not keep:
            await client.close()

    async def start(self, service: Service) -> None:
        """Log in (which registers and syncs the commands), connect to the gateway and wait for READY."""
        self._client = ImagineClient(service, self._settings, guild_ready_timeout=self._guild_ready_timeout)
        await self._login(self._client, keep=True)
        self._connection = asyncio.create_task(self._client.connect())
        ready = asyncio.create_task(self._client.wait_until_ready())
        await asyncio.wait({ready, self._connection}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():  # the connection ended before READY (discord.py retries network errors itself)
            ready.cancel()
            await self._client.close()
            ended = self._connection.exception()
            why = f"{type(ended).__name__}: {ended}" if ended is not None else "closed"
            raise PlatformUnreachable(f"the Discord gateway ended the connection before it was ready ({why})")
        log.info("discord: connected as %s", self._client.user)
        self._ready.set()

    async def recovered(self, handle: Handle) -> None:
        """Post a job the last run left unfinished or undelivered in its channel (it may come before start)."""
        await self._ready.wait()
        self.client.deliver(handle)

    async def close(self) -> None:
        """Stop following jobs and disconnect."""
        if self._client is not None:
            await self._client.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection
