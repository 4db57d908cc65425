from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from bot.jobs import (
    Cancelled,
    Described,
    Done,
    Event,
    Failed,
    Handle,
    Invalid,
    Job,
    Progress,
    Queued,
    Refused,
    Started,
    Status,
    Strength,
)
from bot.lifecycle import NOT_RECORDED, SAVE_FAILED
from bot.service import Service
from bot.store import Store
from tests.bot.helpers import OWNER, FakeClock, FakeGenerator, requester, running, running_pool, settings, until
from tests.bot.redis_server import RedisServer

pytestmark = pytest.mark.asyncio
Run = Callable[..., contextlib.AbstractAsyncContextManager[tuple[Service, FakeGenerator, Store]]]


@pytest.fixture(params=["local", "redis"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Run]:
    """`running` on this machine's queue, or on the Redis pool with one worker: the same tests for both."""
    if request.param == "local":
        yield running
        return
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    try:
        yield functools.partial(running_pool, url=server.url)
    finally:
        server.stop()


async def collect(handle: Handle) -> list[Event]:
    return [event async for event in handle]


async def test_a_job_streams_queued_started_progress_then_done(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path)) as (service, fake, store):
        handle = await service.submit(requester(), "a lighthouse at dusk", count=4, seed=7)
        events = await asyncio.wait_for(collect(handle), 5)
    assert events[0] == Queued(handle.job.id, 1)
    assert events[1] == Started(handle.job.id)
    assert [e.percent for e in events if isinstance(e, Progress)] == [25, 50, 75, 100]
    done = events[-1]
    assert isinstance(done, Done) and done.seed == 7 and len(done.images) == 4
    grid = Image.open(io.BytesIO(done.grid)).convert("RGB")
    assert grid.size == (18, 18)  # 2x2 of 8 px images, a gutter of 2 px between them
    assert {grid.getpixel((8, y)) for y in range(18)} == {(255, 255, 255)}  # so tiles of one colour stay apart
    assert fake.submitted[0].seed == 7 and fake.submitted[0].count == 4
    async with run(settings(tmp_path)) as (service, fake, store):
        job = await store.job(handle.job.id)
        assert job is not None and job.status is Status.DONE and job.grid_path
        stored = await store.images(job.id)
        assert [i.index for i in stored] == [0, 1, 2, 3] and all(i.seed == 7 for i in stored)
        assert stored[2].tokens == fake.tokens(fake_msg(handle.job.id, 7, 4), 2)
        assert (tmp_path / stored[0].path).read_bytes() == done.images[0]


def fake_msg(job_id: str, seed: int, count: int):  # type: ignore[no-untyped-def]
    from generator.protocol import Generate

    return Generate(job_id, "", count, 5.0, 1.0, seed)


async def test_options_default_from_config_and_bad_ones_are_refused_with_a_sentence(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path, defaults={"count": 2, "cfg": 3.0})) as (service, fake, _):
        handle = await service.submit(requester(), "a cat")
        await handle.final()
        assert (fake.submitted[0].count, fake.submitted[0].cfg, fake.submitted[0].temperature) == (2, 3.0, 1.0)
        with pytest.raises(Refused, match="count must be a whole number from 1 to 16; you gave 17"):
            await service.submit(requester(), "a cat", count=17)
        with pytest.raises(Refused, match="The prompt is empty"):
            await service.submit(requester(), "   ")
        with pytest.raises(Refused, match="temperature must be between 0 and 1.5"):
            await service.submit(requester(), "a cat", temperature=2)


async def test_count_above_the_generator_capacity_is_refused(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path), FakeGenerator(max_batch_images=8)) as (service, _, _):
        with pytest.raises(Refused, match="at most 8 images per job"):
            await service.submit(requester(), "a cat", count=9)


async def test_failed_job_says_why(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path)) as (service, _, store):
        handle = await service.submit(requester(), "please fail")
        final = await handle.final()
        assert final == Failed(handle.job.id, "The fake generator was told to fail.")
        job = await store.job(handle.job.id)
        assert job is not None and job.status is Status.FAILED and job.error == final.reason


async def test_each_job_that_ends_is_one_log_line(run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.lifecycle")
    async with run(settings(tmp_path)) as (service, fake, _):
        done = await service.submit(requester("alice"), "a cat", count=1)
        await done.final()
        failed = await service.submit(requester("bob"), "please fail", count=2)
        await failed.final()
        await service.admin.pause(OWNER)  # it never starts
        cancelled = await service.submit(requester("carol"), "a dog", count=2)
        await service.cancel(requester("carol"), cancelled.job.id)
        await cancelled.final()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("job ")]
    assert [level for level, _ in lines] == ["INFO", "WARNING", "INFO"]
    assert re.fullmatch(rf"job {done.job.id} \(imagine, 1 image, discord:alice\): done in \d+\.\ds "
                        rf"\(waited \d+\.\ds\)", lines[0][1])
    assert re.fullmatch(rf"job {failed.job.id} \(imagine, 2 images, discord:bob\): failed in \d+\.\ds "
                        rf"\(waited \d+\.\ds\): The fake generator was told to fail\.", lines[1][1])
    assert re.fullmatch(rf"job {cancelled.job.id} \(imagine, 2 images, discord:carol\): cancelled in \d+\.\ds",
                        lines[2][1])


