"""A local Discord for wire tests: the gateway websocket and the REST endpoints the bot uses, recording what it sends.

discord.py connects to it unchanged once `Route.BASE` and the default gateway point here (see `pointed_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import mimetypes
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord
import yarl
from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
MANAGE_GUILD = 1 << 5
ATTACHMENT_IDS = 10**6  # existing attachments' ids; a new upload's id is its index among the request's files
# Interaction callback types
MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE, MODAL = 4, 5, 6, 7, 9
# Component types in modals: a text input alone in an action row (the older way), or under a label
ACTION_ROW, TEXT_INPUT, LABEL = 1, 4, 18


def _json(data: Any, status: int = 200) -> web.Response:
    """A JSON response typed exactly as Discord types it (discord.py compares the header)."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Message:
    """A message as the fake keeps it: every version of it, and its files' bytes."""

    id: int
    channel_id: int
    content: str = ""
    flags: int = 0
    components: list[dict[str, Any]] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # attachment name -> bytes
    history: list[dict[str, Any]] = field(default_factory=list)  # content, files and custom ids after each change
    deleted: bool = False
    interaction_token: str | None = None
    pings: set[str] = field(default_factory=set)  # whom Discord notified when it was posted ("everyone" too)
    author: dict[str, Any] | None = None  # who posted it: None for the bot

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def custom_ids(self) -> list[str]:
        """The custom ids of the message's buttons and menus, in order."""
        return [c["custom_id"] for row in self.components for c in row.get("components", []) if "custom_id" in c]

    def snapshot(self, uploaded: list[str]) -> None:
        self.history.append({
            "content": self.content, "files": sorted(self.files), "uploaded": uploaded, "custom_ids": self.custom_ids,
            "at": time.monotonic(),
        })  # fmt: skip


