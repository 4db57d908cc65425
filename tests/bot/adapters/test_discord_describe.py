"""/describe and the Describe message menu in Discord at the wire: pictures read into prompts, and "Imagine k"
buttons that start anyone's own /imagine of a prompt, with real discord.py against the local Discord."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.adapters.discord.attachments import NO_PICTURE
from bot.jobs import Kind, Status
from tests.bot.adapters.fake_discord import EPHEMERAL, FakeDiscord, Interaction, Message, fake_discord
from tests.bot.adapters.test_discord import delivered, discord_bot, finished, job_id, note, original, shown
from tests.bot.adapters.test_discord_controls import answer, embedded, fields
from tests.bot.adapters.test_discord_regions import picture
from tests.bot.helpers import PNG_SIZE

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with fake_discord() as server:
        yield server


def has_prompts(message: Message) -> bool:
    """Whether a describe job's message shows its prompts (its Imagine buttons)."""
    return any(i.startswith("imagine:prompt:") for i in message.custom_ids)


async def prompts_shown(discord: FakeDiscord, message_of: Callable[[], Message | None]) -> Message:
    """Wait until a describe job's message shows how it ended: its prompts, or a failure."""
    return await discord.wait_for(
        lambda: (message := message_of()) is not None and (has_prompts(message) or "(failed)" in message.content)
        and message
    )


def labels(message: Message) -> list[str]:
    """The labels of a message's buttons, in order."""
    return [c.get("label") or "" for row in message.components for c in row.get("components", [])]


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


