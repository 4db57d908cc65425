"""Image prompts and Vary (Region) in Slack at the wire: the "Vary with janus" message shortcut (its modal, the
file fetched with files.info and the bot token) and region menus under grids and upscales, with real slack-bolt
against the fake Slack."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.adapters.slack.blocks import PICTURE_SHORTCUT
from bot.jobs import REGIONS, Job, Kind, Status
from tests.bot.adapters.fake_slack import BOT_TOKEN, CHANNEL, Message, Running, running_slack
from tests.bot.adapters.test_discord_regions import PictureGenerator, picture
from tests.bot.adapters.test_slack_controls import done_job, opened, shown, told

pytestmark = pytest.mark.asyncio

REGION_LABELS = ["Top half", "Bottom half", "Left half", "Right half", "Centre", "Top left", "Top right",
                 "Bottom left", "Bottom right"]  # fmt: skip


async def whispered(bot: Running, count: int) -> dict[str, Any]:
    """The `count`-th chat.postEphemeral call, once it comes."""
    await bot.slack.until(lambda: len(bot.slack.called("chat.postEphemeral")) >= count)
    return bot.slack.called("chat.postEphemeral")[count - 1]


async def finished(bot: Running, kind: Kind, count: int = 1) -> list[Job]:
    """The delivered jobs of this kind, once there are `count` of them."""

    async def find() -> list[Job] | None:
        jobs = [j for j in await bot.store.jobs(Status.DONE) if j.kind is kind and j.delivered]
        return jobs if len(jobs) >= count else None

    found: list[Job] = await bot.slack.until(find)
    return found


async def test_the_shortcut_opens_a_modal_whose_submission_makes_the_picture_again_in_its_channel(
    tmp_path: Path,
) -> None:
    async with running_slack(tmp_path) as bot:
        sent = picture(kind="JPEG")
        message = bot.slack.share("cat.jpg", sent, mimetype="image/jpeg", text="my cat")
        await bot.shortcut(message, PICTURE_SHORTCUT)
        view = await opened(bot, 1)
        assert bot.slack.called("views.open")[0]["trigger_id"].endswith(".2.6")  # the shortcut's own
        assert view["title"]["text"] == "Vary with janus" and view["submit"]["text"]
        inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
        assert list(inputs) == ["prompt", "region", "negative"]
        region = inputs["region"]["element"]
        assert region["type"] == "static_select"
        assert [o["text"]["text"] for o in region["options"]] == REGION_LABELS
        assert region["initial_option"]["text"]["text"] == "Bottom half"
        assert inputs["negative"]["optional"] and not inputs["prompt"].get("optional")
        assert bot.slack.downloads == []  # nothing fetched until it is submitted

        assert await bot.submit(view, {"prompt": "a cat in a hat", "region": "Top right"}) == {}  # the modal closes
        done = await shown(bot, "a cat in a hat")
        assert done.channel == CHANNEL and done.thread_ts is None
        [info] = bot.slack.called("files.info")
        assert info["file"] == message["files"][0]["id"]
        [download] = bot.slack.downloads
        assert download["authorization"] == f"Bearer {BOT_TOKEN}" and download["sent"] == len(sent)
        generate = bot.generator.submitted[0]
        assert generate.region == list(REGIONS["top right"])
        assert generate.image is not None and Image.open(io.BytesIO(generate.image)).format == "PNG"
        job = await done_job(bot, "a cat in a hat")
        assert (job.kind, job.region, job.requester.user) == (Kind.IMAGINE, REGIONS["top right"], "U0ALICE")
        assert job.source is not None
        assert "from a picture, top right made again" in done.blocks[0]["text"]["text"]

        threaded = bot.slack.share("dog.png", picture(), thread_ts=done.ts)  # a picture shared in a thread
        await bot.shortcut(threaded, PICTURE_SHORTCUT)
        await bot.submit(await opened(bot, 2), {"prompt": "a dog"})  # the region as it opened: the bottom half
        in_thread = await shown(bot, "a dog")
        assert in_thread.thread_ts == done.ts
        assert bot.generator.submitted[-1].region == list(REGIONS["bottom half"])


async def test_the_shortcut_works_over_socket_mode_too(tmp_path: Path) -> None:
    async with running_slack(tmp_path, mode="socket") as bot:
        slack = bot.slack
        message = slack.share("cat.png", picture())
        assert "payload" not in await slack.envelope("interactive", slack.shortcut(message, PICTURE_SHORTCUT))
        view = await opened(bot, 1)
        ack = await slack.envelope("interactive", slack.submission(view, {"prompt": "a heron", "region": "Centre"}))
        assert "payload" not in ack
        await shown(bot, "a heron")
        assert bot.generator.submitted[0].region == list(REGIONS["centre"])


async def test_bad_files_get_the_cores_sentence_only_the_user_sees(tmp_path: Path) -> None:
    limit = 64 * 1024
    async with running_slack(tmp_path, sections={"images": {"max_upload_mb": limit / 2**20}}) as bot:
        slack = bot.slack
        await bot.shortcut({"type": "message", "user": "U0BOB", "ts": "1.000300", "text": "no file"}, PICTURE_SHORTCUT)
        assert (await told(bot, 1)) == ("Vary with janus starts from a picture; use it on a message with a PNG, "
                                        "JPEG, WebP or GIF file.")  # fmt: skip

        huge = slack.share("huge.png", bytes(5 * 2**20))  # Slack says how big it is: refused before the modal
        await bot.shortcut(huge, PICTURE_SHORTCUT)
        assert await told(bot, 2) == "That file is 5.0 MB; send a picture of at most 0.0625 MB."
        assert slack.views == [] and slack.downloads == []

        async def submitted(message: dict[str, Any], views: int, said: int) -> str:
            await bot.shortcut(message, PICTURE_SHORTCUT)
            await bot.submit(await opened(bot, views), {"prompt": "a cat"})
            whisper = await whispered(bot, said)
            assert (whisper["channel"], whisper["user"]) == (CHANNEL, "U0ALICE")
            return str(whisper["text"])

        text = slack.share("notes.png", b"these are my notes, not a picture", mimetype="image/png")
        assert await submitted(text, 1, 1) == "That file is not a picture; send a PNG, JPEG, WebP or GIF."

        over = slack.share("over.png", picture(300) + bytes(limit))  # just over: fetched, the core says no
        said = await submitted(over, 2, 2)
        assert said.startswith("That file is 0.") and said.endswith("; send a picture of at most 0.0625 MB.")

        lying = slack.share("lying.png", bytes(64 * 2**20), size=1000)  # bigger than Slack said
        assert (await submitted(lying, 3, 3)).endswith("send a picture of at most 0.0625 MB.")
        assert slack.downloads[-1]["sent"] < 16 * 2**20  # reading stopped a little past the limit

        gone = slack.share("gone.png", picture())
        await bot.shortcut(gone, PICTURE_SHORTCUT)
        slack.files[gone["files"][0]["id"]].deleted = True  # deleted while the modal was open
        await bot.submit(await opened(bot, 4), {"prompt": "a cat"})
        assert "cannot find that picture" in (await whispered(bot, 4))["text"]

        bot.slack.admins.add("U0ADMIN")
        await bot.command("block kraken", user="U0ADMIN", command="/imagine-admin")
        fine = slack.share("fine.png", picture())
        await bot.shortcut(fine, PICTURE_SHORTCUT)
        await bot.submit(await opened(bot, 5), {"prompt": "a kraken"})
        assert "kraken" in (await whispered(bot, 5))["text"]
        assert bot.generator.submitted == []


async def test_a_grid_has_a_menu_of_each_image_and_region(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        await bot.command("a red fox --count 2")
        grid = await shown(bot, "a red fox")
        parent = await done_job(bot, "a red fox")
        regions = grid.menu("Vary (Region)…")
        assert [g["label"]["text"] for g in regions["option_groups"]] == ["Image 1", "Image 2"]
        assert [o["text"]["text"] for o in regions["option_groups"][1]["options"]] == REGION_LABELS

        await bot.click(grid, "Image 2/Right half", menu="Vary (Region)…", user="U0BOB")
        [job] = await finished(bot, Kind.REGION)
        assert (job.parent_id, job.parent_index, job.region, job.requester.user) == (parent.id, 1,
                                                                                     REGIONS["right half"], "U0BOB")
        generate = bot.generator.submitted[-1]
        assert generate.region == list(REGIONS["right half"])
        assert generate.codes == bot.generator.tokens(bot.generator.submitted[0], 1)
        varied = await bot.slack.until(lambda: [m for m in bot.slack.posted()[1:] if m.text.endswith(": done")])
        assert "(Vary (Region, right half) of image 2)" in varied[0].blocks[0]["text"]["text"]
        assert varied[0].menu("Vary (Region)…")  # a region variation's grid can be varied again


async def test_a_grid_of_sixteen_splits_its_region_menu_within_slacks_limits(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        await bot.command("many foxes --count 16")
        grid = await shown(bot, "many foxes")  # the fake refuses blocks past Slack's limits
        first, second = grid.menu("Vary (Region) 1-8…"), grid.menu("Vary (Region) 9-16…")
        assert [g["label"]["text"] for g in second["option_groups"]] == [f"Image {i}" for i in range(9, 17)]
        assert first["action_id"] != second["action_id"]
        await bot.click(grid, "Image 12/Centre", menu="Vary (Region) 9-16…")
        [job] = await finished(bot, Kind.REGION)
        assert (job.parent_index, job.region) == (11, REGIONS["centre"])


async def test_an_upscale_has_a_region_menu_and_a_remix_of_its_variation_keeps_the_region(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        await bot.command("a lighthouse --count 2")
        grid = await shown(bot, "a lighthouse")
        parent = await done_job(bot, "a lighthouse")
        await bot.click(grid, "U2")
        upscaled: list[Message] = await bot.slack.until(
            lambda: [m for m in bot.slack.posted() if "upscaled" in str(m.blocks) and m.text.endswith(": done")])
        regions = upscaled[0].menu("Vary (Region)…")
        assert [o["text"]["text"] for o in regions["options"]] == REGION_LABELS

        await bot.click(upscaled[0], "Bottom left", menu="Vary (Region)…")
        [job] = await finished(bot, Kind.REGION)
        assert (job.parent_id, job.parent_index, job.region) == (parent.id, 1, REGIONS["bottom left"])

        varied = await bot.slack.until(lambda: [m for m in bot.slack.posted() if "Vary (Region," in
                                                m.blocks[0]["text"]["text"] and m.text.endswith(": done")])  # fmt: skip
        await bot.click(varied[0], "✏️ Remix")
        view = await opened(bot, 1)
        assert view["title"]["text"] == "Remix: Vary (Region)"
        await bot.submit(view, {"prompt": "a lighthouse at night"})
        remixed = await done_job(bot, "a lighthouse at night")
        assert (remixed.kind, remixed.parent_id, remixed.parent_index, remixed.region) == (
            Kind.REGION, parent.id, 1, REGIONS["bottom left"])

        await bot.click(varied[0], "ℹ️ Info")
        assert f"*Made from:* Vary (Region, bottom left) of image 2 of job `{parent.id}`" in await told(bot, 1)


async def test_a_job_from_a_picture_shows_its_first_preview_at_once(tmp_path: Path) -> None:
    slow = PictureGenerator(steps=4, step_delay=0.05)
    intervals = {"slack": {"update_interval_s": 30, "preview_interval_s": 30}}
    async with running_slack(tmp_path, generator=slow, sections=intervals) as bot:
        await bot.shortcut(bot.slack.share("cat.png", picture()), PICTURE_SHORTCUT)
        await bot.submit(await opened(bot, 1), {"prompt": "a cat"})
        done = await shown(bot, "a cat")
        previews = [f for f in bot.slack.files.values() if f.filename.startswith("preview-")]
        assert len(previews) == 1  # the first, at once; the next would wait 30 s
        assert any(b["type"] == "image" and b["slack_file"]["id"] == previews[0].id for e in done.edits for b in e)