@dataclass
class Interaction:
    """One interaction the fake dispatched, and what the bot answered."""

    id: int
    token: str
    payload: dict[str, Any]
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    expired: bool = False

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot answered with (callback type 9), if it did."""
        return next((c["data"] for c in self.callbacks if c["type"] == MODAL), None)

    def inputs(self) -> dict[str, dict[str, Any]]:
        """The text inputs of the modal, by custom id, as the bot sent them (label, value, required...)."""
        assert self.modal is not None, "the bot answered without a modal"
        found: dict[str, dict[str, Any]] = {}
        for component in self.modal["components"]:
            inner = component.get("components") or [component.get("component") or {}]
            for item in inner:
                if item.get("type") == TEXT_INPUT:
                    found[item["custom_id"]] = {**item, "label": component.get("label", item.get("label"))}
        return found


class FakeDiscord:
    """The gateway (HELLO, IDENTIFY, READY, heartbeats, GUILD_CREATE, INTERACTION_CREATE) and the REST API."""

    def __init__(self, heartbeat_interval_ms: int = 41250) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._ids = itertools.count(1)
        self.users: dict[str, dict[str, Any]] = {}
        self.app_id = self.snowflake()
        self.bot_user = self.user("janus", bot=True)
        self.guild_id = self.snowflake()
        self.art_channel_id = self.snowflake()  # a second channel of the server (before #general: the DM is +1)
        self.channel_id = self.snowflake()
        self.commands: list[dict[str, Any]] = []
        self.command_syncs = 0
        self.guild_commands: dict[str, list[dict[str, Any]]] = {}  # guild id -> its own commands
        self.messages: dict[int, Message] = {}
        self.interactions: dict[str, Interaction] = {}
        self.identified: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.requests: list[str] = []
        self.forbidden: set[int] = set()  # channels where the bot may not post (403, Missing Permissions)
        self.cdn: dict[str, bytes] = {}  # attachments users sent with commands, by id
        self.cdn_sent: dict[str, int] = {}  # how many bytes of each the CDN wrote before the reader stopped
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- life cycle --

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        api = "/api/v10"
        app.add_routes([
            web.get("/gateway", self._gateway),
            web.get(f"{api}/gateway", self._gateway_url),
            web.get(f"{api}/gateway/bot", self._gateway_url),
            web.get(f"{api}/users/@me", self._me),
            web.get(f"{api}/oauth2/applications/@me", self._application),
            web.get(f"{api}/applications/@me", self._application),
            web.put(f"{api}/applications/{{app}}/commands", self._sync),
            web.get(f"{api}/applications/{{app}}/commands", self._commands),
            web.put(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self._sync_guild),
            web.post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback),
            web.get(f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._webhook_get),
            web.patch(f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._webhook_edit),
            web.delete(f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._webhook_delete),
            web.post(f"{api}/webhooks/{{app}}/{{token}}", self._followup),
            web.post(f"{api}/channels/{{channel}}/messages", self._channel_send),
            web.post(f"{api}/users/@me/channels", self._open_dm),
            web.patch(f"{api}/channels/{{channel}}/messages/{{message}}", self._channel_edit),
            web.delete(f"{api}/channels/{{channel}}/messages/{{message}}", self._channel_delete),
            web.get("/ephemeral-attachments/{channel}/{id}/{name}", self._attachment_file),
            web.get("/files/{message}/{name}", self._message_file),
        ])  # fmt: skip
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for ws in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @contextlib.contextmanager
    def pointed_at(self) -> Iterator[None]:
        """Point discord.py's REST routes and gateway here while inside the block."""
        base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = f"{self.url}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"{self.url.replace('http', 'ws')}/gateway")
        try:
            yield
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway

    # -- ids and payloads --

    def snowflake(self, at: float | None = None) -> int:
        ms = int((time.time() if at is None else at) * 1000)
        return ((ms - DISCORD_EPOCH_MS) << 22) | next(self._ids)

    def user(self, name: str, *, bot: bool = False) -> dict[str, Any]:
        """A user payload with a fresh id."""
        user = {"id": str(self.snowflake()), "username": name, "discriminator": "0", "global_name": name,
                "avatar": None, "bot": bot, "public_flags": 0}  # fmt: skip
        self.users[user["id"]] = user
        return user

    def _guild(self) -> dict[str, Any]:
        gid = str(self.guild_id)
        return {
            "id": gid, "name": "Test server", "icon": None, "owner_id": str(self.snowflake()), "unavailable": False,
            "roles": [{"id": gid, "name": "@everyone", "permissions": "2048", "position": 0, "color": 0,
                       "hoist": False, "managed": False, "mentionable": False, "flags": 0}],
            "channels": [{"id": str(channel), "type": 0, "name": name, "position": 0,
                          "permission_overwrites": [], "nsfw": False, "parent_id": None}
                         for channel, name in ((self.channel_id, "general"), (self.art_channel_id, "art"))],
            "members": [], "emojis": [], "stickers": [], "features": [], "member_count": 2, "large": False,
            "joined_at": _now(), "voice_states": [], "presences": [], "threads": [], "stage_instances": [],
            "guild_scheduled_events": [], "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
            "system_channel_flags": 0, "premium_tier": 0, "preferred_locale": "en-US", "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }  # fmt: skip

    def message_json(self, message: Message) -> dict[str, Any]:
        return {
            "id": str(message.id), "channel_id": str(message.channel_id), "type": 0, "content": message.content,
            "author": message.author or self.bot_user, "attachments": [
                {"id": str(ATTACHMENT_IDS + i), "filename": name, "size": len(data),
                 "url": f"{self.url}/files/{message.id}/{name}", "proxy_url": f"{self.url}/files/{message.id}/{name}",
                 **({"content_type": kind} if (kind := mimetypes.guess_type(name)[0]) else {})}
                for i, (name, data) in enumerate(message.files.items())
            ],
            "embeds": message.embeds, "mentions": [], "mention_roles": [], "mention_everyone": False, "pinned": False,
            "tts": False, "timestamp": _now(), "edited_timestamp": None, "flags": message.flags,
            "components": message.components, "webhook_id": str(self.app_id) if message.interaction_token else None,
            "application_id": str(self.app_id),
        }  # fmt: skip

    # -- the gateway --

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
        async for frame in ws:
            payload = json.loads(frame.data)
            if payload["op"] == 1:
                self.heartbeats += 1
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif payload["op"] == 2:
                if payload["d"]["token"] != "token":
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                self.identified.append(payload["d"])
                ready = {
                    "v": 10, "user": self.bot_user, "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                    "session_id": "session", "resume_gateway_url": f"{self.url.replace('http', 'ws')}/gateway",
                    "application": {"id": str(self.app_id), "flags": 0}, "shard": [0, 1],
                }  # fmt: skip
                await self._dispatch(ws, "READY", ready)
                await self._dispatch(ws, "GUILD_CREATE", self._guild())
        self._sockets.remove(ws)
        return ws

    async def _dispatch(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        await ws.send_json({"op": 0, "t": event, "s": next(self._seq), "d": data})

    async def _send(self, event: str, data: dict[str, Any]) -> None:
        assert self._sockets, "the bot is not connected to the gateway"
        await self._dispatch(self._sockets[-1], event, data)

    # -- interactions the tests send --

    def _where(self, user: dict[str, Any], *, dm: bool, permissions: int, channel_id: int | None = None
               ) -> dict[str, Any]:
        if dm:
            channel = str(self.channel_id + 1)
            return {
                "channel_id": channel, "channel": {"id": channel, "type": 1, "recipients": [user]}, "user": user,
                "context": 1, "authorizing_integration_owners": {"0": str(self.guild_id)},
            }  # fmt: skip
        channel = str(channel_id or self.channel_id)
        return {
            "guild_id": str(self.guild_id), "channel_id": channel,
            "channel": {"id": channel, "type": 0, "guild_id": str(self.guild_id),
                        "name": "general" if channel == str(self.channel_id) else "art", "position": 0,
                        "permission_overwrites": [], "nsfw": False, "parent_id": None},
            "member": {"user": user, "roles": [], "joined_at": _now(), "deaf": False, "mute": False, "flags": 0,
                       "permissions": str(permissions), "nick": None, "avatar": None, "pending": False},
            "context": 0, "authorizing_integration_owners": {"0": str(self.guild_id)},
        }  # fmt: skip

    async def _interact(
        self,
        kind: int,
        data: dict[str, Any],
        user: dict[str, Any],
        *,
        dm: bool,
        permissions: int,
        message: dict[str, Any] | None = None,
        channel_id: int | None = None,
    ) -> Interaction:
        iid = self.snowflake()
        token = f"token-{iid}"
        payload = {
            "id": str(iid), "application_id": str(self.app_id), "type": kind, "token": token, "version": 1,
            "data": data, "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "app_permissions": str(1 << 11 | 1 << 15), "attachment_size_limit": 25 << 20,
            **self._where(user, dm=dm, permissions=permissions, channel_id=channel_id),
        }  # fmt: skip
        if message is not None:
            payload["message"] = message
        interaction = self.interactions[token] = Interaction(iid, token, payload)
        await self._send("INTERACTION_CREATE", payload)
        return interaction

    async def command(
        self,
        name: str,
        user: dict[str, Any],
        *options: dict[str, Any],
        dm: bool = False,
        admin: bool = False,
        resolved: dict[str, Any] | None = None,
        channel_id: int | None = None,
    ) -> Interaction:
        """Someone uses a slash command (in #general unless `channel_id` or `dm`); `options` as Discord sends them
        ({"name", "type", "value"})."""
        known = self.commands if dm else [*self.guild_commands.get(str(self.guild_id), []), *self.commands]
        command = next(c for c in known if c["name"] == name)  # the server's own copy first, as Discord shows
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": list(options)}
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        if resolved:
            data["resolved"] = resolved
        permissions = 2048 | (MANAGE_GUILD if admin else 0)
        return await self._interact(2, data, user, dm=dm, permissions=permissions, channel_id=channel_id)

    async def imagine(self, user: dict[str, Any], prompt: str, dm: bool = False, channel_id: int | None = None,
                      **options: Any) -> Interaction:
        """Someone types /imagine; `image` is an attachment from `attachment`, sent as Discord sends one: the
        option holds its id, `resolved.attachments` the attachment."""
        kinds = {"count": 4, "seed": 3, "cfg": 10, "temperature": 10, "negative": 3, "region": 3, "image": 11}
        given = [{"name": "prompt", "type": 3, "value": prompt}]
        resolved: dict[str, Any] = {}
        for key, value in options.items():
            if key == "image":
                resolved.setdefault("attachments", {})[value["id"]] = value
                value = value["id"]
            given.append({"name": key, "type": kinds[key], "value": value})
        return await self.command("imagine", user, *given, dm=dm, channel_id=channel_id, resolved=resolved)

    async def describe(self, user: dict[str, Any], image: dict[str, Any], dm: bool = False, **options: Any
                       ) -> Interaction:
        """Someone types /describe with `image`, an attachment from `attachment` (and `count`, when given)."""
        given = [{"name": "image", "type": 11, "value": image["id"]}]
        given += [{"name": key, "type": 4, "value": value} for key, value in options.items()]
        return await self.command("describe", user, *given, dm=dm, resolved={"attachments": {image["id"]: image}})

    async def menu(self, name: str, user: dict[str, Any], message: Message, *, admin: bool = False) -> Interaction:
        """Someone picks Apps -> `name` on a message: a message command (type 2, data.type 3) naming it in
        target_id, with the message as Discord sends it in resolved.messages."""
        dm = message.channel_id == self.channel_id + 1
        known = self.commands if dm else [*self.guild_commands.get(str(self.guild_id), []), *self.commands]
        command = next(c for c in known if c["name"] == name and c.get("type") == 3)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 3, "target_id": str(message.id),
                                "resolved": {"messages": {str(message.id): self.message_json(message)}}}  # fmt: skip
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        permissions = 2048 | (MANAGE_GUILD if admin else 0)
        return await self._interact(2, data, user, dm=dm, permissions=permissions, channel_id=message.channel_id)

    def post(self, user: dict[str, Any], content: str = "", *, files: dict[str, bytes] | None = None,
             embeds: list[dict[str, Any]] | None = None) -> Message:
        """A message someone posted in #general (the bot, with no message intents, sees it only through a menu);
        its files are served where its attachments' URLs point."""
        message = self._new_message(self.channel_id)
        message.author, message.content = user, content
        message.files, message.embeds = dict(files or {}), list(embeds or [])
        return message

    def attachment(self, filename: str, data: bytes, *, content_type: str | None = "image/png",
                   size: int | None = None) -> dict[str, Any]:
        """A file a user attaches to a command, kept on the CDN; `size` what Discord says of it (its length unless
        given: a test can make the CDN send more than that)."""
        attachment_id = str(self.snowflake())
        self.cdn[attachment_id] = data
        url = f"{self.url}/ephemeral-attachments/{self.channel_id}/{attachment_id}/{filename}?ex=1&is=1&hm=abc"
        attachment = {"id": attachment_id, "filename": filename, "size": len(data) if size is None else size,
                      "url": url, "proxy_url": url.replace("/ephemeral", "/media/ephemeral"), "ephemeral": True}
        if content_type is not None:
            attachment["content_type"] = content_type
        return attachment

    async def admin(self, by: dict[str, Any], *path: str, admin: bool = True, **options: Any) -> Interaction:
        """Someone uses /imagine-admin <path...> with string, boolean or user options."""
        given: list[dict[str, Any]] = []
        resolved: dict[str, Any] = {"users": {}}
        for key, value in options.items():
            if isinstance(value, dict):  # a user
                given.append({"name": key, "type": 6, "value": value["id"]})
                resolved["users"][value["id"]] = value
            elif isinstance(value, bool):
                given.append({"name": key, "type": 5, "value": value})
            elif isinstance(value, int):
                given.append({"name": key, "type": 4, "value": value})
            else:
                given.append({"name": key, "type": 3, "value": value})
        for depth, part in reversed(list(enumerate(path))):
            given = [{"name": part, "type": 1 if depth == len(path) - 1 else 2, "options": given}]
        return await self.command("imagine-admin", by, *given, admin=admin, resolved=resolved)

    async def press(
        self, message: Message, custom_id: str, user: dict[str, Any], *, values: list[str] | None = None,
        admin: bool = False,
    ) -> Interaction:
        """Someone presses a button (or picks from a menu when `values` is given) on a message; `admin`: someone
        with Manage Server."""
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": 2 if values is None else 3}
        if values is not None:
            data["values"] = values
        dm = message.channel_id == self.channel_id + 1
        permissions = 2048 | (MANAGE_GUILD if admin else 0)
        return await self._interact(3, data, user, dm=dm, permissions=permissions, message=self.message_json(message),
                                    channel_id=message.channel_id)

    async def submit(self, opened: Interaction, user: dict[str, Any], values: dict[str, str]) -> Interaction:
        """Someone fills in and submits the modal the bot opened on `opened`: a MODAL_SUBMIT interaction whose
        components mirror the modal's (labels or action rows), each text input with its value."""
        modal = opened.modal
        assert modal is not None, "the bot answered without a modal"

        def filled(item: dict[str, Any]) -> dict[str, Any]:
            value = values.get(item["custom_id"], item.get("value") or "")
            return {"type": TEXT_INPUT, "id": item.get("id", 0), "custom_id": item["custom_id"], "value": value}

        components = []
        for component in modal["components"]:
            if component["type"] == LABEL:
                components.append({"type": LABEL, "id": component.get("id", 0),
                                   "component": filled(component["component"])})  # fmt: skip
            else:
                components.append({"type": ACTION_ROW, "components": [filled(c) for c in component["components"]]})
        data = {"custom_id": modal["custom_id"], "components": components}
        where = opened.payload
        dm = "guild_id" not in where
        permissions = int(where["member"]["permissions"]) if not dm else 2048
        return await self._interact(5, data, user, dm=dm, permissions=permissions, message=where.get("message"),
                                    channel_id=int(where["channel_id"]))

    async def wait_for(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll until `check()` is truthy; its value."""
        deadline = time.monotonic() + timeout
        while not (result := check()):
            assert time.monotonic() < deadline, "timed out waiting for the bot"
            await asyncio.sleep(0.01)
        return result

    def old_message(self, *custom_ids: str) -> Message:
        """A message of the bot's with these buttons, as if posted long ago (its job may be gone)."""
        message = self._new_message(self.channel_id)
        buttons = [{"type": 2, "style": 2, "label": "?", "custom_id": custom_id} for custom_id in custom_ids]
        message.components = [{"type": 1, "components": buttons}]
        return message

    def channel_messages(self) -> list[Message]:
        """Messages the bot posted in channels itself (not through interactions)."""
        return [m for m in self.messages.values() if m.interaction_token is None and m.author is None and not m.deleted]

    # -- REST --

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        # Webhook and interaction callback routes carry their token in the path; the rest need the bot's.
        token_in_path = "/webhooks/" in request.path or "/interactions/" in request.path
        if (
            request.path.startswith("/api")
            and not token_in_path
            and request.headers.get("Authorization", "") != "Bot token"
        ):
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        return await handler(request)

    async def _gateway_url(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        url = f"{self.url.replace('http', 'ws')}/gateway"
        return _json({"url": url, "shards": 1, "session_start_limit": limit})

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot_user)

    async def _application(self, request: web.Request) -> web.Response:
        return _json({
            "id": str(self.app_id), "name": "janus", "icon": None, "description": "", "bot_public": True,
            "bot_require_code_grant": False, "owner": self.user("operator"), "team": None, "verify_key": "k",
            "flags": 0, "summary": "", "bot": self.bot_user,
        })  # fmt: skip

    async def _sync(self, request: web.Request) -> web.Response:
        self.command_syncs += 1
        self.commands = []
        for command in await request.json():  # a menu is sent without a description; Discord answers with ""
            self.commands.append({"description": "", **command, "id": str(self.snowflake()),
                                  "application_id": str(self.app_id), "version": str(self.snowflake())})  # fmt: skip
        return _json(self.commands)

    async def _sync_guild(self, request: web.Request) -> web.Response:
        commands = [{"description": "", **command, "id": str(self.snowflake()), "application_id": str(self.app_id),
                     "guild_id": request.match_info["guild"], "version": str(self.snowflake())}
                    for command in await request.json()]  # fmt: skip
        self.guild_commands[request.match_info["guild"]] = commands
        return _json(commands)

    async def _commands(self, request: web.Request) -> web.Response:
        return _json(self.commands)

    async def _body(self, request: web.Request) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        """The JSON payload and the uploaded files of a JSON or multipart request."""
        if not request.content_type.startswith("multipart/"):
            return (await request.json() if request.can_read_body else {}), []
        payload: dict[str, Any] = {}
        files: list[tuple[str, bytes]] = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":  # type: ignore[union-attr]
                payload = json.loads(await part.text())  # type: ignore[union-attr]
            else:
                files.append((part.filename or "", bytes(await part.read())))  # type: ignore[union-attr]
        return payload, files

    @staticmethod
    def _check_components(components: list[dict[str, Any]]) -> None:
        """Discord's limits on a message's components (a 400, Invalid Form Body, as Discord answers): 5 action
        rows, each 5 buttons or one select menu of at most 25 options; custom ids and labels of 100 characters."""
        problems = len(components) > 5
        for row in components:
            items = row.get("components", [])
            selects = [c for c in items if c["type"] == 3]
            problems |= len(items) > 5 or (bool(selects) and len(items) > 1)
            problems |= any(len(c.get("custom_id", "")) > 100 or len(c.get("label") or "") > 80 for c in items)
            for select in selects:
                options = select.get("options", [])
                problems |= not 1 <= len(options) <= 25
                problems |= any(len(o["label"]) > 100 or len(o["value"]) > 100 for o in options)
        if problems:
            raise web.HTTPBadRequest(text=json.dumps({"message": "Invalid Form Body", "code": 50035}),
                                     content_type="application/json")  # fmt: skip

    def _apply(self, message: Message, payload: dict[str, Any], files: list[tuple[str, bytes]]) -> None:
        self._check_components(payload.get("components") or [])
        if "content" in payload:
            message.content = payload["content"] or ""
        if "components" in payload:
            message.components = payload["components"] or []
        if "embeds" in payload:
            message.embeds = payload["embeds"] or []
        if "flags" in payload and payload["flags"] is not None:
            message.flags = payload["flags"]
        message.flags &= ~LOADING
        if "attachments" in payload:  # the attachments the message keeps: existing ones by id, new ones by index
            old = list(message.files.items())
            kept: dict[str, bytes] = {}
            for attachment in payload["attachments"] or []:
                index = int(attachment["id"])
                if index >= ATTACHMENT_IDS:
                    name, data = old[index - ATTACHMENT_IDS]
                    kept[name] = data
                else:
                    name, data = files[index]
                    kept[attachment.get("filename") or name] = data
            message.files = kept
        else:
            message.files.update(dict(files))
        message.snapshot([name for name, _ in files])

    def _new_message(self, channel_id: int, token: str | None = None) -> Message:
        message = Message(self.snowflake(), channel_id, interaction_token=token)
        self.messages[message.id] = message
        return message

    def _interaction(self, token: str) -> Interaction | None:
        interaction = self.interactions.get(token)
        return None if interaction is None or interaction.expired else interaction

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = self._interaction(request.match_info["token"])
        if interaction is None or interaction.callbacks:
            return _json({"message": "Interaction has already been acknowledged.", "code": 40060}, 400)
        body, files = await self._body(request)
        interaction.callbacks.append(body)
        kind, data = body["type"], body.get("data") or {}
        channel = int(interaction.payload["channel_id"])
        resource: dict[str, Any] | None = None
        if kind in (MESSAGE, DEFERRED_MESSAGE):
            message = interaction.original = self._new_message(channel, interaction.token)
            message.flags = (data.get("flags") or 0) | (LOADING if kind == DEFERRED_MESSAGE else 0)
            self._apply(message, {k: v for k, v in data.items() if k != "flags"}, files)
            if kind == DEFERRED_MESSAGE:
                message.flags |= LOADING
            resource = {"type": kind, "message": self.message_json(message)}
        elif kind in (DEFERRED_UPDATE, UPDATE) and "message" in interaction.payload:
            # A component's interaction: its original response is the message the component is on.
            message = interaction.original = self.messages[int(interaction.payload["message"]["id"])]
            if kind == UPDATE:
                self._apply(message, data, files)
        reply: dict[str, Any] = {"interaction": {
            "id": str(interaction.id), "type": interaction.payload["type"],
            "response_message_loading": kind == DEFERRED_MESSAGE,
            "response_message_ephemeral": bool((data.get("flags") or 0) & EPHEMERAL),
        }}  # fmt: skip
        if interaction.original is not None:
            reply["interaction"]["response_message_id"] = str(interaction.original.id)
        if resource:
            reply["resource"] = resource
        return _json(reply)

    def _webhook_message(self, request: web.Request) -> Message | web.Response:
        interaction = self._interaction(request.match_info["token"])
        if interaction is None:
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        target = request.match_info["message"]
        if target == "@original":
            message = interaction.original
        else:
            message = next((m for m in interaction.followups if str(m.id) == target), None)
        if message is None or message.deleted:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return message

    async def _webhook_get(self, request: web.Request) -> web.Response:
        message = self._webhook_message(request)
        return message if isinstance(message, web.Response) else _json(self.message_json(message))

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        message = self._webhook_message(request)
        if isinstance(message, web.Response):
            return message
        self._apply(message, *await self._body(request))
        return _json(self.message_json(message))

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        message = self._webhook_message(request)
        if isinstance(message, web.Response):
            return message
        message.deleted = True
        return web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = self._interaction(request.match_info["token"])
        if interaction is None:
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        payload, files = await self._body(request)
        loading = interaction.original
        if loading is not None and not loading.deleted and loading.flags & LOADING:
            # As Discord does: the first followup after a deferral fills in the "thinking…" message, whose
            # flags (ephemeral or not) were fixed by the deferral.
            self._apply(loading, {k: v for k, v in payload.items() if k != "flags"}, files)
            interaction.followups.append(loading)
            return _json(self.message_json(loading))
        message = self._new_message(int(interaction.payload["channel_id"]), interaction.token)
        self._apply(message, payload, files)
        interaction.followups.append(message)
        return _json(self.message_json(message))

    async def _channel_send(self, request: web.Request) -> web.Response:
        if int(request.match_info["channel"]) in self.forbidden:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        message = self._new_message(int(request.match_info["channel"]))
        payload, files = await self._body(request)
        self._apply(message, payload, files)
        message.pings = pings(payload)
        return _json(self.message_json(message))

    async def _open_dm(self, request: web.Request) -> web.Response:
        """The DM channel with a user: the channel id after the server's channel, as interactions in DMs have."""
        user = self.users[str((await request.json())["recipient_id"])]
        return _json({"id": str(self.channel_id + 1), "type": 1, "last_message_id": None, "recipients": [user]})

    async def _channel_delete(self, request: web.Request) -> web.Response:
        message = self.messages.get(int(request.match_info["message"]))
        if message is None or message.deleted:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        message.deleted = True
        return web.Response(status=204)

    async def _attachment_file(self, request: web.Request) -> web.StreamResponse:
        """The CDN: an attachment's bytes, written in pieces, counting what the reader took before it stopped."""
        data = self.cdn.get(request.match_info["id"])
        if data is None:
            return web.Response(status=404, text="Not Found")
        attachment_id = request.match_info["id"]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(data)
        await response.prepare(request)
        self.cdn_sent[attachment_id] = 0
        piece = 1 << 16
        try:
            for start in range(0, len(data), piece):
                await response.write(data[start : start + piece])
                self.cdn_sent[attachment_id] = start + len(data[start : start + piece])
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):  # the reader hung up
            pass
        return response

    async def _message_file(self, request: web.Request) -> web.Response:
        """The CDN: a posted message's attachment."""
        message = self.messages.get(int(request.match_info["message"]))
        data = None if message is None or message.deleted else message.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="application/octet-stream")

    def dm_messages(self) -> list[Message]:
        """Messages the bot posted in the DM channel of its own accord."""
        return [m for m in self.channel_messages() if m.channel_id == self.channel_id + 1]

    async def _channel_edit(self, request: web.Request) -> web.Response:
        message = self.messages.get(int(request.match_info["message"]))
        if message is None or message.deleted:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        self._apply(message, *await self._body(request))
        return _json(self.message_json(message))


def pings(payload: dict[str, Any]) -> set[str]:
    """Whom Discord notifies for a new message: the mentions in its content that allowed_mentions lets through."""
    content = payload.get("content") or ""
    mentioned = set(re.findall(r"<@!?(\d+)>", content))
    everyone = {"everyone"} if re.search(r"@(everyone|here)\b", content) else set()
    allowed = payload.get("allowed_mentions")
    if allowed is None:
        return mentioned | everyone
    parse = set(allowed.get("parse", []))
    users = mentioned if "users" in parse else mentioned & {str(u) for u in allowed.get("users", [])}
    return users | (everyone if "everyone" in parse else set())


@contextlib.asynccontextmanager
async def fake_discord(heartbeat_interval_ms: int = 41250) -> AsyncIterator[FakeDiscord]:
    """A started fake Discord that discord.py talks to while inside the block."""
    server = FakeDiscord(heartbeat_interval_ms)
    await server.start()
    try:
        with server.pointed_at():
            yield server
    finally:
        await server.close()
