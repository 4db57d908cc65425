"""The web adapter: an aiohttp server for the playground page, the JSON API, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.adapters import listen_error
from bot.adapters.web.identity import Credentials, Unauthorized, Who, client, shown_name
from bot.adapters.web.origin import WRITES, Origins, split_authority
from bot.adapters.web.tracking import Tracker, image_urls, job_url, message
from bot.admin import JobStatus
from bot.commandline import USAGE, CommandError, ImagineCommand, parse_imagine
from bot.config import LOOPBACK_HOSTS, ConfigError, Settings, WebSettings
from bot.jobs import Handle, Options, Refused, Requester, Status, Strength, checked_prompt
from bot.metrics import Stats
from bot.service import Service

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
MAX_BODY_BYTES = 64 * 1024
MAX_DIGITS = 100  # a JSON number longer than this is no option of ours (json.loads stops at 4300 with a ValueError)
OPTIONS = ("count", "cfg", "temperature", "seed")
FIELDS = {  # what each POST takes
    "imagine": ("user", "prompt", "command", *OPTIONS),
    "reroll": ("user",),
    "upscale": ("user", "index"),
    "vary": ("user", "index", "strength"),
    "cancel": ("user",),
}
SERVER = "web"  # web users share one "server" for limits, bans and overrides
STREAM_RETRY_S = 10
HANG_UP_POLL_S = 1.0  # how soon an event stream whose client left frees its place
WHO = web.RequestKey("who", Who)  # set by the auth middleware on the API and /metrics
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A request the API answers with `{"error": sentence}` and this status code."""

    def __init__(self, status: int, sentence: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(sentence)
        self.status = status
        self.headers = headers or {}


def refusal(error: Refused) -> ApiError:
    """A service refusal: 429 with Retry-After when it says when to retry, else 403."""
    if error.retry_after is not None:
        return ApiError(429, str(error), {"Retry-After": str(max(1, math.ceil(error.retry_after)))})
    return ApiError(403, str(error))


def prometheus(stats: Stats) -> str:
    """The Prometheus text exposition of a stats snapshot."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, values: dict[str, float]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{labels} {value:g}" for labels, value in values.items())

    metric(
        "janus_bot_up", "gauge", "1 when the generator is running with its model loaded.", {"": int(stats.generator_up)}
    )
    metric(
        "janus_bot_jobs",
        "gauge",
        "Jobs waiting for the generator and jobs being made now.",
        {'{state="queued"}': stats.waiting, '{state="running"}': stats.running},
    )
    metric("janus_bot_queue_depth", "gauge", "Jobs waiting for the generator.", {"": stats.waiting})
    metric(
        "janus_bot_jobs_ended_total",
        "counter",
        "Jobs ended since start, by final state.",
        {f'{{state="{s}"}}': stats.ended.get(s, 0) for s in ("done", "failed", "cancelled")},
    )
    metric("janus_bot_images_generated_total", "counter", "Images the generator made since start.", {"": stats.images})
    metric(
        "janus_bot_step_seconds",
        "summary",
        "Wall time of one sampling step (one token per image).",
        {"_sum": stats.step_seconds, "_count": stats.steps},
    )
    metric(
        "janus_bot_images_per_second",
        "gauge",
        "Images finished per second over the last minute.",
        {"": stats.images_per_second},
    )
    metric(
        "janus_bot_generator_restarts_total",
        "counter",
        "Times the generator process was restarted.",
        {"": stats.generator_restarts},
    )
    metric("janus_bot_paused", "gauge", "1 while an admin has paused the queue.", {"": int(stats.paused)})
    return "\n".join(lines) + "\n"


def _shown(value: object) -> str:
    """A value someone sent, as JSON, short enough to quote in a sentence."""
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _listed(names: tuple[str, ...]) -> str:
    quoted = [f'"{name}"' for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _whole(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ApiError(400, f"A number in the request body has more than {MAX_DIGITS} digits; send a shorter one.")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ApiError(400, f"{name} is not a number JSON allows; send a number such as 1.5.")


def _parsed(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or ApiError with a sentence saying what is wrong with it."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_int=_whole, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "The request body is not UTF-8 text; send JSON encoded as UTF-8.") from None
    except RecursionError:
        raise ApiError(400, "The request body is nested too deeply; send one flat JSON object.") from None
    except ValueError:
        raise ApiError(400, 'The request body is not valid JSON; send an object such as {"user": "ada"}.') from None
    if not isinstance(body, dict):
        raise ApiError(400, 'The request body must be a JSON object, such as {"user": "ada"}.')
    try:  # a "\ud800" escape decodes to half a character, which nothing can store or show
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "The request body has a \\u escape that is half of a character (a lone surrogate); "
                            "send whole characters.") from None
    return body


def _fields(body: dict[str, Any], action: str) -> None:
    for name in body:
        if name not in FIELDS[action]:
            raise ApiError(400, f"{_shown(name)} is not something {action} takes; send only "
                                f"{_listed(FIELDS[action])}.")


def _option(body: dict[str, Any], name: str, whole: bool) -> Any:
    value = body.get(name)
    kind = "a whole number" if whole else "a number"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        raise ApiError(400, f'"{name}" must be {kind}; you gave {_shown(value)}.')
    return value


def _typed(line: object) -> ImagineCommand:
    """A command line from the page: "/imagine ..." or plain prompt text, never another slash command."""
    if not isinstance(line, str):
        raise ApiError(400, f'"command" must be text such as "/imagine a red fox"; you gave {_shown(line)}.')
    words = line.split(maxsplit=1)
    if words and words[0].lower() == "/imagine":
        line = words[1] if len(words) > 1 else ""
    elif words and words[0].startswith("/"):
        raise ApiError(400, f"Only /imagine works here; {_shown(words[0])} is not a command of this bot.\n{USAGE}")
    try:
        return parse_imagine(line)
    except CommandError as error:
        raise ApiError(400, str(error)) from None


async def _hung_up(request: web.Request) -> None:
    """Return once the client has closed the connection (aiohttp tells a GET handler only when it next writes)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(HANG_UP_POLL_S)


class WebAdapter:
    """The playground and HTTP API for one service; `url` says where it listens once started."""

    platform = "web"

    def __init__(
        self, web_settings: WebSettings, data_dir: Path, token: str | None = None, admin_token: str | None = None
    ) -> None:
        if web_settings.public and not token:
            if web_settings.host not in LOOPBACK_HOSTS:
                raise ConfigError(f"web.host: {web_settings.host} serves other machines; set JANUS_BOT_WEB_TOKEN to an "
                                  'access token or bind to "127.0.0.1"')
            raise ConfigError("web.public_names: answering to other names serves other machines; set "
                              "JANUS_BOT_WEB_TOKEN to an access token or remove them")
        self.settings = web_settings
        self.url = ""
        self._data_dir = data_dir
        self._credentials = Credentials(token, admin_token)
        self._origins = Origins(web_settings)
        self._refused_names: set[str] = set()  # Host names already logged as refused
        self._streams: Counter[str] = Counter()  # open event streams per client
        self._service: Service | None = None
        self._runner: web.AppRunner | None = None
        self._started = asyncio.Event()  # recovered jobs can end before start() is called
        self._tracker = Tracker(self._delivered)

    @classmethod
    def from_settings(cls, settings: Settings) -> WebAdapter:
        """The adapter for the [web] settings and the JANUS_BOT_WEB_TOKEN and JANUS_BOT_WEB_ADMIN_TOKEN secrets."""
        secrets = settings.secrets
        return cls(settings.web, settings.bot.data_dir, secrets.web_token, secrets.web_admin_token)

    @property
    def where(self) -> str:
        """What the startup banner shows."""
        return self.url + (" (API needs the bearer token in JANUS_BOT_WEB_TOKEN)" if self._credentials.token else "")

    @property
    def service(self) -> Service:
        """The service this adapter serves; set by start()."""
        assert self._service is not None, "start the adapter first"
        return self._service

    # -- the Adapter protocol --

    async def start(self, service: Service) -> None:
        """Listen on the configured host and port."""
        self._service = service
        self._started.set()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            raise listen_error("web", self.settings.host, self.settings.port, error,
                               "pick another with --web-port") from None
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
        log.info("web playground at %s", self.url)

    async def recovered(self, handle: Handle) -> None:
        """Keep following a job of the last run so the page and the API can show it."""
        self._tracker.follow(handle)

    async def close(self) -> None:
        """End event streams and stop listening."""
        await self._tracker.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _delivered(self, job_id: str) -> None:
        await self._started.wait()
        await self.service.delivered(job_id)

    # -- the aiohttp application --

    def app(self) -> web.Application:
        """The routes and middlewares, for `start` and for tests."""
        middlewares = [self._errors, self._origin, self._auth]
        app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/api/imagine", self.imagine)
        app.router.add_post("/api/jobs/{job_id}/reroll", self.reroll)
        app.router.add_post("/api/jobs/{job_id}/upscale", self.upscale)
        app.router.add_post("/api/jobs/{job_id}/vary", self.vary)
        app.router.add_post("/api/jobs/{job_id}/cancel", self.cancel)
        app.router.add_get("/api/jobs/{job_id}", self.job)
        app.router.add_get("/api/jobs/{job_id}/grid.png", self.grid)
        app.router.add_get(r"/api/jobs/{job_id}/images/{index:[0-9]+}.png", self.image)
        app.router.add_get("/api/jobs/{job_id}/preview.png", self.preview)
        app.router.add_get("/api/jobs/{job_id}/events", self.events)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return web.json_response({"error": str(error)}, status=error.status, headers=error.headers)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            sentence = {
                404: f"There is nothing at {request.path}; the API lives under /api/ (see the README).",
                405: f"{request.method} is not allowed on {request.path}.",
                413: f"The request body is over {MAX_BODY_BYTES // 1024} KiB; send less.",
            }.get(error.status, error.reason or "The request could not be handled.")
            return web.json_response({"error": sentence}, status=error.status)
        except Exception:
            log.exception("%s %s failed", request.method, request.raw_path)  # as sent: a decoded %0A is a new line
            return web.json_response({"error": "Something went wrong on the server; try again."}, status=500)

    @web.middleware
    async def _origin(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer only to this bot's names (DNS rebinding), and take writes only from its own page (CSRF)."""
        host = request.headers.get("Host")
        if host is not None and not self._origins.serves(host):
            name = _shown(split_authority(host)[0]).strip('"')  # escaped: it is whatever the client sent
            if len(self._refused_names) < 100 and name not in self._refused_names:
                self._refused_names.add(name)
                log.warning("web: refused requests for the host name %r (not web.host, a loopback name or in "
                            "web.public_names)", name)
            raise ApiError(421, f"This bot does not answer to the name '{name}'; open it at {self.url or 'its address'}"
                                f", or add the name to [web] public_names if it is yours (a reverse proxy's).")
        if request.method in WRITES and request.match_info.http_exception is None:
            if self._origins.cross_site(request.method, request.headers):
                raise ApiError(403, "Requests from other sites are refused; use the bot's own page, or call the API "
                                    "from a script (which sends no Origin header).")
            if request.content_type != "application/json":
                raise ApiError(415, "Send the request body as JSON, with 'Content-Type: application/json'.")
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Who the request acts as (its token, or this machine), on the API and /metrics."""
        if request.path.startswith("/api/") or request.path == "/metrics":
            try:
                request[WHO] = self._credentials.who(request.headers.get("Authorization"), request.remote)
            except Unauthorized as error:
                raise ApiError(401, str(error), {"WWW-Authenticate": 'Bearer realm="janus-bot"'}) from None
        return await handler(request)

    # -- page, health and metrics --

    async def index(self, request: web.Request) -> web.StreamResponse:
        """The playground page."""
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the generator is up with its model loaded, else 503; with the queue depth."""
        stats = self.service.stats()
        body = {
            "status": "ok" if stats.generator_up else "unavailable",
            "generator_up": stats.generator_up,
            "model_loaded": stats.model is not None,
            "model": stats.model,
            "device": stats.device,
            "queue_depth": stats.waiting,
            "running": stats.running,
            "paused": stats.paused,
        }
        return web.json_response(body, status=200 if stats.generator_up else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text."""
        response = web.Response(text=prometheus(self.service.stats()) + await self.service.backend_metrics())
        response.content_type = "text/plain; version=0.0.4"
        return response

    # -- helpers --

    async def _body(self, request: web.Request, action: str) -> tuple[dict[str, Any], Requester]:
        """The request's JSON object, checked to hold only what `action` takes, and who asked."""
        body = _parsed(await request.read())
        _fields(body, action)
        who = request[WHO]
        try:
            name = shown_name(body.get("user"))
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        return body, Requester(self.platform, SERVER, SERVER, who.user, who.is_admin, name)

    async def _status(self, request: web.Request) -> JobStatus:
        job_id = request.match_info["job_id"]
        status = await self.service.status(job_id)
        if status is None or status.job.requester.platform != self.platform:
            raise ApiError(404, f"There is no job {job_id}; start one with POST /api/imagine.")
        return status

    async def _accepted(self, handle: Handle) -> web.Response:
        self._tracker.follow(handle)
        status = await self.service.status(handle.job.id)
        position = status.position if status is not None and status.position is not None else 0
        body = {"job_id": handle.job.id, "position": position, "url": job_url(handle.job.id),
                "user": handle.job.requester.shown}  # fmt: skip
        return web.json_response(body, status=202)

    def _job_json(self, status: JobStatus) -> dict[str, Any]:
        job = status.job
        tracked = self._tracker.get(job.id)
        done = job.status is Status.DONE
        preview = f"{job_url(job.id)}/preview.png?v={tracked.preview_version}" if tracked and tracked.preview else None
        return {
            "job_id": job.id,
            "kind": job.kind.value,
            "status": job.status.value,
            "user": job.requester.shown,  # the name they gave (rights go by the identity in requester.user)
            "prompt": job.prompt,
            "count": job.options.count,
            "cfg": job.options.cfg,
            "temperature": job.options.temperature,
            "seed": job.seed,
            "parent_id": job.parent_id,
            "parent_index": job.parent_index,
            "strength": job.strength.value if job.strength else None,
            "position": status.position,
            "progress": 100 if done else tracked.percent if tracked else None,
            "error": job.error,
            "grid_url": f"{job_url(job.id)}/grid.png" if done else None,
            "image_urls": image_urls(job.id, job.options.count) if done else [],
            "preview_url": preview,
            "events_url": f"{job_url(job.id)}/events",
        }

    def _file(self, status: JobStatus, name: str | None) -> web.FileResponse:
        """One stored picture of a finished job: an image by file name, or (None) its grid."""
        job = status.job
        if job.status is not Status.DONE or not job.grid_path:
            raise ApiError(409, "That job has no images yet; wait until it is done.")
        grid = self._data_dir / job.grid_path  # a one-image job's grid is its image, stored once
        path = grid if name is None else grid.parent / name
        if not path.is_file():
            raise ApiError(410, "The images of this job are no longer stored; start a new one with /imagine.")
        return web.FileResponse(path, headers={"Cache-Control": "private, max-age=31536000, immutable"})

    def _index(self, status: JobStatus, body: dict[str, Any]) -> int:
        count = status.job.options.count
        if "index" not in body:
            raise ApiError(400, f'Say which image in "index", a whole number from 0 to {count - 1} (U1 is 0).')
        index = body["index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ApiError(400, f'"index" must be a whole number from 0 to {count - 1} (U1 is 0); '
                                f'you gave {_shown(index)}.')
        if status.job.status is not Status.DONE:
            raise ApiError(409, "That job has no images yet; wait until it is done.")
        return index

    # -- the API --

    async def imagine(self, request: web.Request) -> web.Response:
        """Queue a job from {"user", "prompt", "count"?, "cfg"?, "temperature"?, "seed"?}, or a typed "command"."""
        body, requester = await self._body(request, "imagine")
        options = {name: _option(body, name, whole=name in ("count", "seed")) for name in OPTIONS}
        prompt = body.get("prompt")
        if "prompt" in body and "command" in body:
            raise ApiError(400, 'Give either "prompt" or "command", not both.')
        if "command" in body:
            command = _typed(body["command"])
            prompt = command.prompt
            typed = {name: getattr(command, name) for name in OPTIONS}
            options.update({name: value for name, value in typed.items() if value is not None})
        if not isinstance(prompt, str):
            raise ApiError(400, 'Describe the picture in "prompt", for example {"user": "ada", "prompt": "a red fox"}.')
        try:
            checked_prompt(prompt)
            defaults = self.service.policy.defaults(requester)
            Options.checked(
                defaults.count if options["count"] is None else options["count"],
                defaults.cfg if options["cfg"] is None else options["cfg"],
                defaults.temperature if options["temperature"] is None else options["temperature"],
                options["seed"],
            )
        except Refused as error:
            raise ApiError(400, str(error)) from None
        try:
            handle = await self.service.submit(requester, prompt, **options)
        except Refused as error:
            raise refusal(error) from None
        return await self._accepted(handle)

    async def reroll(self, request: web.Request) -> web.Response:
        """The same prompt and options with a new seed."""
        _, requester = await self._body(request, "reroll")
        status = await self._status(request)
        try:
            return await self._accepted(await self.service.reroll(requester, status.job.id))
        except Refused as error:
            raise refusal(error) from None

    async def upscale(self, request: web.Request) -> web.Response:
        """Image "index" (0-based) alone, upscaled."""
        body, requester = await self._body(request, "upscale")
        status = await self._status(request)
        index = self._index(status, body)
        try:
            return await self._accepted(await self.service.upscale(requester, status.job.id, index))
        except Refused as error:
            raise refusal(error) from None

    async def vary(self, request: web.Request) -> web.Response:
        """Variations of image "index" (0-based), "strength" subtle (default) or strong."""
        body, requester = await self._body(request, "vary")
        status = await self._status(request)
        index = self._index(status, body)
        strength = body.get("strength", Strength.SUBTLE.value)
        if strength not in [s.value for s in Strength]:
            raise ApiError(400, f'"strength" must be "subtle" or "strong"; you gave {_shown(strength)}.')
        try:
            return await self._accepted(await self.service.vary(requester, status.job.id, index, Strength(strength)))
        except Refused as error:
            raise refusal(error) from None

    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel one's own waiting or running job."""
        _, requester = await self._body(request, "cancel")
        status = await self._status(request)
        if status.job.status.final:
            raise ApiError(409, "That job has already finished.")
        try:
            await self.service.cancel(requester, status.job.id)
        except Refused as error:
            raise refusal(error) from None
        after = await self._status(request)
        return web.json_response({**self._job_json(after), "cancelling": not after.job.status.final})

    async def job(self, request: web.Request) -> web.Response:
        """Where a job stands: status, position, progress, error, seed and image URLs."""
        return web.json_response(self._job_json(await self._status(request)))

    async def grid(self, request: web.Request) -> web.StreamResponse:
        """The finished job's grid."""
        return self._file(await self._status(request), None)

    async def image(self, request: web.Request) -> web.StreamResponse:
        """One image of a finished job, 0-based."""
        status = await self._status(request)
        digits = request.match_info["index"]
        if len(digits) > 6 or int(digits) >= status.job.options.count:
            raise ApiError(404, f"That job has images 0 to {status.job.options.count - 1}.")
        return self._file(status, f"{int(digits)}.png")

    async def preview(self, request: web.Request) -> web.Response:
        """The latest preview of a job being made (filled in top-down)."""
        status = await self._status(request)
        tracked = self._tracker.get(status.job.id)
        if status.job.status.final:
            raise ApiError(404, "That job has finished, so it has no preview any more; see its grid_url.")
        if tracked is None or tracked.preview is None:
            raise ApiError(404, "That job has no preview yet; previews come every few percent while it runs.")
        return web.Response(body=tracked.preview, content_type="image/png", headers={"Cache-Control": "no-store"})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: queued, started, progress, then one of done, failed or cancelled."""
        status = await self._status(request)
        key = client(request.remote)
        if self._streams[key] >= self.settings.max_streams_per_client:
            raise ApiError(429, f"You have {self._streams[key]} event streams open, the most one client may; close "
                                "some (each job a page follows holds one) and try again.",
                           {"Retry-After": str(STREAM_RETRY_S)})
        if self._streams.total() >= self.settings.max_streams:
            raise ApiError(429, "The bot is serving as many event streams as it can; try again in a moment, or poll "
                                f"{job_url(status.job.id)} instead.", {"Retry-After": str(STREAM_RETRY_S)})
        self._streams[key] += 1
        stream = asyncio.ensure_future(self._stream(request, status))
        gone = asyncio.ensure_future(_hung_up(request))
        try:
            await asyncio.wait({stream, gone}, return_when=asyncio.FIRST_COMPLETED)
            if stream.done():
                return stream.result()
        except ConnectionResetError:  # the client went away while we wrote: nothing to tell it, nothing wrong here
            pass
        finally:
            for task in (stream, gone):
                task.cancel()
            await asyncio.gather(stream, gone, return_exceptions=True)
            self._streams[key] -= 1
            if not self._streams[key]:
                del self._streams[key]
        log.debug("event stream of job %s: the client hung up", status.job.id)
        return web.Response(status=204)  # nobody reads it; aiohttp drops it quietly

    async def _stream(self, request: web.Request, status: JobStatus) -> web.StreamResponse:
        tracked = self._tracker.get(status.job.id)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        })  # fmt: skip
        await response.prepare(request)
        if tracked is None:  # a finished job from before this run, or one this adapter did not follow
            handle = await self.service.watch(status.job.id)
            name, data = message(await handle.final())
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            return response
        async for name, data in tracked.stream():
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n" if name else ": keep-alive\n\n"
            await response.write(chunk.encode())
        return response
