"""The Discord adapter at the wire: real discord.py against a local Discord (gateway + REST), fake generator."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from discord.http import Route
from PIL import Image

from bot.adapters import PlatformUnreachable, configured_adapters
from bot.adapters.discord import DiscordAdapter
from bot.app import App
from bot.config import ConfigError, Secrets, Settings
from bot.generator import Generator
from bot.jobs import Job, Kind, Status, Strength
from bot.local_queue import LocalQueue
from bot.service import Service
from tests.bot.adapters.fake_discord import EPHEMERAL, FakeDiscord, Interaction, Message, fake_discord
from tests.bot.helpers import OWNER, PNG_SIZE, FakeGenerator, free_port, paced_generator, settings

pytestmark = pytest.mark.asyncio


@dataclass
class Bot:
    service: Service
    generator: FakeGenerator
    adapter: DiscordAdapter


def bot_settings(data_dir: Path, **sections: dict[str, Any]) -> Settings:
    """Test settings with every progress edit shown at once and small upscales."""
    return settings(data_dir, **{"discord": {"edit_every_s": 0}, "images": {"upscale_px": 64}, **sections})


@contextlib.asynccontextmanager
async def connected(config: Settings, generator: Generator | None) -> AsyncIterator[tuple[Service, DiscordAdapter]]:
    """The whole bot (store, service, Discord adapter) connected to the fake Discord; without a generator it
    runs the generator process of the configured model."""
    adapter = DiscordAdapter(config, "token", guild_ready_timeout=0.05)
    queue = LocalQueue(generator) if generator is not None else None
    async with App(config, queue, on_recovered=adapter.recovered) as app:
        await adapter.start(app.service)
        try:
            yield app.service, adapter
        finally:
            await adapter.close()


@contextlib.asynccontextmanager
async def discord_bot(
    data_dir: Path, generator: FakeGenerator | None = None, **sections: dict[str, Any]
) -> AsyncIterator[Bot]:
    """The whole bot on a fake generator."""
    fake = generator or FakeGenerator(steps=4, step_delay=0.005)
    async with connected(bot_settings(data_dir, **sections), fake) as (service, adapter):
        yield Bot(service, fake, adapter)


@pytest_asyncio.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with fake_discord(heartbeat_interval_ms=100) as server:  # heartbeats within every test
        yield server


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def job_id(message: Message) -> str:
    """The job a message shows, read back from its buttons."""
    return message.custom_ids[0].split(":")[2]


def is_final(message: Message) -> bool:
    """Whether a job's message shows how it ended: a grid or image, a failure or a cancellation."""
    result = any(name.endswith(".png") and name != "preview.png" for name in message.files)
    return result or "(failed)" in message.content or "(cancelled)" in message.content


async def finished(discord: FakeDiscord, message_of: Callable[[], Message | None], timeout: float = 10) -> Message:
    """Wait until a message shows how its job ended."""
    return await discord.wait_for(
        lambda: (message := message_of()) is not None and is_final(message) and message, timeout
    )


async def delivered(service: Service, job: str) -> Job:
    """Wait until the adapter has marked a job delivered (just after its final message is shown)."""

    async def check() -> Job | None:
        status = await service.status(job)
        return status.job if status is not None and status.job.delivered else None

    deadline = asyncio.get_running_loop().time() + 10
    while (found := await check()) is None:
        assert asyncio.get_running_loop().time() < deadline, f"job {job} was never marked delivered"
        await asyncio.sleep(0.01)
    return found


async def note(discord: FakeDiscord, interaction: Interaction) -> Message:
    """The first followup message the bot sent on an interaction (refusals)."""
    return await discord.wait_for(lambda: interaction.followups and interaction.followups[0])


async def shown(discord: FakeDiscord, interaction: Interaction, check: Callable[[Message], bool] = bool) -> Message:
    """The interaction's own message once it says something (and passes `check`)."""
    return await discord.wait_for(
        lambda: (
            interaction.original
            and interaction.original.content
            and check(interaction.original)
            and interaction.original
        )
    )


