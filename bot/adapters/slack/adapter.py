"""The Slack adapter: the bolt app served over Socket Mode (an app token) or signed HTTP (a signing secret)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters import PlatformUnreachable, check_listener, listen_error
from bot.adapters.slack.api import SlackProblem, call
from bot.adapters.slack.app import PLATFORM, SlackBot, build_app
from bot.config import ConfigError, Settings
from bot.jobs import Handle
from bot.service import Service

log = logging.getLogger(__name__)
REPLAY_WINDOW_S = 5 * 60  # Slack's own limit on a request's age; signatures are remembered this long


class SlackAdapter:
    """`/imagine` in one Slack workspace.

    Socket Mode when an app token is given (no public URL needed), else HTTP mode, where every request
    must carry a valid signature made within the last five minutes and may be used only once.
    """

    platform = PLATFORM

    def __init__(
        self,
        settings: Settings,
        token: str,
        *,
        app_token: str | None = None,
        signing_secret: str | None = None,
    ) -> None:
        mode = settings.slack.mode
        socket = mode == "socket" or (mode == "auto" and bool(app_token))
        if socket and not app_token:
            raise ConfigError("slack.mode: Socket Mode needs an app token; set SLACK_APP_TOKEN")
        if not socket and not signing_secret:
            raise ConfigError("slack.mode: HTTP mode needs a signing secret; set SLACK_SIGNING_SECRET")
        self.settings = settings.slack
        self.mode = "socket" if socket else "http"
        self._token = token
        self._app_token = app_token
        self._signing_secret = signing_secret or ""
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self._seen: dict[str, float] = {}  # signatures of accepted HTTP requests, with when they came
        self._started = asyncio.Event()
        self._bot: SlackBot | None = None
        self._app: AsyncApp | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # HTTP mode: the port it listens on

    @property
    def app(self) -> AsyncApp:
        """The bolt app (after start)."""
        assert self._app is not None, "start the adapter first"
        return self._app

    async def check(self) -> None:
        """Before the model loads: the bot token accepted, and in HTTP mode the port free."""
        client = AsyncWebClient(token=self._token, base_url=self.settings.api_url or AsyncWebClient.BASE_URL)
        try:
            await call(client.auth_test)
        except SlackProblem as problem:
            raise _start_error(problem, "SLACK_BOT_TOKEN", "reinstall the app and copy the new one") from None
        if self.mode == "http":
            check_listener("slack", self.settings.host, self.settings.port, "pick another in [slack]")

    async def start(self, service: Service) -> None:
        """Check the tokens, then connect (Socket Mode) or listen (HTTP mode)."""
        self._bot = SlackBot(
            service,
            update_interval=self.settings.update_interval_s,
            preview_interval=self.settings.preview_interval_s,
        )
        self._app = build_app(
            self._bot, token=self._token, signing_secret=self._signing_secret, api_url=self.settings.api_url or None
        )
        try:
            me = await call(self.app.client.auth_test)
        except SlackProblem as problem:
            raise _start_error(problem, "SLACK_BOT_TOKEN", "reinstall the app and copy the new one") from None
        log.info("Slack: signed in as %s in %s (%s mode)", me.get("user"), me.get("team"), self.mode)
        if self.mode == "socket":
            await self._connect()
        else:
            await self._listen()
        self._started.set()

    async def _connect(self) -> None:
        self._socket = AsyncSocketModeHandler(self.app, self._app_token, logger=log, web_client=self.app.client)
        try:  # ask for the first URL here, so a bad app token is one clear error rather than endless retries
            opened = await call(self.app.client.apps_connections_open, app_token=self._app_token)
        except SlackProblem as problem:
            raise _start_error(problem, "SLACK_APP_TOKEN", "create an app-level token with connections:write") from None
        self._socket.client.wss_uri = str(opened["url"])
        await self._socket.connect_async()

    async def _listen(self) -> None:
        server = web.Application()
        server.router.add_post(self.settings.path, self._http)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            raise listen_error("slack", self.settings.host, self.settings.port, error,
                               "pick another in [slack]") from None
        self.port = self._runner.addresses[0][1]
        log.info("Slack: listening on %s:%d%s", self.settings.host, self.port, self.settings.path)

    async def _http(self, request: web.Request) -> web.Response:
        """One request from Slack: verified, refused if seen before, then handed to bolt."""
        body = await request.text()
        signature = request.headers.get("X-Slack-Signature", "")
        if request.content_type == "application/x-www-form-urlencoded" and (await request.post()).get("ssl_check"):
            return web.Response(text="")  # Slack checking the certificate when a URL is saved; starts nothing
        if not self._verified(body, request):
            log.warning("Slack: refused a request with a missing, wrong or stale signature")
            return web.Response(status=401, text="invalid signature")
        now = time.monotonic()
        self._seen = {s: at for s, at in self._seen.items() if now - at < REPLAY_WINDOW_S}
        if signature in self._seen:
            log.warning("Slack: refused a replayed request")
            return web.Response(status=401, text="replayed request")
        self._seen[signature] = now
        bolt_request = await to_bolt_request(request)
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    def _verified(self, body: str, request: web.Request) -> bool:
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        if self._verifier is None or not timestamp.isdigit():
            return False
        return self._verifier.is_valid(body, timestamp, request.headers.get("X-Slack-Signature"))

    async def recovered(self, handle: Handle) -> None:
        """Show a job from before a restart in its old message (or a new one), following it to its end."""
        await self._started.wait()
        assert self._bot is not None
        job = handle.job
        client = self.app.client

        async def notify(text: str) -> None:
            await call(client.chat_postEphemeral, attempts=1, channel=job.requester.channel, user=job.requester.user,
                       text=text)  # fmt: skip

        await self._bot.recover(client, handle, notify)

    async def close(self) -> None:
        """Disconnect or stop listening, then stop following jobs."""
        if self._socket is not None:
            await self._socket.close_async()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._bot is not None:
            await self._bot.close()


def _start_error(problem: SlackProblem, token: str, fix: str) -> Exception:
    """The one line that stops the bot when a token is checked at start: Slack said no, or did not answer."""
    if problem.error == "unreachable":
        return PlatformUnreachable(f"Slack cannot be reached ({problem.detail}); check this machine's network")
    return ConfigError(f"{token}: Slack refused this token ({problem.error}); {fix}")
