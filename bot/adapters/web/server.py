"""The web adapter: an aiohttp server for the playground page, the JSON API, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import base64
import binascii
import getpass
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bot import images
from bot.adapters import check_listener, listen_error
from bot.adapters.web.about import DEMO_DRAWS, api_index, demo_examples, is_demo, model_name
from bot.adapters.web.identity import LOCAL, Credentials, Unauthorized, Who, client, shown_name
from bot.adapters.web.origin import WRITES, Origins, split_authority
from bot.adapters.web.tracking import Tracker, image_urls, job_url, message
from bot.admin import JobStatus
from bot.admission import MOST_PROMPTS
from bot.commandline import USAGE, CommandError, ImagineCommand, parse_imagine
from bot.config import LOOPBACK_HOSTS, ConfigError, Settings, WebSettings
from bot.jobs import (
    REGIONS,
    Handle,
    Invalid,
    Job,
    Kind,
    Options,
    Refused,
    Region,
    Requester,
    Status,
    Strength,
    checked_prompt,
    checked_region,
    is_job_id,
)
from bot.metrics import Stats
from bot.service import Service

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
STATIC_FILES = frozenset(path.name for path in STATIC.iterdir() if path.is_file())
MAX_BODY_BYTES = 64 * 1024
MAX_DIGITS = 100  # a JSON number longer than this is no option of ours (json.loads stops at 4300 with a ValueError)
OPTIONS = ("count", "cfg", "temperature", "seed")
FIELDS = {  # what each POST takes
    "imagine": ("user", "prompt", "command", *OPTIONS, "negative", "image", "region"),
    "reroll": ("user", "prompt", "negative"),
    "upscale": ("user", "index"),
    "vary": ("user", "index", "strength", "region", "prompt", "negative"),
    "cancel": ("user",),
    "describe": ("user", "image", "job_id", "index", "count"),
}
UPLOAD_ROUTES = ("imagine", "describe")  # the writes that also take multipart/form-data: a picture file and fields
UPLOAD_DECODES = 2  # pictures checked at once: a 40-megapixel one holds over 100 MB while it is decoded
CHUNK_BYTES = 64 * 1024
DECIMAL = re.compile(r"-?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})")  # a form's number, or one of "x0,y0,.."
LISTING = ("before", "limit", "everyone")  # what GET /api/jobs takes
SAFE_INTEGER = 2**53 - 1  # the largest whole number JavaScript (and JSON readers built like it) holds exactly
SEED_DIGITS = re.compile(r"[0-9]{1,100}")
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
    """A service refusal: 400 for a request wrong as given, 429 with Retry-After when it says when to retry,
    else 403."""
    if isinstance(error, Invalid):
        return ApiError(400, str(error))
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


def _seed(body: dict[str, Any]) -> int | None:
    """A seed sent as a string of digits or as a number JavaScript holds exactly (larger ones arrive rounded)."""
    value = body.get("seed")
    if value is None:
        return None
    if isinstance(value, str) and SEED_DIGITS.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value > SAFE_INTEGER:
            raise ApiError(400, f'"seed" above {SAFE_INTEGER} must be a string of digits, such as "{value}": '
                                "JavaScript and many JSON readers round larger numbers.")
        return value
    raise ApiError(400, f'"seed" must be a whole number or a string of digits, such as "42"; you gave {_shown(value)}.')


def _text(body: dict[str, Any], name: str, example: str) -> str | None:
    """An optional text field (None when absent or null)."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f'"{name}" must be text such as "{example}"; you gave {_shown(value)}.')
    return value


REGION_HINT = ('four numbers [x0, y0, x1, y1] from 0 to 1, fractions of the width and height from the top left '
               '(such as [0, 0.5, 1, 1] for the bottom half), the same as text "0,0.5,1,1", or a name such as '
               '"bottom half"')


def _region(value: object) -> Region | None:
    """An optional "region", checked: four numbers, the same as "x0,y0,x1,y1" text, or a name from REGIONS."""
    if value is None:
        return None
    given = value
    if isinstance(value, str):
        name = " ".join(value.lower().replace("center", "centre").split())
        if name in REGIONS:
            return REGIONS[name]
        parts = [part.strip() for part in value.split(",")]
        if len(parts) == 4 and all(DECIMAL.fullmatch(part) for part in parts):
            value = [float(part) for part in parts]
    if not isinstance(value, list) or len(value) != 4 or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in value):
        raise ApiError(400, f'"region" must be {REGION_HINT}; you gave {_shown(given)}.')
    try:
        return checked_region(value)
    except Refused as error:
        raise ApiError(400, str(error)) from None


