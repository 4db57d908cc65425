"""Image prompts and Vary (Region) in Discord at the wire: /imagine with an attachment fetched from the CDN, and
region menus under grids and upscales, with real discord.py against the local Discord."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.jobs import REGIONS, Kind
from generator import protocol as wire
from tests.bot.adapters.fake_discord import FakeDiscord, Message, fake_discord
from tests.bot.adapters.test_discord import delivered, discord_bot, finished, job_id, note, original
from tests.bot.adapters.test_discord_controls import answer
from tests.bot.helpers import FakeGenerator, png

pytestmark = pytest.mark.asyncio

REGION_NAMES = ["top half", "bottom half", "left half", "right half", "centre", "top left", "top right",
                "bottom left", "bottom right"]  # fmt: skip


@pytest_asyncio.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with fake_discord() as server:
        yield server


def picture(size: int = 32, colour: tuple[int, int, int] = (200, 40, 40), kind: str = "PNG") -> bytes:
    """A picture file a user might attach."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format=kind)
    return out.getvalue()


class PictureGenerator(FakeGenerator):
    """The fake generator, previewing a job that starts from a picture at its first step (as the engine does:
    the kept cells show from the start)."""

    async def _run(self, msg: wire.Generate) -> None:
        if msg.image is not None or msg.codes is not None:
            await self.hold.wait()
            self._events.put_nowait(wire.JobProgress(msg.job_id, 0, self.steps, png(99)))
        await super()._run(msg)


def menu(message: Message, custom_id: str) -> dict[str, object]:
    """A select menu of a message by its custom id."""
    return next(c for row in message.components for c in row["components"] if c.get("custom_id") == custom_id)


async def test_imagine_takes_an_attachment_and_a_region_and_the_core_gets_the_picture(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path) as bot:
        options = {o["name"]: o for o in next(c for c in discord.commands if c["name"] == "imagine")["options"]}
        assert (options["image"]["type"], options["image"]["required"]) == (11, False)
        assert (options["region"]["type"], options["region"]["required"]) == (3, False)
        assert [c["value"] for c in options["region"]["choices"]] == REGION_NAMES
        assert "bottom half" in options["region"]["description"]  # the default, said where it is chosen

        sent = picture(kind="JPEG")
        attached = discord.attachment("cat.jpg", sent, content_type="image/jpeg")
        interaction = await discord.imagine(alice, "a cat in a hat", image=attached, region="top left")
        grid = await finished(discord, original(interaction))
        assert interaction.callbacks[0]["type"] == 5  # thinking first: the download comes after
        assert discord.cdn_sent[attached["id"]] == len(sent)  # fetched from the CDN
        generate = bot.generator.submitted[0]
        assert generate.region == list(REGIONS["top left"])
        assert generate.image is not None and Image.open(io.BytesIO(generate.image)).format == "PNG"  # as the core
        assert Image.open(io.BytesIO(generate.image)).size == (32, 32)  # keeps it: a plain PNG of the picture
        job = await delivered(bot.service, job_id(grid))
        assert job.region == REGIONS["top left"] and job.source is not None and job.kind is Kind.IMAGINE
        assert "**a cat in a hat** - From a picture (top left made again) by" in grid.content

        plain = await discord.imagine(alice, "a dog", image=discord.attachment("dog.png", picture()))
        await finished(discord, original(plain))
        assert bot.generator.submitted[-1].region == list(REGIONS["bottom half"])  # the default