async def test_cancel_waiting_and_running_jobs_owner_or_admin_only(run: Run, tmp_path: Path) -> None:
    fake = FakeGenerator(max_batch_images=1)
    fake.hold.clear()
    async with run(settings(tmp_path), fake) as (service, fake, store):
        first = await service.submit(requester("alice"), "one", count=1)
        await until(lambda: len(fake.submitted) == 1, "the first job to start")
        second = await service.submit(requester("bob"), "two", count=1)  # waits for the only slot
        with pytest.raises(Refused, match="Only the person who asked"):
            await service.cancel(requester("mallory"), second.job.id)
        await service.cancel(requester("bob"), second.job.id)
        assert await collect(second) == [Queued(second.job.id, 1), Cancelled(second.job.id)]
        await service.cancel(requester("carol", admin=True), first.job.id)  # a server admin
        fake.hold.set()
        assert await first.final() == Cancelled(first.job.id)
        assert fake.cancels == [first.job.id]
        assert [a.action for a in await store.audit_log("discord", "s1")] == ["cancel"]
        with pytest.raises(Refused, match="already finished"):
            await service.cancel(requester("alice"), first.job.id)
        statuses = [(await store.job(h.job.id)).status for h in (first, second)]  # type: ignore[union-attr]
        assert statuses == [Status.CANCELLED, Status.CANCELLED]


async def test_positions_are_reported_as_they_change(run: Run, tmp_path: Path) -> None:
    fake = FakeGenerator(max_batch_images=1, step_delay=0.05)  # slow enough for the pool's look every 0.05 s
    async with run(settings(tmp_path, limits={"max_queued_per_user": 5}), fake) as (service, _, _):
        await service.admin.pause(OWNER)
        handles = [await service.submit(requester(f"u{i}"), "x", count=1) for i in range(3)]
        await service.admin.resume(OWNER)
        events = [await asyncio.wait_for(collect(h), 5) for h in handles]
    queued = [[e.position for e in stream if isinstance(e, Queued)] for stream in events]
    assert queued == [[1], [2, 1], [3, 2, 1]]


async def test_reroll_keeps_the_prompt_and_picks_a_new_seed(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path)) as (service, fake, store):
        first = await service.submit(requester(), "a fox", count=2, cfg=7, seed=1)
        await first.final()
        again = await service.reroll(requester("bob"), first.job.id)
        await again.final()
        assert (fake.submitted[1].prompt, fake.submitted[1].count, fake.submitted[1].cfg) == ("a fox", 2, 7.0)
        assert fake.submitted[1].seed != 1
        job = await store.job(again.job.id)
        assert job is not None and job.parent_id == first.job.id and job.kind == "reroll"


@pytest.mark.parametrize(("strength", "rows"), [(Strength.SUBTLE, 3), (Strength.STRONG, 1)])
async def test_variation_keeps_the_top_rows_of_the_chosen_image(
    run: Run, tmp_path: Path, strength: Strength, rows: int
) -> None:
    async with run(settings(tmp_path)) as (service, fake, store):
        first = await service.submit(requester(), "a fox", count=4, seed=100)
        await first.final()
        varied = await service.vary(requester(), first.job.id, 2, strength)
        assert isinstance(await varied.final(), Done)
        source = (await store.images(first.job.id))[2].tokens
        msg = fake.submitted[1]
        assert msg.prefix == [source[: rows * 4]] * 4  # grid 4x4: 75% = 3 rows, 25% = 1 row
        assert msg.seed != 100
        stored = await store.images(varied.job.id)
        assert all(image.tokens[: rows * 4] == source[: rows * 4] for image in stored)
        with pytest.raises(Refused, match="images 1 to 4"):
            await service.vary(requester(), first.job.id, 4, strength)


async def test_a_negative_prompt_goes_with_the_job_its_rerolls_and_variations_and_a_remix_changes_it(
    run: Run, tmp_path: Path
) -> None:
    async with run(settings(tmp_path)) as (service, fake, store):
        first = await service.submit(requester(), "a fox", count=2, negative="  blurry, text ")
        assert isinstance(await first.final(), Done)
        assert fake.submitted[0].negative == "blurry, text"
        stored = await store.job(first.job.id)
        assert stored is not None and stored.options.negative == "blurry, text" and stored.model == "fake"
        await (await service.reroll(requester("bob"), first.job.id)).final()
        await (await service.vary(requester("bob"), first.job.id, 1, Strength.SUBTLE)).final()
        assert [m.negative for m in fake.submitted[1:]] == ["blurry, text", "blurry, text"]
        remixed = await service.reroll(requester("bob"), first.job.id, prompt="a red fox", negative="snow")
        await remixed.final()
        varied = await service.vary(requester("bob"), first.job.id, 0, Strength.STRONG, prompt="a fox at night",
                                    negative="")  # an empty negative drops it
        await varied.final()
        assert [(m.prompt, m.negative) for m in fake.submitted[3:]] == [("a red fox", "snow"), ("a fox at night", None)]
        assert fake.submitted[4].prefix == [(await store.images(first.job.id))[0].tokens[:4]] * 2  # the kept row
        plain = await service.submit(requester(), "a cat", count=1)
        await plain.final()
        assert fake.submitted[-1].negative is None  # without one, the unconditional rows stay as they were
        with pytest.raises(Refused, match="The negative prompt is 1001 characters long; keep it under 1000"):
            await service.submit(requester(), "a cat", negative="x" * 1001)
        with pytest.raises(Refused, match="The prompt is empty"):
            await service.reroll(requester(), first.job.id, prompt="  ")