def region_words(region: Region) -> str:
    """A region as a phrase: "the bottom half", or "the region 0.1,0.2,0.5,0.6"."""
    named = [name for name, cells in REGIONS.items() if cells == tuple(region)]
    return f"the {named[0]}" if named else "the region " + ",".join(f"{v:.4g}" for v in region)


def _base64_picture(value: object) -> bytes:
    """A JSON "image": a picture file's bytes in standard base64 (line breaks and a data: URL's head allowed)."""
    hint = ("send the picture file's bytes in standard base64 (what `base64 -w0 fox.png` prints), or the file "
            "itself as multipart/form-data")
    if not isinstance(value, str):
        raise ApiError(400, f'"image" must be text; {hint}. You gave {_shown(value)}.')
    text = value.strip()
    if text[:5].lower() == "data:":  # what a browser's FileReader.readAsDataURL gives
        head, comma, text = text.partition(",")
        if not comma or not head.lower().endswith(";base64"):
            raise ApiError(400, f'"image" is a data: URL that is not base64; {hint}.')
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f'"image" is not base64; {hint}.') from None
    if not data:
        raise ApiError(400, f'"image" is empty; {hint}.')
    return data


def _form_value(name: str, text: str) -> object:
    """A multipart form's text field as the JSON value it stands for: numbers for count, index, cfg and
    temperature when they read as numbers (else the text, which the JSON checks refuse with their own sentence)."""
    if name in ("count", "index") and text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
        return int(text)
    if name in ("cfg", "temperature") and DECIMAL.fullmatch(text):
        return float(text)
    return text