def original(interaction: Interaction) -> Callable[[], Message | None]:
    """The interaction's own message as it is at each look."""
    return lambda: interaction.original


GRID_IDS = ["upscale:{0}:0", "upscale:{0}:1", "upscale:{0}:2", "upscale:{0}:3", "vary:{0}:0", "vary:{0}:1",
            "vary:{0}:2", "vary:{0}:3", "reroll:{0}", "remix:{0}", "info:{0}", "delete:{0}",
            "pick:strong:{0}", "pick:region:{0}"]  # fmt: skip


async def test_imagine_defers_then_edits_one_message_to_a_grid_with_buttons(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path) as bot:
        assert discord.identified[0]["intents"] == 1  # guilds only: nothing privileged
        assert bot.adapter.client.get_guild(discord.guild_id) is not None  # from GUILD_CREATE
        names = {c["name"]: c for c in discord.commands}
        assert set(names) == {"imagine", "describe", "imagine-admin", "Describe"}  # the last: a message menu
        options = {o["name"]: o for o in names["imagine"]["options"]}
        assert options["prompt"]["required"] and options["prompt"]["description"] == "What to draw"
        assert (options["count"]["min_value"], options["count"]["max_value"]) == (1, 16)
        assert (options["cfg"]["min_value"], options["cfg"]["max_value"]) == (1, 10)
        assert (options["seed"]["type"], options["seed"]["required"]) == (3, False)
        assert names["imagine"]["description"] == "Make images from a text prompt."
        assert int(names["imagine-admin"]["default_member_permissions"]) == 32  # Manage Server

        interaction = await discord.imagine(alice, "a lighthouse at dusk", seed="7")
        message = await finished(discord, original(interaction))

        assert interaction.callbacks[0]["type"] == 5  # deferred first, before any work
        assert not message.ephemeral
        job = job_id(message)
        assert message.custom_ids == [f"imagine:{i.format(job)}" for i in GRID_IDS]
        assert list(message.files) == [f"{job}-grid.png"]
        assert size(message.files[f"{job}-grid.png"]) == (2 * PNG_SIZE + 2, 2 * PNG_SIZE + 2)  # a 2 px gutter
        assert "a lighthouse at dusk" in message.content and "seed 7" in message.content
        assert f"<@{alice['id']}>" in message.content
        states = [h["content"] for h in message.history]
        assert any("generating, " in s for s in states)
        working = [h for h in message.history if "preview.png" in h["files"]]
        assert working and all(h["custom_ids"] == [f"imagine:cancel:{job}"] for h in working)
        uploads = [h["uploaded"] for h in message.history if h["uploaded"]]
        assert 1 <= uploads.count(["preview.png"]) <= 2  # the fake makes two previews; edits between upload none
        assert (await delivered(bot.service, job)).requester.user == alice["id"]
        await discord.wait_for(lambda: discord.heartbeats >= 2)
        assert bot.adapter.client.latency < 1  # each heartbeat was acknowledged


async def test_guild_ids_register_the_commands_in_those_servers_only_and_no_global_ones(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path, discord={"guild_ids": [discord.guild_id]}):
        named = [c["name"] for c in discord.guild_commands[str(discord.guild_id)]]
        assert named == ["imagine", "describe", "imagine-admin", "Describe"]
        assert discord.commands == []  # the global list was synced empty: nothing left behind
        interaction = await discord.imagine(alice, "a large red circle on a blue background", seed="3")
        assert is_final(await finished(discord, original(interaction)))  # the server's copy answers