async def test_delete_leaves_a_tombstone_for_the_owner_or_an_admin_and_old_buttons_say_so(
    run: Run, tmp_path: Path
) -> None:
    async with run(settings(tmp_path)) as (service, fake, store):
        first = await service.submit(requester("alice"), "a fox", count=2)
        await first.final()
        with pytest.raises(Refused, match="Only the person who asked for that job, or an admin, can delete it"):
            await service.delete(requester("mallory"), first.job.id)
        deleted = await service.delete(requester("alice"), first.job.id)
        assert deleted.deleted and deleted.deleted_by == "discord:alice"
        assert not (tmp_path / "images" / first.job.id).exists() and await store.images(first.job.id) == []
        stored = await store.job(first.job.id)
        assert stored is not None and stored.deleted and stored.status is Status.DONE  # the tombstone
        for press in (service.reroll(requester("bob"), first.job.id), service.upscale(requester(), first.job.id, 0),
                      service.vary(requester(), first.job.id, 1, Strength.SUBTLE)):
            with pytest.raises(Refused, match="That job was deleted; start a new one with /imagine"):
                await press
        assert await (await service.watch(first.job.id)).final() == Failed(first.job.id, "This job was deleted.")
        with pytest.raises(Refused, match="already deleted"):
            await service.delete(requester("alice"), first.job.id)
        second = await service.submit(requester("carol"), "a cat", count=1)
        await second.final()
        await service.delete(requester("boss", admin=True), second.job.id)  # a server admin, audited
        [entry] = await store.audit_log("discord", "s1")
        assert (entry.action, entry.actor, entry.detail) == ("delete", "boss", {"job_id": second.job.id,
                                                                               "user": "carol"})
        await service.admin.pause(OWNER)
        waiting = await service.submit(requester("alice"), "a dog", count=1)
        with pytest.raises(Refused, match="still being made; cancel it first"):
            await service.delete(requester("alice"), waiting.job.id)
        await service.admin.resume(OWNER)
        await waiting.final()


async def test_channel_rules_keep_the_bot_to_the_channels_a_servers_admins_choose(run: Run, tmp_path: Path) -> None:
    admin = requester("boss", admin=True)
    async with run(settings(tmp_path)) as (service, _, store):
        first = await service.submit(requester(), "a fox", count=1)  # everywhere by default
        await first.final()
        with pytest.raises(Refused, match="Only server admins"):
            await service.admin.set_channels(requester(), ["c2"])
        await service.admin.set_channels(admin, ["c2", "c3", "c2"])
        assert service.admin.channels(admin) == ["c2", "c3"]
        with pytest.raises(Refused, match=r"^The bot works only in <#c2>, <#c3> here; use it there\.$"):
            await service.submit(requester(), "a fox")  # requester() asks in channel c1
        with pytest.raises(Refused, match="works only in"):
            await service.reroll(requester(), first.job.id)
        elsewhere = replace(requester(), channel="c3")
        await (await service.submit(elsewhere, "a fox", count=1)).final()
        await (await service.submit(requester(server="s2"), "a fox", count=1)).final()  # another server's rules
        with pytest.raises(Refused, match="as the platform names them"):
            await service.admin.set_channels(admin, ["<#c1>;drop"])
        await service.admin.set_channels(admin, [])
        await (await service.submit(requester(), "a fox", count=1)).final()
        assert [a.action for a in await store.audit_log("discord", "s1")] == ["channels-clear", "channels"]


async def test_history_pages_through_ones_own_jobs_newest_first_and_admins_see_everyones(
    run: Run, tmp_path: Path
) -> None:
    async with run(settings(tmp_path, limits={"jobs_per_period": 100, "max_queued_per_user": 10})) as (service, _, _):
        mine = [await service.submit(requester("alice"), f"mine {i}", count=1) for i in range(5)]
        theirs = await service.submit(requester("bob"), "theirs", count=1)
        await service.submit(requester("carol", platform="slack"), "elsewhere", count=1)
        first = await service.history(requester("alice"), limit=3)
        assert [j.prompt for j in first] == ["mine 4", "mine 3", "mine 2"]
        rest = await service.history(requester("alice"), before=first[-1].created_at, limit=3)
        assert [j.prompt for j in rest] == ["mine 1", "mine 0"]
        with pytest.raises(Refused, match="Only server admins"):
            await service.history(requester("alice"), everyone=True)
        everyone = await service.history(requester("boss", admin=True), everyone=True)
        assert [j.id for j in everyone] == [theirs.job.id, *[h.job.id for h in reversed(mine)]]  # Discord's only


def picture(width: int = 64, height: int = 48, kind: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format=kind)
    return out.getvalue()