async def _chunks(read: Callable[[int], Awaitable[bytes]], limit: int, too_large: ApiError) -> bytes:
    """All of a request's body (its content.read) or of one of its parts (read_chunk), or `too_large` as soon as
    it passes `limit` bytes: aiohttp's own limit (client_max_size) is one for every route, and small."""
    data = bytearray()
    while chunk := await read(CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise too_large
    return bytes(data)


def _no_pictures(job: Job) -> ApiError:
    """Why a job that is not done (or a describe job) has no pictures."""
    if job.kind is Kind.DESCRIBE:
        return ApiError(409, f"Job {job.id} describes a picture: it answers with prompts (its \"prompts\"), not "
                             "images; start one with POST /api/imagine.")
    if job.status is Status.CANCELLED:
        return ApiError(409, "That job was cancelled, so it has no images; start a new one with /imagine.")
    if job.status is Status.FAILED:
        reason = f" ({job.error})" if job.error else ""
        return ApiError(409, f"That job failed{reason}, so it has no images; start a new one with /imagine.")
    return ApiError(409, "That job has no images yet; wait until it is done.")


def made_from(job: Job) -> str | None:
    """What a job was made from, as a phrase: "reroll of job ...", "strong variations of image 2 of job ...",
    "a picture, the bottom half made again"; a describe job: "image 2 of job ...", "a picture sent"."""
    if job.kind is Kind.DESCRIBE:
        return f"image {(job.parent_index or 0) + 1} of job {job.parent_id}" if job.parent_id else "a picture sent"
    if job.parent_id is None:
        return f"a picture, {region_words(job.region)} made again" if job.source and job.region else None
    image = f"image {(job.parent_index or 0) + 1} of job {job.parent_id}"
    if job.kind is Kind.REGION:
        return f"Vary (Region) of {image}, {region_words(job.region)} made again" if job.region else \
            f"Vary (Region) of {image}"  # fmt: skip
    if job.kind is Kind.VARIATION:
        return f"{(job.strength or Strength.SUBTLE).value} variations of {image}"
    if job.kind is Kind.UPSCALE:
        return f"upscale of {image}"
    return f"reroll of job {job.parent_id}"


def _seconds(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(end - start, 0.0)


def _query(request: web.Request) -> tuple[float | None, int, bool]:
    """GET /api/jobs's before, limit and everyone, checked."""
    for name in request.query:
        if name not in LISTING:
            raise ApiError(400, f"{_shown(name)} is not something the job list takes; send only {_listed(LISTING)}.")
    before: float | None = None
    if "before" in request.query:
        try:
            before = float(request.query["before"])
        except ValueError:
            before = math.nan
        if not math.isfinite(before):
            raise ApiError(400, '"before" must be a time in seconds since 1970 (a job\'s "created_at"); you gave '
                                f'{_shown(request.query["before"])}.')
    text = request.query.get("limit", "20")
    if not (text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= 100):
        raise ApiError(400, f'"limit" must be a whole number from 1 to 100; you gave {_shown(text)}.')
    everyone = request.query.get("everyone", "0")
    if everyone.lower() not in ("1", "0", "true", "false"):
        raise ApiError(400, f'"everyone" must be 1 or 0; you gave {_shown(everyone)}.')
    return before, int(text), everyone.lower() in ("1", "true")


def console_name(settings: WebSettings) -> str:
    """The name the page starts with on this machine's console: [web] console_name, else the login name (else
    "operator"); ConfigError for a configured name the page could not send."""
    if settings.console_name:
        try:
            return shown_name(settings.console_name)
        except ValueError:
            raise ConfigError("web.console_name: give a name of 1 to 64 characters on one line") from None
    try:
        return shown_name(getpass.getuser())
    except (KeyError, OSError, ValueError):  # a container's user with no passwd entry, among others
        return "operator"


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
        self._console_name = console_name(web_settings)
        self._data_dir = data_dir
        self._credentials = Credentials(token, admin_token)
        self._origins = Origins(web_settings)
        self._refused_names: set[str] = set()  # Host names already logged as refused
        self._streams: Counter[str] = Counter()  # open event streams per client
        self._decoding = asyncio.Semaphore(UPLOAD_DECODES)
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

    async def check(self) -> None:
        """Before the model loads: ConfigError (one line) if the page's port is taken or its host is not ours."""
        check_listener("web", self.settings.host, self.settings.port, "pick another with --web-port")

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
        app.router.add_get("/static", self.static)
        app.router.add_get("/static/{name:.*}", self.static)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/api", self.api_root)
        app.router.add_get("/api/", self.api_root)
        app.router.add_get("/api/about", self.about)
        app.router.add_post("/api/imagine", self.imagine, name="imagine")
        app.router.add_post("/api/describe", self.describe, name="describe")
        app.router.add_get("/api/jobs", self.jobs)
        app.router.add_post("/api/jobs/{job_id}/reroll", self.reroll)
        app.router.add_post("/api/jobs/{job_id}/upscale", self.upscale)
        app.router.add_post("/api/jobs/{job_id}/vary", self.vary)
        app.router.add_post("/api/jobs/{job_id}/cancel", self.cancel)
        app.router.add_get("/api/jobs/{job_id}", self.job)
        app.router.add_delete("/api/jobs/{job_id}", self.delete)
        app.router.add_get("/api/jobs/{job_id}/grid.png", self.grid)
        app.router.add_get(r"/api/jobs/{job_id}/images/{index:[0-9]+}.png", self.image)
        app.router.add_get("/api/jobs/{job_id}/preview.png", self.preview)
        app.router.add_get("/api/jobs/{job_id}/source.png", self.source)
        app.router.add_get("/api/jobs/{job_id}/events", self.events)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as error:
            return web.json_response({"error": str(error)}, status=error.status, headers=error.headers)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return self._http_error(request, error.status, error.reason)
        except Exception:
            log.exception("%s %s failed", request.method, request.raw_path)  # as sent: a decoded %0A is a new line
            return web.json_response({"error": "Something went wrong on the server; try again."}, status=500)
        if isinstance(response, web.HTTPException) and response.status >= 400:  # the static files' handler returns them
            return self._http_error(request, response.status, response.reason)
        return response

    @staticmethod
    def _http_error(request: web.Request, status: int, reason: str | None) -> web.Response:
        """aiohttp's own refusals (no such route, method or file; too large) as a sentence."""
        sentence = {
            404: f"There is nothing at {request.path}; the playground is at / and GET /api/ lists the API's endpoints.",
            405: f"{request.method} is not allowed on {request.path}.",
            413: f"The request body is over {MAX_BODY_BYTES // 1024} KiB; send less.",
        }.get(status, f"The request could not be handled ({reason or status}); check it against GET /api/.")
        return web.json_response({"error": sentence}, status=status)

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
            # A DELETE without a body needs no JSON type: no form sends DELETE, and another site's fetch of it is
            # preflighted, which this server never answers.
            bodiless_delete = request.method == "DELETE" and not request.body_exists and "Content-Type" not in \
                request.headers  # fmt: skip
            upload = request.match_info.route.name in UPLOAD_ROUTES
            if upload and request.content_type == "multipart/form-data":
                # Any site's <form> can post multipart with no preflight: ask for a sign of our own page or a script
                if not self._origins.vouched_form(request.headers):
                    raise ApiError(403, "A picture sent as multipart/form-data needs the access token "
                                        "(Authorization) or this page's own Origin header, since a form on any "
                                        "site can send multipart; from a script, send the picture as base64 in "
                                        'a JSON "image" instead.')
            elif not bodiless_delete and request.content_type != "application/json":
                raise ApiError(415, "Send the request body as JSON, with 'Content-Type: application/json'" + (
                    ", or a picture and its fields as multipart/form-data." if upload else "."))
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Who the request acts as (its token, or this machine), on the API and /metrics."""
        if request.path.startswith("/api/") and request.path != "/api/" or request.path == "/metrics":
            try:
                request[WHO] = self._credentials.who(request.headers.get("Authorization"), request.remote)
            except Unauthorized as error:
                raise ApiError(401, str(error), {"WWW-Authenticate": 'Bearer realm="janus-bot"'}) from None
        return await handler(request)

    # -- page, health and metrics --

    async def index(self, request: web.Request) -> web.StreamResponse:
        """The playground page."""
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        """The page's own files, by name (there is no listing of them)."""
        name = request.match_info.get("name", "")
        if not name:
            raise ApiError(404, "There is no page at /static/; the playground is at /.")
        if name not in STATIC_FILES:
            raise ApiError(404, f"There is nothing at {request.path}; the playground is at / and GET /api/ lists the "
                                "API's endpoints.")
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

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

    async def _body(self, request: web.Request, action: str, body: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], Requester]:
        """The request's JSON object (or `body`, read already), checked to hold only what `action` takes, and who
        asked."""
        if body is None:
            body = _parsed(await request.read())
        _fields(body, action)
        who = request[WHO]
        try:
            name = shown_name(body.get("user"))
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        return body, self._requester(who, name)

    @property
    def _upload_bytes(self) -> int:
        """The largest picture file users may start from ([images] max_upload_mb), as the core counts it."""
        return round(self.service.settings.images.max_upload_mb * 2**20)

    def _too_large(self) -> ApiError:
        most = self.service.settings.images.max_upload_mb
        return ApiError(413, f"That picture is over {most:g} MB; send one of at most {most:g} MB.")

    async def _upload_body(self, request: web.Request, action: str) -> dict[str, Any]:
        """POST /api/imagine's or /api/describe's fields: a JSON object (a picture as base64 text in "image"), or a
        multipart form (a picture as the file part "image", bytes here); read up to what a picture may take, and no
        further."""
        if request.content_type == "multipart/form-data":
            return await self._form(request, action)
        most = self._upload_bytes
        b64 = -(-most // 3) * 4
        limit = MAX_BODY_BYTES + b64 + b64 // 19  # base64 is a third larger; `base64` breaks lines every 76
        too_large = ApiError(413, f"The request body is over {limit / 2**20:.1f} MB; a picture may be at most "
                                  f"{self.service.settings.images.max_upload_mb:g} MB (a third more in base64).")
        if (request.content_length or 0) > limit:
            raise too_large  # before reading any of it
        return _parsed(await _chunks(request.content.read, limit, too_large))

    async def _form(self, request: web.Request, action: str) -> dict[str, Any]:
        """A multipart/form-data body as the JSON object it stands for: text fields by name (numbers as numbers),
        the picture's bytes as "image"; each part read only up to its limit."""
        most = self._upload_bytes
        if (request.content_length or 0) > most + 2 * MAX_BODY_BYTES:  # the text fields, part heads and bounds
            raise self._too_large()
        body: dict[str, Any] = {}
        left = MAX_BODY_BYTES  # for the text fields together
        too_long = ApiError(413, f"The form's text fields are over {MAX_BODY_BYTES // 1024} KiB; send less.")
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "A part of the form is itself multipart; send the picture and the fields "
                                        "as parts of one form.")
                name = part.name
                if not name:
                    raise ApiError(400, 'Every part of the form needs a name (Content-Disposition: form-data; '
                                        'name="prompt").')  # fmt: skip
                _fields({name: None}, action)
                if name in body:
                    raise ApiError(400, f"{_shown(name)} is in the form twice; send each field once.")
                if name == "image":
                    body[name] = await _chunks(part.read_chunk, most, self._too_large())
                    continue
                raw = await _chunks(part.read_chunk, left, too_long)
                left -= len(raw)
                try:
                    body[name] = _form_value(name, raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise ApiError(400, f"The form field {_shown(name)} is not UTF-8 text; send UTF-8.") from None
        except (ValueError, RuntimeError, HttpProcessingError):
            raise ApiError(400, 'The multipart/form-data body could not be read; send the picture as a file part '
                                'named "image" and the other fields as text parts.') from None
        return body

    async def _picture(self, image: object) -> bytes:
        """An uploaded picture ("image": bytes from a form, base64 from JSON), checked by its content the way the
        core checks it, but off the event loop and a few at a time, and refused with 400 or 413 here (the core
        refuses a bad file with a plain Refused, which the API would answer with 403). What the core gets: the
        plain PNG the check made when it is within the limit (cheap for the core to check again), else the file."""
        data = image if isinstance(image, bytes) else _base64_picture(image)
        if not data:
            raise ApiError(400, 'The "image" file is empty; pick a picture file.')
        most, limits = self._upload_bytes, self.service.settings.images
        if len(data) > most:
            raise self._too_large()
        async with self._decoding:
            try:
                plain = await asyncio.to_thread(images.checked_upload, data, most,
                                                round(limits.max_upload_megapixels * 1e6))
            except images.NotAPicture as error:
                raise ApiError(400, str(error)) from None
        return plain if len(plain) <= most else data

    def _requester(self, who: Who, name: str = "") -> Requester:
        return Requester(self.platform, SERVER, SERVER, who.user, who.is_admin, name)

    async def _status(self, request: web.Request, job_id: str | None = None) -> JobStatus:
        """The job the URL names (or `job_id`); 404 if there is none here, 410 once deleted."""
        job_id = request.match_info["job_id"] if job_id is None else job_id
        status = await self.service.status(job_id)
        if status is None or status.job.requester.platform != self.platform:
            raise ApiError(404, f"There is no job {job_id}; start one with POST /api/imagine.")
        job = status.job
        if job.deleted:
            by = "the person who asked for it" if job.deleted_by == job.requester.user_key else "an admin"
            raise ApiError(410, f"Job {job.id} was deleted by {by}; start a new one with /imagine.")
        return status

    async def _accepted(self, handle: Handle) -> web.Response:
        self._tracker.follow(handle)
        status = await self.service.status(handle.job.id)
        position = status.position if status is not None and status.position is not None else 0
        body = {"job_id": handle.job.id, "position": position, "url": job_url(handle.job.id),
                "user": handle.job.requester.shown}  # fmt: skip
        return web.json_response(body, status=202)

    def _job_json(self, status: JobStatus) -> dict[str, Any]:
        """Everything about a job; seeds as strings (JavaScript rounds whole numbers above 2^53)."""
        job = status.job
        tracked = self._tracker.get(job.id)
        done = job.status is Status.DONE
        stored = done and job.removed_at is None and job.kind is not Kind.DESCRIBE  # a describe job keeps prompts
        preview = f"{job_url(job.id)}/preview.png?v={tracked.preview_version}" if tracked and tracked.preview else None
        return {
            "job_id": job.id,
            "kind": job.kind.value,
            "status": job.status.value,
            "user": job.requester.shown,  # the name they gave (rights go by the identity in requester.user)
            "prompt": job.prompt,
            "negative": job.options.negative,
            "count": job.options.count,
            "cfg": job.options.cfg,
            "temperature": job.options.temperature,
            "seed": str(job.seed),
            "model": job.model,  # the checkpoint as the generator loaded it: a hub id or a directory
            "model_name": model_name(job.model),
            "created_at": job.created_at,  # seconds since 1970, as GET /api/jobs?before= takes them
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "waited_s": _seconds(job.created_at, job.started_at),
            "ran_s": _seconds(job.started_at, job.finished_at),
            "made_from": made_from(job),
            "parent_id": job.parent_id,
            "parent_index": job.parent_index,
            "strength": job.strength.value if job.strength else None,
            "region": list(job.region) if job.region else None,  # x0, y0, x1, y1: the part made again
            "prompts": list(job.prompts) if job.prompts is not None else None,  # a finished describe job's answers
            "from_picture": job.source is not None,  # an image prompt: it started from a picture someone sent
            "source_url": f"{job_url(job.id)}/source.png" if job.source and job.removed_at is None else None,
            "position": status.position,
            "progress": 100 if done else tracked.percent if tracked else None,
            "error": job.error,
            "deleted": job.deleted,
            "pictures_removed": done and job.removed_at is not None,  # by retention ([bot] keep_days, max_data_gb)
            "grid_url": f"{job_url(job.id)}/grid.png" if stored else None,
            "image_urls": image_urls(job.id, job.options.count) if stored else [],
            "preview_url": preview,
            "events_url": f"{job_url(job.id)}/events",
        }

    def _file(self, status: JobStatus, name: str | None) -> web.FileResponse:
        """One stored picture of a finished job: an image by file name, or (None) its grid."""
        job = status.job
        if job.status is not Status.DONE or not job.grid_path:
            raise _no_pictures(job)
        grid = self._data_dir / job.grid_path  # a one-image job's grid is its image, stored once
        path = grid if name is None else grid.parent / name
        if not path.is_file():
            raise ApiError(410, "The images of this job are no longer stored; start a new one with /imagine.")
        return web.FileResponse(path, headers={"Cache-Control": "private, max-age=31536000, immutable"})

    def _index(self, status: JobStatus, body: dict[str, Any]) -> int:
        if status.job.kind is Kind.DESCRIBE:
            raise _no_pictures(status.job)
        count = status.job.options.count
        if "index" not in body:
            raise ApiError(400, f'Say which image in "index", a whole number from 0 to {count - 1} (U1 is 0).')
        index = body["index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ApiError(400, f'"index" must be a whole number from 0 to {count - 1} (U1 is 0); '
                                f'you gave {_shown(index)}.')
        if status.job.status is not Status.DONE:
            raise _no_pictures(status.job)
        return index

    # -- the API --

    async def imagine(self, request: web.Request) -> web.Response:
        """Queue a job from {"user", "prompt", "count"?, "cfg"?, "temperature"?, "seed"?, "negative"?}, or a typed
        "command" (its --no is the negative prompt); from a picture with "image" (base64 in JSON, or the file part
        of a multipart form) and "region" (the part made again; the bottom half by default)."""
        body, requester = await self._body(request, "imagine", await self._upload_body(request, "imagine"))
        options: dict[str, Any] = {name: _option(body, name, whole=True) for name in ("count",)}
        options |= {name: _option(body, name, whole=False) for name in ("cfg", "temperature")}
        options["seed"] = _seed(body)
        options["negative"] = _text(body, "negative", "trees, fog")
        prompt = body.get("prompt")
        if "prompt" in body and "command" in body:
            raise ApiError(400, 'Give either "prompt" or "command", not both.')
        if "command" in body:
            command = _typed(body["command"])
            if command.negative is not None and options["negative"] is not None:
                raise ApiError(400, 'Give the negative prompt either in "negative" or as --no in "command", not both.')
            prompt = command.prompt
            typed = {name: getattr(command, name) for name in (*OPTIONS, "negative")}
            options.update({name: value for name, value in typed.items() if value is not None})
        if not isinstance(prompt, str):
            raise ApiError(400, 'Describe the picture in "prompt", for example {"user": "ada", "prompt": "a red fox"}.')
        image, region = body.get("image"), _region(body.get("region"))
        if image is None and region is not None:
            raise ApiError(400, 'A "region" says which part of a picture to make again; send the picture in "image" '
                                "too.")
        try:
            checked_prompt(prompt)
            defaults = self.service.policy.defaults(requester)
            Options.checked(
                defaults.count if options["count"] is None else options["count"],
                defaults.cfg if options["cfg"] is None else options["cfg"],
                defaults.temperature if options["temperature"] is None else options["temperature"],
                options["seed"],
                options["negative"],
            )
        except Refused as error:
            raise ApiError(400, str(error)) from None
        picture = None if image is None else await self._picture(image)
        try:
            handle = await self.service.submit(requester, prompt, image=picture, region=region, **options)
        except Refused as error:
            raise refusal(error) from None
        return await self._accepted(handle)

    async def describe(self, request: web.Request) -> web.Response:
        """Queue a describe job: prompts that would draw a picture, either one sent ("image": base64 in JSON, or the
        file part of a multipart form) or image "index" (0-based) of job "job_id"; "count" of them."""
        body, requester = await self._body(request, "describe", await self._upload_body(request, "describe"))
        count = _option(body, "count", whole=True)
        if count is not None and not 1 <= count <= MOST_PROMPTS:
            raise ApiError(400, f'"count" must be a whole number from 1 to {MOST_PROMPTS} (prompts); you gave '
                                f"{_shown(count)}.")
        image, job_id = body.get("image"), body.get("job_id")
        if image is not None and job_id is not None:
            raise ApiError(400, 'Give either "image" (a picture to describe) or "job_id" and "index" (one of a job\'s '
                                "images), not both.")
        if image is None and job_id is None:
            raise ApiError(400, 'Send the picture to describe in "image" (base64 in JSON, or a file part of a '
                                'multipart form), or name one of a job\'s images, such as {"user": "ada", "job_id": '
                                '"0123456789abcdef", "index": 0}.')
        picture, index = None, None
        if image is not None:
            if "index" in body:
                raise ApiError(400, '"index" says which of a job\'s images to describe; with a picture in "image", '
                                    "send no index.")
            picture = await self._picture(image)
        else:
            if not isinstance(job_id, str) or not is_job_id(job_id):
                raise ApiError(400, '"job_id" must be a job\'s id, 16 characters 0-9 and a-f such as '
                                    f'"0123456789abcdef"; you gave {_shown(job_id)}.')
            status = await self._status(request, job_id)
            index = self._index(status, body)
            if status.job.removed_at is not None:
                raise ApiError(410, "The images of that job are no longer stored; describe another picture.")
        try:
            handle = await self.service.describe(requester, image=picture, job_id=job_id, index=index, count=count)
        except Refused as error:
            raise refusal(error) from None
        return await self._accepted(handle)

    @staticmethod
    def _remix(body: dict[str, Any], job: Job) -> dict[str, str | None]:
        """An edited "prompt" and "negative" (None keeps the job's; an empty negative drops it), checked."""
        prompt, negative = _text(body, "prompt", "a red fox"), _text(body, "negative", "trees, fog")
        try:
            if prompt is not None:
                checked_prompt(prompt)
            o = job.options
            Options.checked(o.count, o.cfg, o.temperature, None, negative)
        except Refused as error:
            raise ApiError(400, str(error)) from None
        return {"prompt": prompt, "negative": negative}

    async def reroll(self, request: web.Request) -> web.Response:
        """The same prompt and options with a new seed; remix: with an edited "prompt" and "negative". A Vary
        (Region) again: the same part of the same image, made again."""
        body, requester = await self._body(request, "reroll")
        job = (await self._status(request)).job
        if job.kind is Kind.DESCRIBE:
            raise ApiError(409, f"Job {job.id} describes a picture, so it has no prompt to make again; start a new "
                                "describe with POST /api/describe.")
        remix = self._remix(body, job)
        try:
            if job.kind is Kind.REGION and job.region is not None and job.parent_id is not None:
                # service.reroll would send the region without the image's cells, which the generator refuses
                prompt = job.prompt if remix["prompt"] is None else remix["prompt"]
                negative = (job.options.negative or "") if remix["negative"] is None else remix["negative"]
                handle = await self.service.vary_region(requester, job.parent_id, job.parent_index or 0, job.region,
                                                        prompt=prompt, negative=negative)  # fmt: skip
            else:
                handle = await self.service.reroll(requester, job.id, **remix)
            return await self._accepted(handle)
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
        """Variations of image "index" (0-based), "strength" subtle (default) or strong; or with "region", Vary
        (Region): only that part of the image made again, the rest kept. Remix: with an edited "prompt" and
        "negative"."""
        body, requester = await self._body(request, "vary")
        status = await self._status(request)
        index = self._index(status, body)
        region = _region(body.get("region"))
        if region is not None and "strength" in body:
            raise ApiError(400, 'Give either "strength" (variations: the top rows kept, the rest made again) or '
                                '"region" (Vary (Region): only that part made again), not both.')
        strength = body.get("strength", Strength.SUBTLE.value)
        if strength not in [s.value for s in Strength]:
            raise ApiError(400, f'"strength" must be "subtle" or "strong"; you gave {_shown(strength)}.')
        remix = self._remix(body, status.job)
        try:
            if region is not None:
                handle = await self.service.vary_region(requester, status.job.id, index, region, **remix)
            else:
                handle = await self.service.vary(requester, status.job.id, index, Strength(strength), **remix)
            return await self._accepted(handle)
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
        """Everything about a job: where it stands, what it was asked, when and from what it was made, its URLs."""
        return web.json_response(self._job_json(await self._status(request)))

    async def delete(self, request: web.Request) -> web.Response:
        """Delete a finished job's pictures (one's own; the admin token: anyone's); the job then answers 410."""
        if await request.read():
            raise ApiError(400, "DELETE takes no request body; send none.")
        status = await self._status(request)
        if not status.job.status.final:
            raise ApiError(409, "That job is still being made; cancel it first.")
        try:
            job = await self.service.delete(self._requester(request[WHO]), status.job.id)
        except Refused as error:
            raise refusal(error) from None
        return web.json_response(self._job_json(JobStatus(job, None)))

    async def jobs(self, request: web.Request) -> web.Response:
        """One's own jobs, newest first, a page at a time; ?everyone=1 for everyone's (admins)."""
        before, limit, everyone = _query(request)
        requester = self._requester(request[WHO])
        try:
            page = await self.service.history(requester, everyone=everyone, before=before, limit=limit)
        except Refused:
            raise ApiError(403, "Only an admin sees everyone's jobs; send the admin token "
                                "(JANUS_BOT_WEB_ADMIN_TOKEN).") from None  # fmt: skip
        shown = []
        for job in page:
            if job.deleted:
                continue  # a tombstone: nothing left to show
            status = await self.service.status(job.id) if not job.status.final else None
            shown.append(self._job_json(status or JobStatus(job, None)))
        older = None
        if len(page) == limit:  # a full page: there may be more before its last job
            older = f"/api/jobs?before={page[-1].created_at!r}&limit={limit}" + ("&everyone=1" if everyone else "")
        return web.json_response({"jobs": shown, "older_url": older})

    async def about(self, request: web.Request) -> web.Response:
        """The model (a demo's examples), the option defaults, the pictures one may start from, and who the caller
        is here."""
        who: Who = request[WHO]
        requester = self._requester(who)
        backend = self.service.backend
        demo = is_demo(backend.model)
        defaults = self.service.policy.defaults(requester)
        console = who.user == LOCAL
        return web.json_response({
            "model": {"name": model_name(backend.model), "path": backend.model, "device": backend.device,
                      "demo": demo, "draws": DEMO_DRAWS if demo else None,
                      "examples": demo_examples() if demo else []},
            "defaults": {"count": defaults.count, "cfg": defaults.cfg, "temperature": defaults.temperature},
            "uploads": {"max_mb": self.service.settings.images.max_upload_mb,
                        "max_megapixels": self.service.settings.images.max_upload_megapixels,
                        "formats": sorted(images.UPLOAD_FORMATS)},
            "you": {"identity": who.user, "console": console, "admin": self.service.policy.is_admin(requester),
                    "name": self._console_name if console else None},
        })  # fmt: skip

    async def api_root(self, request: web.Request) -> web.Response:
        """The API's endpoints, and how seeds, errors and tokens work."""
        return web.json_response(api_index())

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

    async def source(self, request: web.Request) -> web.StreamResponse:
        """The picture an image prompt started from (as the bot keeps it: a plain PNG), at any stage of the job."""
        job = (await self._status(request)).job
        if job.source is None:
            raise ApiError(404, f"Job {job.id} did not start from a picture; its own are at its image_urls.")
        path = self._data_dir / job.source
        if job.removed_at is not None or not path.is_file():
            raise ApiError(410, "The picture this job started from is no longer stored.")
        return web.FileResponse(path, headers={"Cache-Control": "private, max-age=31536000, immutable"})

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