async def test_progress_edits_are_spaced_out_and_the_result_is_not_held_back(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    slow = FakeGenerator(steps=40, step_delay=0.01)  # 40 progress events in about 0.4 s
    async with discord_bot(tmp_path, slow, discord={"edit_every_s": 0.15}):
        interaction = await discord.imagine(discord.user("alice"), "a slow sunrise")
        message = await finished(discord, original(interaction))
    edits = message.history[1:]  # after the "thinking…" message the deferral made
    working, final = edits[:-1], edits[-1]
    assert 2 <= len(working) < 10
    assert all(b["at"] - a["at"] >= 0.14 for a, b in zip(working, working[1:]))
    assert any(name.endswith("-grid.png") for name in final["files"])
    assert final["at"] - working[-1]["at"] < 0.15 + 1  # the last edit does not wait out the interval


async def test_a_discord_token_turns_the_adapter_on(tmp_path: Path) -> None:
    config = settings(tmp_path).model_copy(update={"secrets": Secrets(discord_token="token")})
    assert [adapter.platform for adapter in configured_adapters(config, {})] == ["discord"]


async def test_a_token_discord_refuses_stops_the_bot_with_one_line(discord: FakeDiscord, tmp_path: Path) -> None:
    config = bot_settings(tmp_path)
    async with App(config, LocalQueue(FakeGenerator())) as app:
        with pytest.raises(ConfigError, match="^DISCORD_TOKEN: Discord does not accept this token"):
            await DiscordAdapter(config, "not the token").start(app.service)


async def test_discord_out_of_reach_stops_the_bot_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                                                ) -> None:
    monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{free_port()}/api/v10")
    config = bot_settings(tmp_path)
    async with App(config, LocalQueue(FakeGenerator())) as app:
        with pytest.raises(PlatformUnreachable) as info:
            await DiscordAdapter(config, "the.secret.token").start(app.service)
    assert re.fullmatch(r"Discord cannot be reached \(Cannot connect to host 127\.0\.0\.1:\d+ .*\); check this "
                        r"machine's network", str(info.value))
    assert "\n" not in str(info.value) and "secret" not in str(info.value)