async def test_describe_answers_with_numbered_prompts_and_imagine_k_is_the_pressers_own_imagine(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        commands = {(c["name"], c.get("type", 1)): c for c in discord.commands}
        options = {o["name"]: o for o in commands["describe", 1]["options"]}
        assert (options["image"]["type"], options["image"]["required"]) == (11, True)
        assert (options["count"]["min_value"], options["count"]["max_value"], options["count"]["required"]) == (1, 8,
                                                                                                             False)
        assert commands["describe", 1]["description"] == "Write prompts that would draw a picture."
        assert ("Describe", 3) in commands  # the message menu (Apps -> Describe)

        bot.generator.hold.clear()
        sent = picture(kind="JPEG")
        attached = discord.attachment("cat.jpg", sent, content_type="image/jpeg")
        interaction = await discord.describe(alice, attached, count=3)
        waiting = await shown(discord, interaction, lambda m: "next in line" in m.content)
        job = job_id(waiting)
        assert interaction.callbacks[0]["type"] == 5  # thinking first: the download comes after
        assert waiting.content == f"**Prompts for a picture** - Describe by <@{alice['id']}> (next in line)"
        assert waiting.custom_ids == [f"imagine:cancel:{job}"]  # queued like any job, and cancellable
        listed = await shown(discord, await discord.admin(bob, "queue"))
        assert listed.content.endswith(f"<@{alice['id']}>: (describing a picture)") and job in listed.content
        bot.generator.hold.set()

        message = await prompts_shown(discord, original(interaction))
        assert not message.ephemeral and discord.cdn_sent[attached["id"]] == len(sent)  # fetched from the CDN
        described = await delivered(bot.service, job)
        assert (described.kind, described.requester.user, described.status) == (Kind.DESCRIBE, alice["id"],
                                                                                 Status.DONE)  # fmt: skip
        assert described.prompts is not None and len(described.prompts) == 3
        [read] = bot.generator.described
        assert read.count == 3 and size(read.image) == (32, 32)  # the core's plain PNG of the picture
        assert message.content.splitlines() == [
            f"**Prompts for a picture** - Describe by <@{alice['id']}> (3 prompts)",
            *(f"{i}. {prompt}" for i, prompt in enumerate(described.prompts, start=1)),
        ]
        assert message.custom_ids == [*(f"imagine:prompt:{job}:{i}" for i in range(3)), f"imagine:info:{job}",
                                      f"imagine:delete:{job}"]  # fmt: skip
        assert labels(message) == ["Imagine 1", "Imagine 2", "Imagine 3", "Info", "Delete"]
        assert bot.generator.submitted == []  # reading a picture draws nothing

        pressed = await discord.press(message, f"imagine:prompt:{job}:1", bob)
        grid = await finished(discord, original(pressed))
        assert pressed.callbacks[0]["type"] == 5 and not grid.ephemeral  # a new public message, like /imagine
        made = await delivered(bot.service, job_id(grid))
        assert (made.kind, made.prompt, made.requester.user) == (Kind.IMAGINE, described.prompts[1], bob["id"])
        assert made.options.count == 4 and made.parent_id is None  # the defaults, as if bob had typed /imagine
        assert [m.prompt for m in bot.generator.submitted] == [described.prompts[1]]
        assert f"**{described.prompts[1]}** - <@{bob['id']}>" in grid.content
        assert not message.deleted and has_prompts(message)  # the prompts stay for the next presser

        embed = await embedded(discord, await discord.press(message, f"imagine:info:{job}", bob))
        info = fields(embed)
        assert embed["description"] == "\n".join(f"{i}. {p}" for i, p in enumerate(described.prompts, start=1))
        assert (info["Prompts"], info["Made from"], info["By"]) == ("3", "A picture", f"<@{alice['id']}>")
        assert "Images" not in info and "cfg" not in info


async def test_imagine_k_takes_the_stored_prompt_after_a_restart_under_each_pressers_limits(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice, bob, carol = discord.user("alice"), discord.user("bob"), discord.user("carol")
    limits = {"limits": {"jobs_per_period": 1, "period_s": 600}, "bot": {"shutdown_grace_s": 0}}
    async with discord_bot(tmp_path, **limits) as bot:
        bot.generator.hold.clear()
        interaction = await discord.describe(alice, discord.attachment("fox.png", picture()))
        await shown(discord, interaction, lambda m: "next in line" in m.content)
        await bot.adapter.close()  # the bot stops with the job still waiting for the generator
    assert interaction.original is not None and not has_prompts(interaction.original)

    async with discord_bot(tmp_path, **limits) as bot:  # resumed, and posted in the channel once read
        posted = await prompts_shown(discord, lambda: next(iter(discord.channel_messages()), None))
        job = job_id(posted)
        described = await delivered(bot.service, job)
        assert described.prompts is not None and len(described.prompts) == 4  # [describe] count
        assert posted.channel_id == discord.channel_id and posted.pings == {alice["id"]}
        assert posted.content.splitlines()[0] == f"**Prompts for a picture** - Describe by <@{alice['id']}> (4 prompts)"

        posted.content = "1. something else entirely"  # the buttons go by the job, not by what the message says
        made = await finished(discord, original(await discord.press(posted, f"imagine:prompt:{job}:2", bob)))
        assert (await delivered(bot.service, job_id(made))).prompt == described.prompts[2]

        # That was bob's one job of the period: his next press is refused, carol's is her own.
        refused = await discord.press(posted, f"imagine:prompt:{job}:0", bob)
        said = await note(discord, refused)
        assert said.ephemeral and "try again in" in said.content
        assert refused.original is not None and refused.original.deleted  # the public "thinking…" is gone
        made = await finished(discord, original(await discord.press(posted, f"imagine:prompt:{job}:0", carol)))
        assert (await delivered(bot.service, job_id(made))).requester.user == carol["id"]

        stray = discord.old_message(f"imagine:prompt:{job}:7")  # a button past the job's prompts
        said = await note(discord, await discord.press(stray, f"imagine:prompt:{job}:7", carol))
        assert said.ephemeral and said.content == "That job has no prompt 8; describe the picture again for new ones."
        assert [m.prompt for m in bot.generator.submitted] == [described.prompts[2], described.prompts[0]]


async def test_the_describe_menu_reads_the_first_picture_of_a_message_the_bots_own_grids_too(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a red fox")))

        used = await discord.menu("Describe", bob, grid)
        message = await prompts_shown(discord, original(used))
        assert used.callbacks[0]["type"] == 5 and not message.ephemeral
        assert f"- Describe by <@{bob['id']}> (4 prompts)" in message.content.splitlines()[0]
        described = await delivered(bot.service, job_id(message))
        assert described.requester.user == bob["id"] and described.kind is Kind.DESCRIBE
        assert size(bot.generator.described[-1].image) == (2 * PNG_SIZE + 2, 2 * PNG_SIZE + 2)  # the grid it shows

        posted = discord.post(alice, "look at this", files={"notes.txt": b"words", "beach.png": picture(20)})
        message = await prompts_shown(discord, original(await discord.menu("Describe", bob, posted)))
        assert size(bot.generator.described[-1].image) == (20, 20)  # the picture, past a file that is none

        linked = discord.attachment("sunset.png", picture(24))
        link = discord.post(alice, linked["url"], embeds=[{"type": "image", "url": linked["url"],
                                                          "thumbnail": {"url": linked["url"]}}])  # fmt: skip
        await prompts_shown(discord, original(await discord.menu("Describe", alice, link)))
        assert size(bot.generator.described[-1].image) == (24, 24)  # a link's preview
        assert len(bot.generator.described) == 3 and len(bot.generator.submitted) == 1


async def test_a_message_without_a_picture_or_a_file_that_is_none_gets_an_ephemeral_sentence(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    limit = 64 * 1024
    async with discord_bot(tmp_path, images={"max_upload_mb": limit / 2**20, "max_upload_megapixels": 0.01}) as bot:
        for message in (discord.post(alice, "just words"), discord.post(alice, "", files={"notes.txt": b"words"})):
            used = await discord.menu("Describe", alice, message)
            said = await answer(discord, used)
            assert used.callbacks[0]["type"] == 4 and used.callbacks[0]["data"]["flags"] == EPHEMERAL  # at once
            assert said.ephemeral and said.content == NO_PICTURE

        async def refused(send: Callable[[], Awaitable[Interaction]]) -> str:
            interaction = await send()
            said = await note(discord, interaction)
            assert said.ephemeral
            assert interaction.original is not None and interaction.original.deleted  # the public "thinking…" too
            return said.content

        text = discord.attachment("notes.png", b"these are my notes, not a picture")
        assert await refused(lambda: discord.describe(alice, text)) == ("That file is not a picture; send a PNG, "
                                                                        "JPEG, WebP or GIF.")  # fmt: skip
        huge = discord.attachment("huge.png", bytes(5 * 2**20))  # Discord says how big it is: never fetched
        assert await refused(lambda: discord.describe(alice, huge)) == ("That file is 5.0 MB; send a picture of at "
                                                                        "most 0.0625 MB.")  # fmt: skip
        assert huge["id"] not in discord.cdn_sent
        bomb = discord.attachment("bomb.gif", picture(200, kind="GIF"), content_type="image/gif")  # small, unpacks big
        said = await refused(lambda: discord.describe(alice, bomb))
        assert said == "That picture is 200x200 pixels; send one of at most 0.01 megapixels."

        posted = discord.post(alice, "", files={"fake.png": b"not a picture either"})  # named like one
        said = await refused(lambda: discord.menu("Describe", alice, posted))
        assert said == "That file is not a picture; send a PNG, JPEG, WebP or GIF."
        assert bot.generator.described == [] and bot.generator.submitted == []