async def test_bad_attachments_get_the_cores_sentence_only_the_requester_sees(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    limit = 64 * 1024
    async with discord_bot(tmp_path, images={"max_upload_mb": limit / 2**20}) as bot:

        async def refused(**options: object) -> str:
            interaction = await discord.imagine(alice, "a cat", **options)
            said = await note(discord, interaction)
            assert said.ephemeral
            assert interaction.original is not None and interaction.original.deleted  # the public "thinking…" too
            return said.content

        text = discord.attachment("notes.png", b"these are my notes, not a picture")
        assert await refused(image=text) == "That file is not a picture; send a PNG, JPEG, WebP or GIF."

        bmp = discord.attachment("old.bmp", picture(kind="BMP"), content_type="image/bmp")
        assert await refused(image=bmp) == "That is a BMP file; send a PNG, JPEG, WebP or GIF."

        huge = discord.attachment("huge.png", bytes(5 * 2**20))  # Discord says how big it is: never fetched
        assert await refused(image=huge) == "That file is 5.0 MB; send a picture of at most 0.0625 MB."
        assert huge["id"] not in discord.cdn_sent

        over = discord.attachment("over.png", picture(300) + bytes(limit))  # just over: fetched, the core says no
        said = await refused(image=over)
        assert said.startswith("That file is 0.") and said.endswith("; send a picture of at most 0.0625 MB.")

        # A file bigger than Discord said: reading stops a little past the limit.
        lying = discord.attachment("lying.png", bytes(64 * 2**20), size=1000)
        said = await refused(image=lying)
        assert said.endswith("send a picture of at most 0.0625 MB.")
        assert discord.cdn_sent[lying["id"]] < 16 * 2**20

        said = await refused(region="centre")  # a region with no picture
        assert said == "A region says which part of a picture to make again; send the picture too."
        assert bot.generator.submitted == []


async def test_a_small_grid_has_one_menu_of_each_image_and_region(discord: FakeDiscord, tmp_path: Path) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a red fox", count=2)))
        job = job_id(grid)
        regions = menu(grid, f"imagine:region:{job}")
        assert grid.components[-1]["components"] == [regions]  # a row of its own, the last
        assert regions["placeholder"] == "Vary (Region)…"
        assert [o["value"] for o in regions["options"]][:2] == ["0:top half", "0:bottom half"]  # type: ignore[index]
        assert len(regions["options"]) == 18  # type: ignore[arg-type]
        assert regions["options"][10]["label"] == "Image 2: Bottom half"  # type: ignore[index]

        pressed = await discord.press(grid, f"imagine:region:{job}", bob, values=["1:right half"])
        varied = await finished(discord, original(pressed))
        assert pressed.callbacks[0]["type"] == 5 and not varied.ephemeral  # thinking, then a public message
        new = await delivered(bot.service, job_id(varied))
        assert (new.kind, new.parent_id, new.parent_index, new.region) == (Kind.REGION, job, 1,
                                                                           REGIONS["right half"])  # fmt: skip
        assert new.requester.user == bob["id"] and new.prompt == "a red fox"
        generate = bot.generator.submitted[-1]
        assert generate.region == list(REGIONS["right half"]) and generate.codes is not None  # image 2's tokens
        assert generate.codes == bot.generator.tokens(bot.generator.submitted[0], 1)
        assert "Vary (Region, right half) of image 2 by" in varied.content
        assert f"imagine:region:{job_id(varied)}" in varied.custom_ids  # a region variation can be varied again


async def test_a_larger_grid_picks_the_image_then_asks_which_region_only_of_the_presser(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        for count in (4, 16):
            grid = await finished(discord, original(await discord.imagine(alice, f"{count} foxes", count=count)))
            job = job_id(grid)
            assert len(grid.components) == 5  # Discord's limit, with the new menu
            pick = menu(grid, f"imagine:pick:region:{job}")
            assert grid.components[-1]["components"] == [pick] and pick["placeholder"] == "Vary (Region)…"
            assert [o["label"] for o in pick["options"]] == [f"Image {i + 1}" for i in range(count)]  # type: ignore[attr-defined]

            asked = await discord.press(grid, f"imagine:pick:region:{job}", bob, values=["3"])
            question = await discord.wait_for(lambda: asked.original)  # noqa: B023
            assert asked.callbacks[0]["type"] == 4 and question.ephemeral  # only the presser sees the question
            assert "image 4" in question.content
            regions = menu(question, f"imagine:region:{job}:3")
            assert [o["value"] for o in regions["options"]] == REGION_NAMES  # type: ignore[attr-defined]
            assert [o["label"] for o in regions["options"]][:2] == ["Top half", "Bottom half"]  # type: ignore[attr-defined]

            chosen = await discord.press(question, f"imagine:region:{job}:3", bob, values=["centre"])
            varied = await finished(discord, original(chosen))
            assert not varied.ephemeral and varied.id != question.id  # the job on a new, public message
            new = await delivered(bot.service, job_id(varied))
            assert (new.kind, new.parent_id, new.parent_index, new.region) == (Kind.REGION, job, 3,
                                                                               REGIONS["centre"])  # fmt: skip
            assert new.options.count == count


async def test_an_upscaled_image_has_a_region_menu_and_a_remix_of_its_variation_keeps_the_region(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a lighthouse")))
        job = job_id(grid)
        upscaled = await finished(discord, original(await discord.press(grid, f"imagine:upscale:{job}:2", alice)))
        regions = menu(upscaled, f"imagine:region:{job}:2")  # the grid's job and image: the tokens live there
        assert upscaled.components[-1]["components"] == [regions]
        assert [o["value"] for o in regions["options"]] == REGION_NAMES  # type: ignore[attr-defined]

        varied = await finished(discord, original(
            await discord.press(upscaled, f"imagine:region:{job}:2", alice, values=["bottom left"])))  # fmt: skip
        variation = await delivered(bot.service, job_id(varied))
        assert (variation.kind, variation.parent_id, variation.parent_index, variation.region) == (
            Kind.REGION, job, 2, REGIONS["bottom left"])

        opened = await discord.press(varied, f"imagine:remix:{variation.id}", alice)
        await discord.wait_for(lambda: opened.modal)
        assert opened.modal is not None and opened.modal["title"] == "Remix: Vary (Region) of image 3"
        submitted = await discord.submit(opened, alice, {"prompt": "a lighthouse at night"})
        remixed = await finished(discord, original(submitted))
        new = await delivered(bot.service, job_id(remixed))
        assert (new.kind, new.parent_id, new.parent_index, new.region, new.prompt) == (
            Kind.REGION, job, 2, REGIONS["bottom left"], "a lighthouse at night")
        assert bot.generator.submitted[-1].region == list(REGIONS["bottom left"])

        info = await discord.press(varied, f"imagine:info:{variation.id}", alice)
        await discord.wait_for(lambda: info.original and info.original.embeds)
        assert info.original is not None
        made = {f["name"]: f["value"] for f in info.original.embeds[0]["fields"]}["Made from"]
        assert made == f"Vary (Region, bottom left) of image 3 of job `{job}`"


async def test_region_menus_of_a_deleted_job_say_so(discord: FakeDiscord, tmp_path: Path) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a secret", count=4)))
        job = job_id(grid)
        copy = discord.old_message()  # a copy of its menus, as on a message from before the deletion
        copy.components = [{"type": 1, "components": [menu(grid, f"imagine:pick:region:{job}")]},
                           {"type": 1, "components": [{**menu(grid, f"imagine:pick:region:{job}"),
                                                       "custom_id": f"imagine:region:{job}:0"}]}]  # fmt: skip
        await note(discord, await discord.press(grid, f"imagine:delete:{job}", alice))
        for custom_id, value in ((f"imagine:pick:region:{job}", "0"), (f"imagine:region:{job}:0", "centre")):
            said = await answer(discord, await discord.press(copy, custom_id, alice, values=[value]))
            assert said.ephemeral and "deleted" in said.content, custom_id
        assert len(bot.generator.submitted) == 1


async def test_a_job_from_a_picture_shows_its_first_preview_at_once(discord: FakeDiscord, tmp_path: Path) -> None:
    alice = discord.user("alice")
    slow = PictureGenerator(steps=4, step_delay=0.05)
    async with discord_bot(tmp_path, slow, discord={"edit_every_s": 30}) as bot:
        plain = await finished(discord, original(await discord.imagine(alice, "no picture")))
        assert not [h for h in plain.history if "preview.png" in h["uploaded"]]  # one edit per 30 s: none shown

        interaction = await discord.imagine(alice, "a cat", image=discord.attachment("cat.png", picture()))
        message = await finished(discord, original(interaction))
        previews = [h for h in message.history if "preview.png" in h["uploaded"]]
        assert len(previews) == 1  # the first preview, at once; the rest waits for the next edit as always
        assert previews[0]["at"] < message.history[-1]["at"]
        await asyncio.sleep(0)
        assert bot.generator.submitted[-1].image is not None