async def test_anyone_may_press_reroll_upscale_and_variations_and_the_new_job_is_theirs(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a red fox", seed="3")))
        job = job_id(grid)

        async def press(custom_id: str, values: list[str] | None = None) -> tuple[Message, Any]:
            pressed = await discord.press(grid, f"imagine:{custom_id}", bob, values=values)
            message = await finished(discord, original(pressed))
            assert pressed.callbacks[0]["type"] == 5 and not message.ephemeral  # a new public message
            status = await bot.service.status(next(iter(message.files)).split("-")[0].removesuffix(".png"))
            assert status is not None and status.job.requester.user == bob["id"]
            return message, status.job

        rerolled, reroll = await press(f"reroll:{job}")
        assert reroll.kind is Kind.REROLL and reroll.parent_id == job and reroll.seed != 3
        assert size(rerolled.files[f"{reroll.id}-grid.png"]) == (2 * PNG_SIZE + 2, 2 * PNG_SIZE + 2)

        upscaled, upscale = await press(f"upscale:{job}:1")
        assert upscale.kind is Kind.UPSCALE and upscale.parent_index == 1
        assert size(upscaled.files[f"{upscale.id}.png"]) == (64, 64)  # [images] upscale_px
        assert upscaled.custom_ids[:2] == [f"imagine:vary:{job}:1", f"imagine:strong:{job}:1"]  # vary the source
        assert upscaled.custom_ids[2:5] == [f"imagine:{a}:{upscale.id}" for a in ("remix", "info", "delete")]
        assert upscaled.custom_ids[5:] == [f"imagine:region:{job}:1"]  # Vary (Region) of the source

        varied, subtle = await press(f"vary:{job}:2")
        assert (subtle.kind, subtle.parent_index, subtle.strength) == (Kind.VARIATION, 2, Strength.SUBTLE)
        sent = next(m for m in bot.generator.submitted if m.job_id == subtle.id)
        assert sent.prefix is not None and len(sent.prefix[0]) == 12  # 3 of the 4 token rows kept

        _, strong = await press(f"pick:strong:{job}", ["3"])
        assert (strong.parent_index, strong.strength) == (3, Strength.STRONG)
        assert len(discord.messages) == 5  # one message per job, each edited in place


async def test_cancel_is_for_the_owner_or_an_admin(discord: FakeDiscord, tmp_path: Path) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        bot.generator.hold.clear()
        interaction = await discord.imagine(alice, "a slow snail")
        message = await shown(discord, interaction, lambda m: bool(m.custom_ids))
        job = job_id(message)
        assert message.custom_ids == [f"imagine:cancel:{job}"] and "(next in line)" in message.content

        refused = await discord.press(message, f"imagine:cancel:{job}", bob)
        followup = await note(discord, refused)
        assert refused.callbacks[0]["type"] == 6  # deferred update: the job's message is not replaced
        assert followup.ephemeral and "Only the person who asked" in followup.content

        await discord.press(message, f"imagine:cancel:{job}", alice)
        await discord.wait_for(lambda: bot.generator.cancels == [job])
        bot.generator.hold.set()  # the generator notices the cancel at its next step
        cancelled = await finished(discord, original(interaction))
        assert "(cancelled)" in cancelled.content and cancelled.custom_ids == []
        assert (await delivered(bot.service, job)).status is Status.CANCELLED


async def test_refusals_are_ephemeral_sentences(discord: FakeDiscord, tmp_path: Path) -> None:
    alice = discord.user("alice")
    limits = {"jobs_per_period": 1, "period_s": 600}
    async with discord_bot(tmp_path, limits=limits, blocklist={"words": ["kraken"]}) as bot:
        blocked = await discord.imagine(alice, "a Kraken attacks")
        said = await note(discord, blocked)
        assert said.ephemeral and 'contains "Kraken"' in said.content
        assert blocked.original is not None and blocked.original.deleted  # the public "thinking…" is gone

        await finished(discord, original(await discord.imagine(alice, "a calm sea")))
        limited = await discord.imagine(alice, "another calm sea")
        said = await note(discord, limited)
        assert said.ephemeral and "try again in" in said.content
        said = await note(discord, await discord.imagine(alice, "a sea", seed="forty-two"))
        assert said.ephemeral and "seed must be a whole number" in said.content

        gone = discord.old_message("imagine:reroll:0123456789abcdef")
        bad = await discord.press(gone, "imagine:reroll:0123456789abcdef", alice)
        said = await note(discord, bad)
        assert said.ephemeral and "no longer exists" in said.content
        assert len(bot.generator.submitted) == 1


async def test_admin_commands_change_behaviour_and_are_refused_for_others(discord: FakeDiscord, tmp_path: Path) -> None:
    alice, bob, owner = discord.user("alice"), discord.user("bob"), discord.user("owner")
    async with discord_bot(tmp_path, bot={"admins": [f"discord:{owner['id']}"]}):

        async def admin(by: dict[str, Any], *path: str, is_admin: bool = True, **options: Any) -> str:
            interaction = await discord.admin(by, *path, admin=is_admin, **options)
            reply = await shown(discord, interaction)
            assert interaction.callbacks[0]["data"]["flags"] == EPHEMERAL and reply.ephemeral
            return reply.content

        assert "Only server admins" in await admin(bob, "set", is_admin=False, key="defaults.count", value="1")
        assert "is now 1" in await admin(alice, "set", key="defaults.count", value="1")
        assert "`defaults.count` = 1" in await admin(alice, "settings")
        one = await finished(discord, original(await discord.imagine(bob, "a single pear")))
        assert size(next(iter(one.files.values()))) == (PNG_SIZE, PNG_SIZE)
        assert one.custom_ids[:2] == [f"imagine:upscale:{job_id(one)}:0", f"imagine:vary:{job_id(one)}:0"]
        assert "not a setting" in await admin(alice, "set", key="limits.queue_cap", value="3")

        assert "now refused" in await admin(alice, "blocklist", "add", text="pear")
        assert "`pear`" in await admin(alice, "blocklist", "list")
        refused = await discord.imagine(bob, "a pear tree")
        assert "not allowed here" in (await note(discord, refused)).content
        assert "no longer blocked" in await admin(alice, "blocklist", "remove", text="pear")

        assert "can no longer make images" in await admin(alice, "ban", user=bob, reason="spam")
        assert bob["id"] in await admin(alice, "bans")
        refused = await discord.imagine(bob, "a plum")
        assert "banned" in (await note(discord, refused)).content
        assert "again" in await admin(alice, "unban", user=bob)

        assert "Only the bot's admins" in await admin(alice, "pause")
        assert "Paused" in await admin(owner, "pause")
        waiting = await discord.imagine(bob, "a patient plum")
        await shown(discord, waiting, lambda m: "next in line" in m.content)
        listed = await admin(alice, "queue")
        assert "#1" in listed and "a patient plum" in listed
        assert "Resumed" in await admin(owner, "resume")
        done = await finished(discord, original(waiting))

        assert f"<@{bob['id']}>: 2 jobs, 2 images" in await admin(alice, "usage")
        assert "ban" in await admin(alice, "audit")
        assert "already finished" in await admin(alice, "cancel", job=job_id(done))


async def test_direct_messages_work_with_their_own_settings(discord: FakeDiscord, tmp_path: Path) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path) as bot:
        interaction = await discord.imagine(alice, "a quiet dm", dm=True, count=6, seed=str(2**63 - 1))
        message = await finished(discord, original(interaction))
        assert f"seed {2**63 - 1}" in message.content  # past Discord's 2^53 integers: the option is text
        job = await delivered(bot.service, job_id(message))
        assert message.channel_id == discord.channel_id + 1  # the DM channel
        assert (job.requester.server, job.requester.is_admin) == ("dm", False)
        assert size(message.files[f"{job.id}-grid.png"]) == (3 * PNG_SIZE + 4, 2 * PNG_SIZE + 2)
        menus = ["reroll:{0}", "remix:{0}", "info:{0}", "delete:{0}", "pick:upscale:{0}", "pick:vary:{0}",
                 "pick:strong:{0}", "pick:region:{0}"]  # 6 images: menus, not buttons
        assert message.custom_ids == [f"imagine:{i.format(job.id)}" for i in menus]
        pressed = await discord.press(message, f"imagine:pick:upscale:{job.id}", alice, values=["5"])
        assert "Upscale of image 6" in (await finished(discord, original(pressed))).content