async def test_an_image_prompt_sends_the_picture_and_region_and_keeps_the_picture_with_the_job(
    run: Run, tmp_path: Path
) -> None:
    async with run(settings(tmp_path)) as (service, fake, store):
        first = await service.submit(requester(), "a red fox", count=2, image=picture(), region=(0, 0, 0.5, 1))
        assert isinstance(await first.final(), Done)
        sent = fake.submitted[0]
        assert sent.region == [0.0, 0.0, 0.5, 1.0] and sent.codes is None and sent.prefix is None
        assert Image.open(io.BytesIO(sent.image or b"")).format == "PNG"  # the picture as checked, a plain PNG
        stored = await store.job(first.job.id)
        assert stored is not None and stored.source == f"images/{first.job.id}/source.png"
        assert (tmp_path / stored.source).read_bytes() == sent.image
        again = await service.reroll(requester("bob"), first.job.id)  # the same picture and region, a new seed
        await again.final()
        assert (fake.submitted[1].image, fake.submitted[1].region) == (sent.image, sent.region)
        plain = await service.submit(requester(), "a fox", count=1, image=picture(kind="PNG"))  # no region:
        await plain.final()
        assert fake.submitted[2].region == [0.0, 0.5, 1.0, 1.0]  # the bottom half
        await service.delete(requester(), first.job.id)
        assert not (tmp_path / stored.source).exists()  # the picture went with its job
        failing = await service.submit(requester(), "please fail", count=1, image=picture())
        assert isinstance(await failing.final(), Failed)
        assert (tmp_path / f"images/{failing.job.id}/source.png").exists()
        await service.delete(requester(), failing.job.id)  # a failed job's picture goes too
        assert not (tmp_path / f"images/{failing.job.id}").exists()


UPLOADS = {
    "not-a-picture": (lambda: b"GIF89a not really", "That file is not a picture; send a PNG, JPEG, WebP or GIF."),
    "bmp": (lambda: picture(kind="BMP"), "That is a BMP file; send a PNG, JPEG, WebP or GIF."),
    "bomb": (lambda: picture(9000, 6000, "PNG"),  # a few KB of PNG that unpacks to 54 megapixels
             "That picture is 9000x6000 pixels; send one of at most 40 megapixels."),
    "too-big": (lambda: b"\x89PNG" + b"x" * (11 << 20), "That file is 11.0 MB; send a picture of at most 10 MB."),
}


@pytest.mark.parametrize("upload", list(UPLOADS))
async def test_uploads_are_told_by_content_and_sized_before_they_are_decoded(
    run: Run, tmp_path: Path, upload: str
) -> None:
    make, said = UPLOADS[upload]
    async with run(settings(tmp_path)) as (service, fake, _):
        with pytest.raises(Refused) as refused:
            await service.submit(requester(), "a fox", image=make())
        assert str(refused.value) == said and fake.submitted == []


async def test_regions_are_four_fractions_inside_the_picture(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path)) as (service, _, _):
        with pytest.raises(Refused, match="A region says which part of a picture to make again; send the picture"):
            await service.submit(requester(), "a fox", region=(0, 0, 1, 1))
        for region, said in (((0, 0.5, 1.2, 1), "is not inside the picture or is empty"),
                             ((0.5, 0, 0.5, 1), "is not inside the picture or is empty"),
                             (("a", 0, 1, 1), "A region is four numbers x0,y0,x1,y1 from 0 to 1"),
                             ((0, 1), "A region is four numbers")):
            with pytest.raises(Refused, match=said):
                await service.submit(requester(), "a fox", image=picture(), region=region)


async def test_vary_region_sends_the_images_token_grid_and_a_remix_keeps_the_region(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path)) as (service, fake, store):
        first = await service.submit(requester(), "a fox", count=4)
        await first.final()
        varied = await service.vary_region(requester("bob"), first.job.id, 2, (0.25, 0.25, 0.75, 0.75))
        assert isinstance(await varied.final(), Done)
        sent = fake.submitted[1]
        assert sent.codes == (await store.images(first.job.id))[2].tokens and sent.region == [0.25, 0.25, 0.75, 0.75]
        job = await store.job(varied.job.id)
        assert job is not None and (job.kind, job.parent_index, job.region) == ("region", 2, (0.25, 0.25, 0.75, 0.75))
        remixed = await service.remix(requester("bob"), varied.job.id, "a fox in a hat", None)
        await remixed.final()
        assert (fake.submitted[2].prompt, fake.submitted[2].region, fake.submitted[2].codes) == (
            "a fox in a hat", sent.region, sent.codes)
        rerolled = await service.reroll(requester("carol"), remixed.job.id)  # the same part, a new seed
        await rerolled.final()
        again = fake.submitted[3]
        assert (again.prompt, again.region, again.codes) == ("a fox in a hat", sent.region, sent.codes)
        assert again.seed != fake.submitted[2].seed
        with pytest.raises(Refused, match="That job has images 1 to 4"):
            await service.vary_region(requester(), first.job.id, 4, (0, 0, 1, 1))


DEMO_TOKENIZER = str(Path(__file__).parents[2] / "generator" / "demo_model" / "tokenizer.json")


async def test_a_prompt_too_long_for_the_model_is_refused_up_front(tmp_path: Path) -> None:
    fake = FakeGenerator(prompt_tokens=40, tokenizer=DEMO_TOKENIZER)  # what a generator's Ready says
    async with running(settings(tmp_path), fake) as (service, fake, _):
        with pytest.raises(Invalid, match=r"^The prompt is too long for this model \(\d+ tokens, at most 38\); "
                                          r"shorten it\.$"):
            await service.submit(requester(), "a large red circle at the top on a blue background " * 4)
        with pytest.raises(Invalid, match="The negative prompt is too long for this model"):
            await service.submit(requester(), "a fox", negative="blurry and dark " * 20)
        assert fake.submitted == []  # refused before it waited in the queue
        await (await service.submit(requester(), "a large red circle at the top on a blue background")).final()


