"""A local stand-in for Slack: the Web API methods the bot calls, file uploads, response_url posts, signed
HTTP requests to the bot and a Socket Mode websocket speaking the envelope protocol."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import ClientResponse, ClientSession, WSMsgType, web

from bot.adapters.slack import SlackAdapter
from bot.config import Settings
from bot.service import Service
from bot.store import Store
from tests.bot.helpers import FakeGenerator, running, settings

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
SIGNING_SECRET = "test-signing-secret"
TEAM = "T0TEAM"
CHANNEL = "C0GENERAL"


class SlackError(Exception):
    """A Web API method's error code."""


async def _value(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    edits: list[list[dict[str, Any]]] = field(default_factory=list)  # every version of the blocks, oldest first

    def buttons(self) -> dict[str, dict[str, Any]]:
        """The message's buttons by label."""
        return {
            element["text"]["text"]: element
            for block in self.blocks
            if block["type"] == "actions"
            for element in block["elements"]
            if element["type"] == "button"
        }

    def menus(self) -> list[dict[str, Any]]:
        """The message's select menus, in order."""
        return [e for b in self.blocks if b["type"] == "actions" for e in b["elements"] if e["type"] != "button"]

    def menu(self, placeholder: str | None = None) -> dict[str, Any]:
        """The message's select menu with this placeholder (the first if none is given)."""
        return next(m for m in self.menus() if placeholder is None or m["placeholder"]["text"] == placeholder)

    def image(self) -> str | None:
        """The file id the message shows, if any."""
        return next((b["slack_file"]["id"] for b in self.blocks if b["type"] == "image"), None)

    def payload(self) -> dict[str, Any]:
        """The bot's message as Slack puts it in a shortcut's payload: its blocks, no files (a grid is shown by id)."""
        message = {"type": "message", "subtype": "bot_message", "user": "U0BOT", "bot_id": "B0BOT", "ts": self.ts,
                   "text": self.text, "blocks": self.blocks, "team": TEAM}  # fmt: skip
        if self.thread_ts:
            message["thread_ts"] = self.thread_ts
        return message


def option(select: dict[str, Any], label: str) -> dict[str, Any]:
    """A select menu's option by its text; in a menu of option groups, by "group/option"."""
    if "option_groups" in select:
        group, _, label = label.partition("/")
        options = next(g["options"] for g in select["option_groups"] if g["label"]["text"] == group)
    else:
        options = select["options"]
    return next(o for o in options if o["text"]["text"] == label)


@dataclass
class File:
    id: str
    filename: str
    data: bytes = b""
    channel: str | None = None
    thread_ts: str | None = None
    deleted: bool = False
    user: str = "U0BOT"  # who shared it: the bot's uploads, or a person's (share)
    mimetype: str = "image/png"
    size: int | None = None  # what Slack says of its size: its length unless a test says otherwise


class FakeSlack:
    """`async with FakeSlack() as slack:` serves the Web API at `slack.api_url` and Socket Mode at `/link`.

    Every Web API call is recorded in `calls`; `fail(method, error, ...)` makes the next calls of a method
    answer with Slack errors. `admins` are the users users.info reports as workspace admins.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[str, Message] = {}  # by ts
        self.files: dict[str, File] = {}
        self.responses: list[dict[str, Any]] = []  # response_url posts
        self.views: list[dict[str, Any]] = []  # modals opened with views.open, as the bot sent them
        self.downloads: list[dict[str, Any]] = []  # GETs of files' url_private: file, authorization, bytes written
        self.admins: set[str] = set()
        self.acks: dict[str, dict[str, Any]] = {}  # Socket Mode acknowledgements by envelope id
        self.connections = 0
        self._failures: dict[str, list[dict[str, Any]]] = {}
        self._ts = itertools.count(1)
        self._triggers = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._acked = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str = "r") -> str:
        return f"{self.url}/respond/{name}"

    async def __aenter__(self) -> FakeSlack:
        server = web.Application()
        server.router.add_route("*", "/api/{method}", self._api)
        server.router.add_post("/upload/{file_id}", self._upload)
        server.router.add_get("/files-pri/{team_file}/{name}", self._download)
        server.router.add_post("/respond/{name}", self._respond)
        server.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in self._sockets:
            await ws.close()
        assert self._runner is not None
        await self._runner.cleanup()

    # -- what tests look at --

    def fail(self, method: str, error: str, *, times: int = 1, status: int = 200, **extra: Any) -> None:
        """Answer the next `times` calls of `method` with Slack error `error`."""
        self._failures.setdefault(method, []).extend([{"error": error, "status": status, **extra}] * times)

    def delete(self, message: Message) -> None:
        """Delete a message, as a user in the channel may."""
        del self.messages[message.ts]

    def heal(self) -> None:
        """Forget the failures `fail` set up that have not happened yet."""
        self._failures.clear()

    def calls_of(self, *methods: str) -> list[dict[str, Any]]:
        """The arguments of every call of these Web API methods, in order."""
        return [c.args for c in self.calls if c.method in methods]

    def called(self, method: str) -> list[dict[str, Any]]:
        """The arguments of every call of one Web API method, in order."""
        return [c.args for c in self.calls if c.method == method]

    def posted(self) -> list[Message]:
        """The channel messages the bot posted, in order."""
        return sorted(self.messages.values(), key=lambda m: float(m.ts))

    async def until(self, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until `condition()` (awaited if it is a coroutine) is truthy; its value."""
        deadline = time.monotonic() + timeout
        while not (value := await _value(condition())):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; calls so far: {[c.method for c in self.calls]}")
            await asyncio.sleep(0.01)
        return value

    async def final(self, text: str, timeout: float = 10.0) -> Message:
        """Wait for a posted message whose fallback text ends with `text` (": done", ": failed", ...)."""
        return await self.until(lambda: next((m for m in self.posted() if m.text.endswith(text)), None), timeout)

    # -- the Web API --

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        else:
            args.update(await request.post())
        for key in ("blocks", "files", "view"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or args.get("token")
        self.calls.append(Call(method, args))
        if token != (APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if failures := self._failures.get(method):
            failure = dict(failures.pop(0))
            status = failure.pop("status")
            retry_after = failure.pop("retry_after", 1)
            headers = {"Retry-After": str(retry_after)} if failure["error"] == "ratelimited" else {}
            return web.json_response({"ok": False, **failure}, status=status, headers=headers)
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        try:
            return web.json_response({"ok": True, **handler(args)})
        except SlackError as error:
            return web.json_response({"ok": False, "error": str(error)})

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"user_id": "U0BOT", "user": "janus", "team_id": TEAM, "team": "Test", "bot_id": "B0BOT"}

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.url.replace("http", "ws", 1) + "/link"}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args["user"]
        return {"user": {"id": user, "team_id": TEAM, "is_admin": user in self.admins, "is_owner": False}}

    @staticmethod
    def _check_blocks(blocks: list[dict[str, Any]]) -> None:
        """Slack's limits on what the bot's blocks hold: 25 elements in an actions block, 100 options in a menu
        (in its groups together), 75 characters in an option's text and 150 in its value."""
        for block in blocks:
            elements = block.get("elements", []) if block["type"] == "actions" else [block.get("element") or {}]
            if len(elements) > 25:
                raise SlackError("invalid_blocks")
            for element in elements:
                options = [*element.get("options", []), *(o for g in element.get("option_groups", [])
                                                         for o in g["options"])]  # fmt: skip
                if len(options) > 100 or len(element.get("option_groups", [])) > 100:
                    raise SlackError("invalid_blocks")
                if any(len(o["text"]["text"]) > 75 or len(o["value"]) > 150 for o in options):
                    raise SlackError("invalid_blocks")

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check_blocks(args.get("blocks") or [])
        ts = f"{1700000000 + next(self._ts)}.000100"
        blocks = args.get("blocks") or []
        self.messages[ts] = Message(args["channel"], ts, args.get("text", ""), blocks, args.get("thread_ts"), [blocks])
        return {"channel": args["channel"], "ts": ts}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(args["ts"])
        if message is None:
            raise SlackError("message_not_found")
        self._check_blocks(args.get("blocks") or [])
        message.text, message.blocks = args.get("text", ""), args.get("blocks") or []
        message.edits.append(message.blocks)
        return {"channel": args["channel"], "ts": args["ts"]}

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.messages.pop(args["ts"], None) is None:
            raise SlackError("message_not_found")
        return {"channel": args["channel"], "ts": args["ts"]}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        """A modal opens for the user whose click gave the trigger id (Slack's expire in 3 s; the fake's do not)."""
        view = args["view"]
        if not args.get("trigger_id"):
            raise SlackError("invalid_trigger_id")
        if len(view["title"]["text"]) > 24 or len(view.get("private_metadata", "")) > 3000:
            raise SlackError("invalid_arguments")  # Slack's limits on a modal's title and metadata
        self._check_blocks(view["blocks"])
        opened = {**view, "id": f"V{len(self.views):06d}", "team_id": TEAM, "state": {"values": {}},
                  "hash": uuid.uuid4().hex, "root_view_id": None, "app_id": "A0APP", "bot_id": "B0BOT"}  # fmt: skip
        self.views.append(opened)
        return {"view": opened}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"message_ts": f"{time.time():.6f}"}

    def _conversations_join(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": {"id": args["channel"]}}

    def _files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{len(self.files):06d}"
        self.files[file_id] = File(file_id, args["filename"])
        assert int(args["length"]) > 0
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        done = []
        for entry in args["files"]:
            file = self.files[entry["id"]]
            file.channel, file.thread_ts = args.get("channel_id"), args.get("thread_ts")
            done.append({"id": file.id, "name": file.filename, "title": entry.get("title")})
        return {"files": done}

    def file_object(self, file: File) -> dict[str, Any]:
        """A file as Slack describes it in messages and files.info: private URLs need the bot token."""
        private = f"{self.url}/files-pri/{TEAM}-{file.id}/{file.filename}"
        return {
            "id": file.id, "created": 1700000000, "timestamp": 1700000000, "name": file.filename,
            "title": file.filename, "mimetype": file.mimetype, "filetype": file.filename.rpartition(".")[2],
            "pretty_type": file.mimetype, "user": file.user, "user_team": TEAM, "editable": False,
            "size": len(file.data) if file.size is None else file.size, "mode": "hosted", "is_external": False,
            "external_type": "", "is_public": True, "public_url_shared": False, "display_as_bot": False,
            "url_private": private, "url_private_download": f"{private}?download=1",
            "permalink": f"https://test.slack.com/files/{file.user}/{file.id}/{file.filename}",
        }  # fmt: skip

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(args["file"])
        if file is None or file.deleted:
            raise SlackError("file_not_found" if file is None else "file_deleted")
        return {"file": self.file_object(file), "comments": [], "response_metadata": {"next_cursor": ""}}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """A file's url_private: its bytes for the bot token (written in pieces, counting what the reader took),
        Slack's sign-in page for anyone else, as Slack answers a request without the token."""
        file = self.files.get(request.match_info["team_file"].removeprefix(f"{TEAM}-"))
        if file is None or file.deleted:
            return web.Response(status=404, text="Not Found")
        authorization = request.headers.get("Authorization", "")
        record: dict[str, Any] = {"file": file.id, "authorization": authorization, "sent": 0}
        self.downloads.append(record)
        if authorization != f"Bearer {BOT_TOKEN}":
            sign_in = "<!DOCTYPE html><html><title>Slack</title>Sign in to Slack</html>"
            return web.Response(text=sign_in, content_type="text/html")
        response = web.StreamResponse(headers={"Content-Type": file.mimetype})
        response.content_length = len(file.data)
        await response.prepare(request)
        piece = 1 << 16
        try:
            for start in range(0, len(file.data), piece):
                chunk = file.data[start : start + piece]
                await response.write(chunk)
                record["sent"] = start + len(chunk)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):  # the reader hung up
            pass
        return response

    def share(self, filename: str, data: bytes, *, user: str = "U0BOB", thread_ts: str | None = None,
              mimetype: str = "image/png", size: int | None = None, text: str = "") -> dict[str, Any]:
        """Someone shares a file in the channel (in a thread when `thread_ts`): the message, as Slack puts it in a
        shortcut's payload."""
        file_id = f"F{len(self.files):06d}"
        self.files[file_id] = File(file_id, filename, data, CHANNEL, thread_ts, user=user, mimetype=mimetype,
                                   size=size)  # fmt: skip
        ts = f"{1700000000 + next(self._ts)}.000200"
        message = {"type": "message", "subtype": "file_share", "user": user, "ts": ts, "text": text, "upload": True,
                   "files": [self.file_object(self.files[file_id])], "team": TEAM, "display_as_bot": False}  # fmt: skip
        if thread_ts:
            message["thread_ts"] = thread_ts
        return message

    def _files_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(args["file"])
        if file is None or file.deleted:
            raise SlackError("file_not_found" if file is None else "file_deleted")
        file.deleted = True
        return {}

    async def _upload(self, request: web.Request) -> web.Response:
        self.files[request.match_info["file_id"]].data = await request.read()
        return web.Response(text="OK")

    async def _respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        return web.Response(text="ok")

    # -- requests to the bot over HTTP --

    @staticmethod
    def signed(body: str, *, secret: str = SIGNING_SECRET, at: float | None = None) -> dict[str, str]:
        """The headers Slack sends with a request body."""
        timestamp = str(int(time.time() if at is None else at))
        digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
        return {
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded",
        }

    def command(self, text: str, *, user: str = "U0ALICE", command: str = "/imagine") -> dict[str, str]:
        """A slash command's form fields."""
        return {
            "token": "legacy",
            "team_id": TEAM,
            "team_domain": "test",
            "channel_id": CHANNEL,
            "channel_name": "general",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "response_url": self.response_url(),
            "trigger_id": f"{next(self._triggers)}.2.3",  # each its own, as Slack's are: two are never one request
        }

    def click(self, message: Message, label: str, *, user: str = "U0ALICE", menu: str | None = None
              ) -> dict[str, Any]:
        """The block_actions payload of clicking a button on a message, or picking an option of its menu (the one
        whose placeholder is `menu`, else the first); in a menu of option groups, `label` is "group/option"."""
        if menu is None and label in message.buttons():
            button = message.buttons()[label]
            action = {"type": "button", "action_id": button["action_id"], "value": button["value"]}
        else:
            select = message.menu(menu)
            action = {"type": "static_select", "action_id": select["action_id"],
                      "selected_option": option(select, label)}  # fmt: skip
        thread = {"thread_ts": message.thread_ts} if message.thread_ts else {}  # a reply says which thread it is in
        return {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "test"},
            "user": {"id": user, "team_id": TEAM},
            "api_app_id": "A0APP",
            "token": "legacy",
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel, **thread},
            "channel": {"id": message.channel, "name": "general"},
            "message": {"ts": message.ts, "text": message.text, "blocks": message.blocks, **thread},
            "response_url": self.response_url(),
            "trigger_id": "1.2.4",
            "actions": [{**action, "block_id": "b", "action_ts": f"{time.time():.6f}"}],
        }

    def submission(self, view: dict[str, Any], values: dict[str, str | None], *, user: str = "U0ALICE"
                   ) -> dict[str, Any]:
        """The view_submission payload of submitting an opened modal: each input keeps its initial value unless
        `values` (by block id) changes it; an emptied input comes as null, as Slack sends it."""
        state: dict[str, dict[str, Any]] = {}
        for block in view["blocks"]:
            if block["type"] != "input":
                continue
            element = block["element"]
            if element["type"] == "static_select":  # `values` names the option by its text
                label = values.get(block["block_id"])
                chosen = option(element, label) if label else element.get("initial_option")
                state[block["block_id"]] = {element["action_id"]: {"type": "static_select",
                                                                    "selected_option": chosen}}  # fmt: skip
                continue
            value = values.get(block["block_id"], element.get("initial_value"))
            state[block["block_id"]] = {element["action_id"]: {"type": element["type"], "value": value or None}}
        return {
            "type": "view_submission",
            "team": {"id": TEAM, "domain": "test"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
            "api_app_id": "A0APP",
            "token": "legacy",
            "trigger_id": "1.2.5",
            "view": {**view, "state": {"values": state}},
            "response_urls": [],
            "is_enterprise_install": False,
        }

    def shortcut(self, message: dict[str, Any], callback_id: str, *, user: str = "U0ALICE") -> dict[str, Any]:
        """The message_action payload of someone using a message shortcut on `message` (from `share`, or a bot
        message's `payload`)."""
        return {
            "type": "message_action",
            "token": "legacy",
            "action_ts": f"{time.time():.6f}",
            "team": {"id": TEAM, "domain": "test"},
            "user": {"id": user, "username": user.lower(), "team_id": TEAM, "name": user.lower()},
            "channel": {"id": CHANNEL, "name": "general"},
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": f"{next(self._triggers)}.2.6",
            "response_url": self.response_url("shortcut"),
            "message_ts": message["ts"],
            "message": message,
        }

    @staticmethod
    def form(fields: dict[str, str]) -> str:
        return urlencode(fields)

    @staticmethod
    def interactive(payload: dict[str, Any]) -> str:
        return urlencode({"payload": json.dumps(payload)})

    # -- Socket Mode --

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0APP"}})
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            async with self._acked:
                self.acks[data["envelope_id"]] = data
                self._acked.notify_all()
        self._sockets.remove(ws)
        return ws

    async def envelope(self, kind: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send one envelope on the newest connection; the bot's acknowledgement of it."""
        envelope_id = str(uuid.uuid4())
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        async with self._acked:
            await asyncio.wait_for(self._acked.wait_for(lambda: envelope_id in self.acks), timeout)
        return self.acks[envelope_id]

    async def disconnect(self) -> None:
        """Ask the bot to reconnect, as Slack does every few hours; returns once it has."""
        before = self.connections
        await self._sockets[-1].send_json({"type": "disconnect", "reason": "refresh_requested"})
        await self.until(lambda: self.connections > before)

    async def drop(self) -> None:
        """Close the connection from Slack's side without warning; returns once the bot is back."""
        before = self.connections
        await self._sockets[-1].close()
        await self.until(lambda: self.connections > before and self._sockets)


@dataclass
class Running:
    """A service on a fake generator with the Slack adapter attached to a FakeSlack."""

    slack: FakeSlack
    service: Service
    generator: FakeGenerator
    store: Store
    adapter: SlackAdapter
    config: Settings
    http: ClientSession

    async def post(self, body: str, headers: dict[str, str] | None = None) -> ClientResponse:
        """POST a body to the bot's HTTP endpoint, signed unless headers are given."""
        assert self.adapter.port is not None
        url = f"http://127.0.0.1:{self.adapter.port}{self.config.slack.path}"
        return await self.http.post(url, data=body, headers=self.slack.signed(body) if headers is None else headers)

    async def command(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """Run a slash command over HTTP; the bot's immediate answer."""
        response = await self.post(self.slack.form(self.slack.command(text, **kwargs)))
        assert response.status == 200, await response.text()
        return await response.json() if response.content_length else {}

    async def click(self, message: Message, label: str, **kwargs: Any) -> None:
        """Click a button over HTTP."""
        response = await self.post(self.slack.interactive(self.slack.click(message, label, **kwargs)))
        assert response.status == 200, await response.text()

    async def shortcut(self, message: dict[str, Any], callback_id: str, **kwargs: Any) -> None:
        """Use a message shortcut over HTTP."""
        response = await self.post(self.slack.interactive(self.slack.shortcut(message, callback_id, **kwargs)))
        assert response.status == 200, await response.text()

    async def submit(self, view: dict[str, Any], values: dict[str, str | None], **kwargs: Any) -> dict[str, Any]:
        """Submit an opened modal over HTTP; the bot's answer (empty: the modal closes)."""
        response = await self.post(self.slack.interactive(self.slack.submission(view, values, **kwargs)))
        assert response.status == 200, await response.text()
        return await response.json() if response.content_length else {}


@contextlib.asynccontextmanager
async def running_slack(
    data_dir: Path,
    *,
    mode: str = "http",
    generator: FakeGenerator | None = None,
    slack: FakeSlack | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[Running]:
    """The bot with its Slack adapter in HTTP or Socket Mode against a FakeSlack (a fresh one unless given);
    `sections` of settings change the test defaults (a "slack" one is merged into them)."""
    async with contextlib.AsyncExitStack() as stack:
        fake_slack = slack or await stack.enter_async_context(FakeSlack())
        given = dict(sections or {})
        config = settings(
            data_dir,
            bot={"admins": ["discord:owner", "slack:U0OWNER"]},
            slack={
                "mode": mode,
                "host": "127.0.0.1",
                "port": 0,
                "api_url": fake_slack.api_url,
                "update_interval_s": 0,
                "preview_interval_s": 0,
                **given.pop("slack", {}),
            },
            **given,
        )
        adapter = SlackAdapter(config, BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET)
        service, fake, store = await stack.enter_async_context(
            running(config, generator, on_recovered=adapter.recovered, **kwargs)
        )
        http = await stack.enter_async_context(ClientSession())
        await adapter.start(service)
        stack.push_async_callback(adapter.close)
        yield Running(fake_slack, service, fake, store, adapter, config, http)
