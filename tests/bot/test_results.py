"""Finished jobs' pictures: stored once, read back, and deleted by the retention policy, oldest first."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import BotSettings, ImageSettings
from bot.jobs import Done, Failed, Job, Options, Refused, Status, Strength
from bot.results import IMAGES_GONE, Results
from bot.store import Store
from tests.bot.helpers import png, requester, running, settings

pytestmark = pytest.mark.asyncio
DAY = 86400.0


async def finished(store: Store, results: Results, name: str, count: int, days_ago: float) -> Job:
    """A job done `days_ago` days ago with `count` pictures of 8 px."""
    job = Job(name, requester(), "a fox", Options(count, 5.0, 1.0), 7, time.time() - days_ago * DAY)
    await store.add_job(job)
    done, _ = await results.save(job, [png(i) for i in range(count)], [[i] * 16 for i in range(count)])
    done = replace(done, finished_at=time.time() - days_ago * DAY)
    await store.update_job(done)
    return done


async def test_a_lone_image_is_stored_once_and_is_its_own_grid(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as store:
        results = Results(store, ImageSettings())
        one = await finished(store, results, "one", 1, 0)
        four = await finished(store, results, "four", 4, 0)
        assert sorted(p.name for p in (tmp_path / "images" / "one").iterdir()) == ["0.png"]
        assert sorted(p.name for p in (tmp_path / "images" / "four").iterdir()) == [
            "0.png", "1.png", "2.png", "3.png", "grid.png"]  # fmt: skip
        event = await results.final_event(one)
        assert isinstance(event, Done) and event.grid == event.images[0] == png(0)
        assert isinstance(await results.final_event(four), Done)


async def test_pictures_older_than_keep_days_are_deleted_with_a_line_each_rows_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with await Store.open(tmp_path) as store:
        results = Results(store, ImageSettings())
        await finished(store, results, "old", 2, days_ago=40)
        recent = await finished(store, results, "recent", 2, days_ago=5)
        failed = Job("failed", requester(), "x", Options(1, 5.0, 1.0), 1, time.time() - 90 * DAY,
                     status=Status.FAILED, finished_at=time.time() - 90 * DAY, error="no")
        await store.add_job(failed)
        with caplog.at_level(logging.INFO, logger="bot.results"):
            assert await results.sweep(BotSettings(keep_days=30, max_data_gb=0)) == 1
        assert not (tmp_path / "images" / "old").exists() and (tmp_path / "images" / "recent").is_dir()
        [line] = [r.getMessage() for r in caplog.records]
        assert line.startswith("deleted the pictures of job old (0.0 MB): finished 40 days ago; bot.keep_days = 30")
        gone = await store.job("old")
        assert gone is not None and gone.status is Status.DONE and gone.removed_at is not None
        assert [i.tokens for i in await store.images("old")] == [[0] * 16, [1] * 16]  # variations still work
        assert await results.final_event(gone) == Failed("old", IMAGES_GONE)
        with pytest.raises(Refused, match="That image is no longer stored"):
            await results.upscaled((await store.images("old"))[0])
        assert await results.sweep(BotSettings(keep_days=30, max_data_gb=0)) == 0  # swept once
        assert await results.sweep(BotSettings(keep_days=0, max_data_gb=0)) == 0  # 0 keeps everything
        assert (await store.job("recent")) == recent and (await store.job("failed")) == failed


async def test_the_oldest_pictures_go_while_all_of_them_take_more_than_max_data_gb(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as store:
        results = Results(store, ImageSettings())
        for name, days in (("c", 1), ("a", 3), ("b", 2)):
            await finished(store, results, name, 4, days)
        size = sum(f.stat().st_size for f in (tmp_path / "images" / "a").iterdir())
        limit_gb = 2.5 * size / 2**30  # room for two of the three jobs' pictures
        assert await results.sweep(BotSettings(keep_days=0, max_data_gb=limit_gb)) == 1
        assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["b", "c"]  # the oldest, a, went


async def test_at_start_the_service_deletes_old_pictures_and_their_buttons_say_so(tmp_path: Path) -> None:
    async with running(settings(tmp_path)) as (service, _, store):
        job = await service.submit(requester(), "a fox", count=2)
        done = await job.final()
        assert isinstance(done, Done)
        stored = await store.job(job.job.id)
        assert stored is not None
        await store.update_job(replace(stored, finished_at=time.time() - 31 * DAY))
    async with running(settings(tmp_path)) as (service, fake, store):
        await service.delivered(job.job.id)
        for _ in range(100):  # the sweep runs in the background at start
            if (gone := await store.job(job.job.id)) is not None and gone.removed_at is not None:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(Refused, match="That image is no longer stored"):
            await service.upscale(requester(), job.job.id, 0)
        assert isinstance(await (await service.watch(job.job.id)).final(), Failed)
        varied = await service.vary(requester(), job.job.id, 1, Strength.SUBTLE)  # from the kept token grid
        assert isinstance(await varied.final(), Done) and fake.submitted[0].prefix is not None