async def test_describe_reads_a_picture_or_a_results_image_through_the_queue(run: Run, tmp_path: Path) -> None:
    config = settings(tmp_path, describe={"temperature": 0.5, "instruction": "Say what you see."})
    async with run(config) as (service, fake, store):
        handle = await service.describe(requester(), image=picture(), count=3)
        events = [event async for event in handle]
        assert [type(e) for e in events] == [Queued, Started, Described]
        final = events[-1]
        assert isinstance(final, Described) and final.prompts == [f"a fake prompt {final.seed + i}" for i in range(3)]
        sent = fake.described[0]
        assert (sent.count, sent.temperature, sent.instruction, sent.max_tokens) == (3, 0.5, "Say what you see.", 64)
        assert Image.open(io.BytesIO(sent.image)).format == "PNG" and fake.submitted == []  # read, not drawn
        job = await store.job(handle.job.id)
        assert job is not None and job.kind == "describe" and job.prompts == tuple(final.prompts)
        assert await store.prompt_tokens(job.id) == [[final.seed + i, i] for i in range(3)]  # the raw ids kept
        assert await (await service.watch(job.id)).final() == final  # a late listener gets the prompts
        drawn = await service.submit(requester(), "a fox", count=2)
        await drawn.final()
        again = await service.describe(requester("bob"), job_id=drawn.job.id, index=1, count=1)  # a result's image
        await again.final()
        assert fake.described[1].image == (tmp_path / f"images/{drawn.job.id}/1.png").read_bytes()
        for wrong, said in (({"count": 9}, "count must be a whole number from 1 to 8"),
                            ({}, "Send the picture to describe, or name a job and image"),
                            ({"image": b"not a picture"}, "That file is not a picture")):
            with pytest.raises(Refused, match=said):
                await service.describe(requester(), **wrong)  # type: ignore[arg-type]
        usage = {u.user: (u.jobs, u.images) for u in await service.admin.usage(requester("boss", admin=True))}
        assert usage["alice"] == (2, 2)  # a describe counts as a job, drawing no images
        no_images = "has no images of its own"
        for button in (service.reroll(requester(), job.id), service.remix(requester(), job.id, "a fox", None),
                       service.vary(requester(), job.id, 0, Strength.SUBTLE), service.upscale(requester(), job.id, 0),
                       service.vary_region(requester(), job.id, 0, "top half"),
                       service.describe(requester(), job_id=job.id, index=0)):
            with pytest.raises(Refused, match=no_images):
                await button
        assert (await service.job(job.id)).prompts == job.prompts  # its details still show


async def test_upscale_is_lanczos_in_the_bot_at_the_configured_size(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path, images={"upscale_px": 64})) as (service, fake, store):
        first = await service.submit(requester(), "a fox", count=4, seed=3)
        done = await first.final()
        assert isinstance(done, Done)
        up = await service.upscale(requester(), first.job.id, 1)
        events = await collect(up)
        assert [type(e) for e in events] == [Started, Done]
        final = events[-1]
        assert isinstance(final, Done)
        image = Image.open(io.BytesIO(final.images[0]))
        assert image.size == (64, 64)
        assert image.getpixel((10, 10)) == Image.open(io.BytesIO(done.images[1])).convert("RGB").getpixel((1, 1))
        assert len(fake.submitted) == 1  # the generator was not involved
        stored = await store.images(up.job.id)
        assert stored[0].tokens == (await store.images(first.job.id))[1].tokens


async def test_rate_limit_refusal_says_when_to_try_again(tmp_path: Path) -> None:
    clock = FakeClock()
    config = settings(tmp_path, limits={"jobs_per_period": 2, "period_s": 60, "max_queued_per_user": 10})
    async with running(config, clock=clock) as (service, _, _):
        for _ in range(2):
            await (await service.submit(requester(), "a")).final()
        with pytest.raises(Refused, match="You can start 2 jobs every 60 seconds; try again in 30 seconds") as info:
            await service.submit(requester(), "a")
        assert info.value.retry_after == pytest.approx(30)
        await (await service.submit(requester("bob"), "a")).final()  # others are not affected
        with pytest.raises(Refused, match="You can start 2 jobs"):  # server admins are not exempt
            await service.submit(requester(admin=True), "a")
        await (await service.submit(OWNER, "a")).final()  # the bot's admins are
        clock.advance(30)
        await (await service.submit(requester(), "a")).final()


async def test_every_button_counts_against_the_pressers_limits_upscales_in_a_bucket_of_their_own(
    run: Run, tmp_path: Path
) -> None:
    config = settings(tmp_path, limits={"jobs_per_period": 3, "period_s": 600, "max_queued_per_user": 10})
    async with run(config) as (service, fake, _):
        first = await service.submit(requester("alice"), "a fox", count=2)
        await first.final()
        await (await service.reroll(requester("bob"), first.job.id)).final()  # bob's first job
        await (await service.vary(requester("bob"), first.job.id, 0, Strength.SUBTLE)).final()  # his second
        for index in (0, 1, 0):  # made in the bot, not the generator: upscales have their own bucket
            await (await service.upscale(requester("bob"), first.job.id, index)).final()
        with pytest.raises(Refused, match="You can make 3 upscales every 10 minutes; try again in 4 minutes"):
            await service.upscale(requester("bob"), first.job.id, 1)
        await (await service.reroll(requester("bob"), first.job.id)).final()  # his third job
        with pytest.raises(Refused, match="You can start 3 jobs every 10 minutes"):
            await service.vary(requester("bob"), first.job.id, 1, Strength.STRONG)
        await (await service.reroll(requester("alice"), first.job.id)).final()  # alice has her own buckets
        await (await service.upscale(requester("alice"), first.job.id, 1)).final()
        await (await service.upscale(OWNER, first.job.id, 1)).final()  # the bot's admins are exempt
        assert len(fake.submitted) == 5