async def test_an_expired_interaction_token_falls_back_to_a_channel_message(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path) as bot:
        bot.generator.hold.clear()
        interaction = await discord.imagine(alice, "a long queue")
        await shown(discord, interaction, lambda m: "next in line" in m.content)
        interaction.expired = True  # 15 minutes later: Discord refuses the token
        bot.generator.hold.set()
        posted = await finished(discord, lambda: next(iter(discord.channel_messages()), None))
        assert posted.channel_id == discord.channel_id and f"<@{alice['id']}>" in posted.content
        assert posted.custom_ids == [f"imagine:{i.format(job_id(posted))}" for i in GRID_IDS]
        assert len(discord.channel_messages()) == 1  # later edits went to the same channel message
        await delivered(bot.service, job_id(posted))


async def test_a_channel_the_bot_may_not_post_in_is_one_warning_a_dm_and_a_post_after_the_next_start(
    discord: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alice = discord.user("alice")
    discord.forbidden.add(discord.channel_id)  # no Send Messages in #general
    async with discord_bot(tmp_path) as bot:
        bot.generator.hold.clear()
        interaction = await discord.imagine(alice, "a walled garden")
        await shown(discord, interaction, lambda m: "next in line" in m.content)
        interaction.expired = True  # the result must go to the channel, which refuses it
        with caplog.at_level(logging.INFO, logger="bot.adapters.discord"):
            bot.generator.hold.set()
            [told] = await discord.wait_for(lambda: discord.dm_messages())
        assert "could not post your images for **a walled garden** in <#" in told.content
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "give it View Channel, Send Messages and Attach Files" in warnings[0].getMessage()
        assert warnings[0].exc_info is None and "Missing Permissions" in warnings[0].getMessage()
        job = job_id(interaction.original)  # type: ignore[arg-type]
        assert not (await bot.service.status(job)).job.delivered  # type: ignore[union-attr]
    discord.forbidden.clear()  # an admin lets the bot post there
    async with discord_bot(tmp_path) as bot:
        posted = await finished(discord, lambda: next(iter(m for m in discord.channel_messages()
                                                           if m.channel_id == discord.channel_id), None))
        assert job_id(posted) == job and f"<@{alice['id']}>" in posted.content
        await delivered(bot.service, job)


async def test_a_prompt_never_pings_anyone_but_the_requester(discord: FakeDiscord, tmp_path: Path) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        bot.generator.hold.clear()
        prompt = f"a portrait of <@{bob['id']}> and @everyone, **bold** " + "*" * 930
        interaction = await discord.imagine(alice, prompt)
        await shown(discord, interaction, lambda m: "next in line" in m.content)
        interaction.expired = True  # the result goes to a new channel message, which can ping
        bot.generator.hold.set()
        posted = await finished(discord, lambda: next(iter(discord.channel_messages()), None))
        assert posted.pings == {alice["id"]}
        assert len(posted.content) <= 2000 and posted.content.startswith("**a portrait of <@\u200b")
        assert "\\*\\*bold\\*\\*" in posted.content  # escaped, then cut to fit (930 stars escaped are 1860)
        await delivered(bot.service, job_id(posted))


async def test_after_a_restart_old_buttons_work_and_missed_results_are_posted(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    owner = {"admins": ["discord:owner"], "shutdown_grace_s": 5}
    async with discord_bot(tmp_path, bot=owner) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "an old grid")))
        bot.generator.hold.clear()
        running = await discord.imagine(alice, "finishes while the bot is away")
        await shown(discord, running, lambda m: "next in line" in m.content)
        await bot.service.admin.pause(OWNER)  # so the next job is still waiting when the bot stops
        waiting = await discord.imagine(bob, "still waiting at the restart")
        await shown(discord, waiting, lambda m: "next in line" in m.content)
        await bot.adapter.close()  # Discord goes first; the running job then finishes within the grace period
        bot.generator.hold.set()
    # The old messages stopped where the bot stopped; the results go to new channel messages.
    assert all(i.original and "next in line" in i.original.content for i in (running, waiting))

    async with discord_bot(tmp_path) as bot:
        posted = await discord.wait_for(lambda: len(discord.channel_messages()) == 2 and discord.channel_messages())
        await discord.wait_for(lambda: all(is_final(message) for message in posted))
        for message in posted:
            assert message.channel_id == discord.channel_id and message.custom_ids[-1].startswith("imagine:pick:")
        by_prompt = {m.content.split("**")[1]: m for m in posted}
        assert f"<@{alice['id']}>" in by_prompt["finishes while the bot is away"].content
        assert f"<@{bob['id']}>" in by_prompt["still waiting at the restart"].content
        for message in posted:
            await delivered(bot.service, job_id(message))

        pressed = await discord.press(grid, f"imagine:reroll:{job_id(grid)}", bob)
        rerolled = await finished(discord, original(pressed))
        assert "Reroll by" in rerolled.content
        await delivered(bot.service, job_id(rerolled))
        assert discord.command_syncs == 2 and len(discord.identified) == 2

    async with discord_bot(tmp_path):  # delivered results are not posted again
        # A whole new job's time after the start: far longer than posting a recovered result takes.
        await finished(discord, original(await discord.imagine(alice, "after the second restart")))
        assert len(discord.channel_messages()) == 2


@pytest.mark.slow
async def test_with_the_real_tiny_model_the_grid_has_its_size_and_previews_fill_in(
    discord: FakeDiscord, tmp_path: Path, tiny_dir: Path
) -> None:
    model = {"name": str(tiny_dir), "device": "cpu"}
    config = bot_settings(tmp_path, model=model, generator={"max_batch_images": 4})
    async with connected(config, paced_generator(tiny_dir, max_batch_images=4)) as (service, _):  # previews for sure
        interaction = await discord.imagine(discord.user("alice"), "a tiny harbour", count=2, seed="5")
        message = await finished(discord, original(interaction), timeout=60)
        job = await delivered(service, job_id(message))
        assert size(message.files[f"{job.id}-grid.png"]) == (2 * 96 + 2, 96)  # two 96 px images, a 2 px gutter
        assert any("preview.png" in h["files"] for h in message.history)
        assert "seed 5" in message.content
