"""The Discord adapter at the wire: real discord.py against a local Discord (gateway + REST), fake generator."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bot.adapters.discord import DiscordAdapter
from bot.app import App
from bot.service import Service
from tests.bot.adapters.fake_discord import FakeDiscord, Message, fake_discord
from tests.bot.helpers import PNG_SIZE, FakeGenerator, settings

pytestmark = pytest.mark.asyncio


@dataclass
class Bot:
    service: Service
    generator: FakeGenerator
    adapter: DiscordAdapter


@contextlib.asynccontextmanager
async def discord_bot(
    data_dir: Path, generator: FakeGenerator | None = None, **sections: dict[str, Any]
) -> AsyncIterator[Bot]:
    """The whole bot (store, service, Discord adapter) on a fake generator, connected to the fake Discord."""
    config = settings(data_dir, discord={"edit_every_s": 0}, images={"upscale_px": 64}, **sections)
    fake = generator or FakeGenerator(steps=4, step_delay=0.005)
    adapter = DiscordAdapter(config, "token", guild_ready_timeout=0.05)
    async with App(config, fake, on_recovered=adapter.recovered) as app:
        await adapter.start(app.service)
        try:
            yield Bot(app.service, fake, adapter)
        finally:
            await adapter.close()


@pytest_asyncio.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with fake_discord() as server:
        yield server


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def job_id(message: Message) -> str:
    """The job a message shows, read back from its buttons."""
    return message.custom_ids[0].split(":")[2]


async def finished(discord: FakeDiscord, message_of: Any) -> Message:
    """Wait until a message shows a final state (a grid, or no buttons and a failure or cancellation)."""

    def done() -> Message | None:
        message = message_of()
        if message is None:
            return None
        final = any(name.endswith(".png") and name != "preview.png" for name in message.files)
        return message if final or "(failed)" in message.content or "(cancelled)" in message.content else None

    return await discord.wait_for(done)


def original(interaction: Any) -> Any:
    return lambda: interaction.original


GRID_IDS = ["upscale:{0}:0", "upscale:{0}:1", "upscale:{0}:2", "upscale:{0}:3", "vary:{0}:0", "vary:{0}:1",
            "vary:{0}:2", "vary:{0}:3", "reroll:{0}", "pick:strong:{0}"]  # fmt: skip


async def test_imagine_defers_then_edits_one_message_to_a_grid_with_buttons(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path) as bot:
        assert discord.identified[0]["intents"] == 1  # guilds only: nothing privileged
        names = {c["name"]: c for c in discord.commands}
        assert set(names) == {"imagine", "imagine-admin"}
        options = {o["name"]: o for o in names["imagine"]["options"]}
        assert options["prompt"]["required"] and options["prompt"]["description"] == "What to draw"
        assert (options["count"]["min_value"], options["count"]["max_value"]) == (1, 16)
        assert (options["cfg"]["min_value"], options["cfg"]["max_value"]) == (1, 10)
        assert names["imagine"]["description"] == "Make images from a text prompt."
        assert int(names["imagine-admin"]["default_member_permissions"]) == 32  # Manage Server

        interaction = await discord.imagine(alice, "a lighthouse at dusk", seed=7)
        message = await finished(discord, original(interaction))

        assert interaction.callbacks[0]["type"] == 5  # deferred first, before any work
        assert not message.ephemeral
        job = job_id(message)
        assert message.custom_ids == [f"imagine:{i.format(job)}" for i in GRID_IDS]
        assert list(message.files) == [f"{job}-grid.png"]
        assert size(message.files[f"{job}-grid.png"]) == (2 * PNG_SIZE, 2 * PNG_SIZE)
        assert "a lighthouse at dusk" in message.content and "seed 7" in message.content
        assert f"<@{alice['id']}>" in message.content
        states = [h["content"] for h in message.history]
        assert any("generating, " in s for s in states)
        working = [h for h in message.history if "preview.png" in h["files"]]
        assert working and all(h["custom_ids"] == [f"imagine:cancel:{job}"] for h in working)
        status = await bot.service.status(job)
        assert status is not None and status.job.delivered and status.job.requester.user == alice["id"]