async def test_an_upscale_counts_as_a_running_job_while_it_is_made(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run(settings(tmp_path, limits={"max_running_per_user": 1})) as (service, _, _):
        first = await service.submit(requester("alice"), "a fox", count=2)
        await first.final()
        gate = asyncio.Event()
        upscaled = service._results.upscaled

        async def slow(image: object) -> bytes:
            await gate.wait()
            return await upscaled(image)  # type: ignore[arg-type]

        monkeypatch.setattr(service._results, "upscaled", slow)
        making = await service.upscale(requester("bob"), first.job.id, 0)
        with pytest.raises(Refused, match="Your last upscale is still being made; try again in a moment") as refused:
            await service.upscale(requester("bob"), first.job.id, 1)
        assert refused.value.retry_after == 5
        other = await service.upscale(requester("carol"), first.job.id, 1)  # others are not held up
        gate.set()
        assert isinstance(await making.final(), Done) and isinstance(await other.final(), Done)
        await (await service.upscale(requester("bob"), first.job.id, 1)).final()


async def test_max_queued_per_user_and_global_queue_cap(run: Run, tmp_path: Path) -> None:
    config = settings(tmp_path, limits={"max_queued_per_user": 2, "queue_cap": 3, "server_share": 1.0})
    async with run(config) as (service, _, _):
        await service.admin.pause(OWNER)
        await service.submit(requester("a"), "x")
        await service.submit(requester("a"), "x")
        with pytest.raises(Refused, match="You already have 2 jobs waiting; try again when one of them starts"):
            await service.submit(requester("a"), "x")
        await service.submit(requester("b"), "x")
        with pytest.raises(Refused, match=r"The queue is full \(3 jobs waiting\); try again in about a minute"):
            await service.submit(requester("c"), "x")
        with pytest.raises(Refused, match="queue is full"):
            await service.submit(requester("c", admin=True), "x")


async def test_each_server_gets_at_most_its_share_of_the_queue(run: Run, tmp_path: Path) -> None:
    config = settings(tmp_path, limits={"queue_cap": 10, "server_share": 0.4, "max_queued_per_user": 10})
    async with run(config) as (service, _, _):
        await service.admin.pause(OWNER)
        for user in ("a", "b", "c", "d"):  # four users of one server fill its share: 4 of 10
            await service.submit(requester(user, server="big"), "x")
        for who in (requester("e", server="big"), requester("boss", server="big", admin=True)):
            with pytest.raises(Refused, match="This server already has 4 jobs waiting, its share of the queue; "
                                              "try again in about a minute") as refused:
                await service.submit(who, "x")
            assert refused.value.retry_after == 60
        for user in ("f", "g", "h", "i"):  # another server's users still get in, up to their own share
            await service.submit(requester(user, server="small"), "x")
        await service.admin.resume(OWNER)


async def test_server_admins_may_tighten_the_bots_limits_not_loosen_them(run: Run, tmp_path: Path) -> None:
    admin = requester("boss", admin=True)
    async with run(settings(tmp_path, limits={"jobs_per_period": 5, "max_queued_per_user": 2})) as (service, _, _):
        with pytest.raises(Refused, match=r"limits.jobs_per_period can be at most 5 here \(the bot's own limit\); "
                                          r"you gave 500\."):
            await service.admin.set_setting(admin, "limits.jobs_per_period", 500)
        with pytest.raises(Refused, match="limits.max_queued_per_user can be at most 2 here"):
            await service.admin.set_setting(admin, "limits.max_queued_per_user", 3)
        with pytest.raises(Refused, match="limits.period_s can be at least 600 here"):
            await service.admin.set_setting(admin, "limits.period_s", 1)
        with pytest.raises(Refused, match="limits.server_share is not a setting you can change here"):
            await service.admin.set_setting(admin, "limits.server_share", 1.0)
        await service.admin.set_setting(admin, "limits.jobs_per_period", 1)  # stricter is fine
        await (await service.submit(requester("u"), "x")).final()
        with pytest.raises(Refused, match="You can start 1 jobs every 10 minutes"):
            await service.submit(requester("u"), "x")
        await service.admin.set_setting(OWNER, "limits.jobs_per_period", 50)  # the bot's admins may loosen
        assert service.admin.server_settings(admin)["limits.jobs_per_period"] == 50


async def test_max_running_per_user(run: Run, tmp_path: Path) -> None:
    fake = FakeGenerator(max_batch_images=16)
    fake.hold.clear()
    config = settings(tmp_path, limits={"max_running_per_user": 2, "max_queued_per_user": 5})
    async with run(config, fake) as (service, fake, _):
        handles = [await service.submit(requester("a"), "x", count=1) for _ in range(4)]
        await until(lambda: len(fake.submitted) == 2, "two jobs to start")
        await asyncio.sleep(0.3)  # and no third, however long the first two take
        assert len(fake.submitted) == 2
        fake.hold.set()
        for handle in handles:
            await handle.final()
        assert len(fake.submitted) == 4


async def test_bans_are_per_server_and_audited(run: Run, tmp_path: Path) -> None:
    admin = requester("boss", admin=True)
    async with run(settings(tmp_path)) as (service, _, store):
        with pytest.raises(Refused, match="Only server admins can do that"):
            await service.admin.ban(requester("alice"), "bob")
        await service.admin.ban(admin, "bob", "spam")
        with pytest.raises(Refused, match=r"You are banned from making images here \(spam\)"):
            await service.submit(requester("bob"), "x")
        await (await service.submit(requester("bob", server="s2"), "x")).final()  # another server
        assert [b.user for b in service.admin.bans(admin)] == ["bob"]
    async with run(settings(tmp_path)) as (service, _, store):  # bans survive restarts
        with pytest.raises(Refused, match="banned"):
            await service.submit(requester("bob"), "x")
        await service.admin.unban(admin, "bob")
        await (await service.submit(requester("bob"), "x")).final()
        log = await store.audit_log("discord", "s1")
        assert [(a.action, a.actor, a.detail) for a in log] == [
            ("unban", "boss", {"user": "bob"}),
            ("ban", "boss", {"user": "bob", "reason": "spam"}),
        ]


async def test_blocklist_from_config_and_admins(run: Run, tmp_path: Path) -> None:
    admin = requester("boss", admin=True)
    async with run(settings(tmp_path, blocklist={"words": ["gore"]})) as (service, _, store):
        with pytest.raises(Refused, match='Your prompt contains "GORE", which is not allowed here; rephrase it'):
            await service.submit(requester(), "lots of GORE please")
        await (await service.submit(requester(), "a gorennial plant")).final()  # whole words only
        await service.admin.block(admin, r"blood\w*", regex=True)
        with pytest.raises(Refused, match='contains "Bloody"'):
            await service.submit(requester(), "a Bloody sunset")
        await (await service.submit(requester(server="s2"), "a bloody sunset")).final()
        with pytest.raises(Refused, match="is not a regular expression"):
            await service.admin.block(admin, "(", regex=True)
        with pytest.raises(Refused, match="would block every prompt"):
            await service.admin.block(admin, ".*", regex=True)
        with pytest.raises(Refused, match=r"no backreferences or lookaround\); fix it and try again\.$"):
            await service.admin.block(admin, r"(x)\1", regex=True)
        await service.admin.block(admin, "(a+)+$", regex=True)  # hours for Python's re on the prompt below
        assert isinstance(await (await service.submit(requester(), "a" * 40 + "!", count=1)).final(), Done)
        await service.admin.unblock(admin, r"blood\w*")
        await (await service.submit(requester(), "a bloody sunset")).final()
        assert [a.action for a in await store.audit_log("discord", "s1")] == ["unblock", "block", "block"]


async def test_admin_overrides_are_per_server_validated_and_audited(run: Run, tmp_path: Path) -> None:
    admin = requester("boss", admin=True)
    async with run(settings(tmp_path)) as (service, fake, store):
        await service.admin.set_setting(admin, "defaults.count", 1)
        await service.admin.set_setting(admin, "limits.max_queued_per_user", 1)
        with pytest.raises(Refused, match="defaults.count input should be less than or equal to 16; you gave 40"):
            await service.admin.set_setting(admin, "defaults.count", 40)
        with pytest.raises(Refused, match="limits.queue_cap is not a setting you can change here"):
            await service.admin.set_setting(admin, "limits.queue_cap", 5)
        with pytest.raises(Refused, match="Only server admins"):
            await service.admin.set_setting(requester(), "defaults.count", 2)
        await (await service.submit(requester(), "x")).final()
        await (await service.submit(requester(server="s2"), "x")).final()
        assert [m.count for m in fake.submitted] == [1, 4]
        view = service.admin.server_settings(admin)
        assert view["defaults.count"] == 1 and view["limits.max_queued_per_user"] == 1 and view["defaults.cfg"] == 5
    async with run(settings(tmp_path)) as (service, fake, store):  # overrides survive restarts
        assert service.policy.defaults(requester()).count == 1
        await service.admin.set_setting(admin, "defaults.count", None)
        assert service.policy.defaults(requester()).count == 4
        log = await store.audit_log("discord", "s1")
        assert [(a.action, a.detail) for a in log] == [
            ("set", {"key": "defaults.count", "to": None}),
            ("set", {"key": "limits.max_queued_per_user", "to": 1}),
            ("set", {"key": "defaults.count", "to": 1}),
        ]


async def test_pause_resume_queue_list_and_usage(run: Run, tmp_path: Path) -> None:
    admin = requester("boss", admin=True)
    async with run(settings(tmp_path)) as (service, fake, store):
        with pytest.raises(Refused, match="Only the bot's admins"):
            await service.admin.pause(admin)
        await service.admin.pause(OWNER)
        handles = [await service.submit(requester(u), "x", count=2) for u in ("a", "b")]
        other = await service.submit(requester("c", server="s2"), "x")
        assert [(s.job.id, s.position) for s in service.admin.queue(admin)] == [
            (h.job.id, i) for i, h in enumerate(handles, 1)
        ]
        assert len(service.admin.queue(OWNER)) == 3
        assert fake.submitted == []
        await service.admin.resume(OWNER)
        for handle in [*handles, other]:
            await handle.final()
        usage = await service.admin.usage(admin)
        assert [(u.user, u.jobs, u.images) for u in usage] == [("a", 1, 2), ("b", 1, 2)]
        assert [a.action for a in await store.audit_log("discord", "s1")] == ["resume", "pause"]


async def test_restart_requeues_unfinished_jobs_and_hands_over_undelivered_ones(run: Run, tmp_path: Path) -> None:
    fake = FakeGenerator(max_batch_images=1)
    fake.hold.clear()
    async with run(settings(tmp_path)) as (service, _, _):
        done = await service.submit(requester("a"), "finished before", count=1)
        await done.final()
        delivered = await service.submit(requester("a"), "delivered", count=1)
        await delivered.final()
        await service.delivered(delivered.job.id)
    async with run(settings(tmp_path), fake) as (service, _, _):
        running_job = await service.submit(requester("a"), "running", count=1)
        await until(lambda: len(fake.submitted) == 1, "the first job to start")
        waiting = await service.submit(requester("b"), "waiting", count=1)
        await asyncio.sleep(0.2)
        assert [m.job_id for m in fake.submitted] == [running_job.job.id]
    recovered: list[Handle] = []

    async def hook(handle: Handle) -> None:
        recovered.append(handle)

    fresh = FakeGenerator()
    async with run(settings(tmp_path), fresh, on_recovered=hook) as (service, _, store):
        await asyncio.sleep(0)
        finals = {h.job.id: await asyncio.wait_for(h.final(), 5) for h in recovered}
        assert set(finals) == {done.job.id, running_job.job.id, waiting.job.id}
        assert all(isinstance(f, Done) for f in finals.values())
        assert sorted(m.job_id for m in fresh.submitted) == sorted([running_job.job.id, waiting.job.id])
        assert [m.seed for m in fresh.submitted if m.job_id == waiting.job.id] == [waiting.job.seed]  # same seed
        for handle in recovered:
            await service.delivered(handle.job.id)
        assert await store.undelivered() == []


async def test_a_write_that_fails_ends_the_job_with_a_reason_and_frees_its_slot(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = settings(tmp_path, limits={"max_running_per_user": 1, "max_queued_per_user": 5})
    async with run(config, FakeGenerator(max_batch_images=1)) as (service, fake, store):
        finish_job = store.finish_job

        async def disk_full(job: Job, images: list[Image]) -> None:  # for the fox only
            if job.prompt == "a fox":
                raise OSError(28, "No space left on device")
            await finish_job(job, images)

        monkeypatch.setattr(store, "finish_job", disk_full)
        first = await service.submit(requester("alice"), "a fox", count=1)
        second = await service.submit(requester("alice"), "a cat", count=1)  # needs the first one's slot
        assert await asyncio.wait_for(first.final(), 10) == Failed(first.job.id, SAVE_FAILED)
        assert (await store.job(first.job.id)).status is Status.FAILED  # type: ignore[union-attr]
        assert isinstance(await asyncio.wait_for(second.final(), 10), Done)

        async def locked(job: object) -> None:
            raise sqlite3.OperationalError("database is locked")

        await service.admin.pause(OWNER)
        third = await service.submit(requester("alice"), "a dog", count=1)
        monkeypatch.setattr(store, "update_job", locked)
        await service.cancel(requester("alice"), third.job.id)
        assert await asyncio.wait_for(third.final(), 10) == Failed(third.job.id, NOT_RECORDED)
        monkeypatch.undo()
        assert (await store.job(third.job.id)).status is Status.QUEUED  # type: ignore[union-attr]
    async with run(config) as (service, fake, store):  # the next start finds it unfinished and settles it
        final = await asyncio.wait_for((await service.watch(third.job.id)).final(), 10)
        if run is running:  # this machine's queue forgot the job with the process: it runs again
            assert isinstance(final, Done) and [m.job_id for m in fake.submitted] == [third.job.id]
        else:  # the pool kept the cancel, which now reaches the store
            assert final == Cancelled(third.job.id) and fake.submitted == []
        assert (await store.job(third.job.id)).status is (Status.DONE if run is running else Status.CANCELLED)  # type: ignore[union-attr]


async def test_shutdown_refuses_new_jobs(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path)) as (service, _, _):
        pass
    with pytest.raises(Refused, match="restarting; try again in a minute"):
        await service.submit(requester(), "x")


async def test_generator_stream_ending_fails_running_jobs_with_a_reason(tmp_path: Path) -> None:
    fake = FakeGenerator()
    fake.hold.clear()
    async with running(settings(tmp_path), fake) as (service, _, _):
        handle = await service.submit(requester(), "x")
        await asyncio.sleep(0.01)
        fake._events.put_nowait(None)  # the generator went away for good
        final = await asyncio.wait_for(handle.final(), 5)
        assert isinstance(final, Failed) and "stopped before finishing" in final.reason


async def test_status_and_watch(run: Run, tmp_path: Path) -> None:
    async with run(settings(tmp_path)) as (service, _, _):
        await service.admin.pause(OWNER)
        first = await service.submit(requester("a"), "x")
        second = await service.submit(requester("b"), "y")
        status = await service.status(second.job.id)
        assert status is not None and status.position == 2 and status.job.status is Status.QUEUED
        watcher = await service.watch(second.job.id)
        await service.admin.resume(OWNER)
        assert await watcher.final() == await second.final()
        await first.final()
        status = await service.status(first.job.id)
        assert status is not None and status.position is None and status.job.status is Status.DONE
        again = await service.watch(first.job.id)
        assert [type(e) for e in await collect(again)] == [Done]
        (tmp_path / (await service.status(first.job.id)).job.grid_path).unlink()  # type: ignore[union-attr, operator]
        assert isinstance(await (await service.watch(first.job.id)).final(), Failed)
        assert await service.status("nope") is None
        with pytest.raises(Refused, match="no longer exists"):
            await service.watch("nope")
