"""What the web adapter keeps of each job it follows: where it stands, not every event; no preview once finished."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.adapters.web.tracking import Tracked
from bot.jobs import Done, Progress, Queued, Started
from tests.bot.adapters.test_web import serving
from tests.bot.helpers import FakeGenerator, until

pytestmark = pytest.mark.asyncio


async def test_a_late_listener_hears_the_latest_position_start_progress_and_end(tmp_path: Path) -> None:
    fake = FakeGenerator(max_batch_images=4, steps=4, step_delay=0.01)
    fake.hold.clear()
    limits = {"max_queued_per_user": 20, "jobs_per_period": 20}
    async with serving(tmp_path, generator=fake, limits=limits) as web:
        jobs = [await web.imagine(count=4) for _ in range(12)]  # one runs, eleven wait
        last = jobs[-1]
        assert (await web.get(f"/api/jobs/{last}"))[1]["position"] == 11
        for job_id in jobs[1:8]:  # the last one moves up seven places: seven queued events
            status, _, _ = await web.post(f"/api/jobs/{job_id}/cancel", {"user": "ada"})
            assert status == 200
        tracked = web.adapter._tracker.get(last)
        assert tracked is not None
        await until(lambda: tracked.history[-1][1].get("position") == 4, "the last job to move up")
        assert [name for name, _ in tracked.history] == ["queued"]  # one position kept, not eight

        fake.hold.set()
        await until(lambda: tracked.ended, "the last job to run", timeout=30)
        stream = await web.events(last)  # a late listener
        assert [name for name, _ in stream] == ["queued", "started", "progress", "done"]
        assert stream[0][1]["position"] == 1 and stream[2][1]["percent"] == 100
        assert stream[2][1]["preview_url"] is None  # the preview is gone with the job done
        assert tracked.preview is None and len(tracked.history) == 4


async def test_a_finished_job_keeps_no_preview_bytes(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        job_id = await web.imagine(count=2)
        live = await web.events(job_id)
        assert any(data["preview_url"] for name, data in live if name == "progress")
        tracked = web.adapter._tracker.get(job_id)
        assert tracked is not None and tracked.preview is None
        _, job = await web.get(f"/api/jobs/{job_id}")
        assert job["preview_url"] is None and job["progress"] == 100
        status, body = await web.get(f"/api/jobs/{job_id}/preview.png")
        assert status == 404 and "see its grid_url" in body["error"]


async def test_ten_thousand_positions_keep_one_event() -> None:
    tracked = Tracked("j")
    for position in range(10_000, 0, -1):
        await tracked.record(Queued("j", position))
    await tracked.record(Started("j"))
    for percent in range(101):
        await tracked.record(Progress("j", percent, b"png" if percent % 10 == 0 else None))
    assert [(name, data.get("position", data.get("percent"))) for name, data in tracked.history] == [
        ("queued", 1), ("started", None), ("progress", 100)
    ]  # fmt: skip
    await tracked.record(Done("j", 1, b"grid", [b"png"]))
    assert tracked.preview is None and [name for name, _ in tracked.history][-1] == "done"


async def test_a_job_queued_again_after_a_restart_forgets_its_earlier_run() -> None:
    tracked = Tracked("j")
    for event in (Queued("j", 1), Started("j"), Progress("j", 40), Queued("j", 2)):
        await tracked.record(event)
    assert tracked.history == [("queued", {"job_id": "j", "position": 2})]
