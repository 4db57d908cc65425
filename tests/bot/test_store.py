from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs import Image, Job, Options, Requester, Status
from bot.store import MIGRATIONS, SCHEMA_VERSION, AuditEntry, Ban, Store, migrate

pytestmark = pytest.mark.asyncio

V1_JOB = (
    "INSERT INTO jobs (id, platform, server, channel, user, is_admin, prompt, count, cfg, temperature, "
    "requested_seed, seed, kind, status, created_at) VALUES (?, 'discord', 's', 'c', 'u', 0, 'a cat', 4, 5, 1, "
    "NULL, 42, 'imagine', ?, ?)"
)


async def test_migrates_a_version_1_database_keeping_its_jobs(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "janus-bot.db", isolation_level=None) as db:
        assert await migrate(db, 1) == 1
        await db.execute(V1_JOB, ("old-done", "done", 1.0))
        await db.execute(V1_JOB, ("old-queued", "queued", 2.0))
        await db.execute("INSERT INTO images VALUES ('old-done', 0, 'images/old-done/0.png', 42, ?)", (b"\x05\0\0\0",))
    async with await Store.open(tmp_path) as store:
        assert await store.version() == SCHEMA_VERSION == len(MIGRATIONS)
        done = await store.job("old-done")
        assert done is not None and done.status is Status.DONE and done.delivered  # delivered before v2 existed
        assert [j.id for j in await store.jobs(Status.QUEUED)] == ["old-queued"]
        assert await store.undelivered() == []
        assert [(i.path, i.tokens) for i in await store.images("old-done")] == [("images/old-done/0.png", [5])]
        await store.audit(AuditEntry(1.0, "discord", "s", "admin", "pause", {}))  # a v2 table
        assert len(await store.audit_log("discord", "s")) == 1
    async with await Store.open(tmp_path) as store:  # opening again migrates nothing
        assert await store.version() == SCHEMA_VERSION


async def test_refuses_a_database_from_a_newer_bot(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "janus-bot.db") as db:
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this bot"):
        await Store.open(tmp_path)


async def test_uses_wal_and_round_trips_jobs_images_and_files(tmp_path: Path) -> None:
    job = Job("j1", Requester("slack", "T1", "C1", "U1", True), "a cat", Options(2, 5.0, 0.5, None), 9, time.time())
    async with await Store.open(tmp_path) as store:
        async with aiosqlite.connect(tmp_path / "janus-bot.db") as db, db.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone()) == ("wal",)
        await store.add_job(job)
        assert await store.job("j1") == job
        tokens = [0, 16383, 70000, 2**32 - 1]
        await store.save_files({"images/j1/0.png": b"png0", "images/j1/1.png": b"png1"})
        done = Job(**{**job.__dict__, "status": Status.DONE, "finished_at": 1.5e9, "grid_path": "images/j1/grid.png"})
        await store.finish_job(done, [Image("j1", i, f"images/j1/{i}.png", 9, tokens) for i in range(2)])
        assert await store.job("j1") == done
        assert [i.tokens for i in await store.images("j1")] == [tokens, tokens]
        assert await store.read_file("images/j1/1.png") == b"png1"
        assert [u.images for u in await store.usage("slack", "T1", "2000-01-01")] == [2]
        assert [j.id for j in await store.undelivered()] == ["j1"]
        await store.update_job(Job(**{**done.__dict__, "delivered": True}))
        assert await store.undelivered() == []


async def test_settings_bans_and_audit_are_written_together(tmp_path: Path) -> None:
    entry = AuditEntry(1.0, "discord", "s", "boss", "set", {"key": "defaults.count"})
    async with await Store.open(tmp_path) as store:
        await store.set_override("discord", "s", "defaults.count", 2, entry)
        await store.set_override("discord", "s", "blocklist.words", ["a", "b"], entry)
        await store.set_override("discord", "s", "defaults.count", None, entry)
        assert await store.overrides() == {("discord", "s"): {"blocklist.words": ["a", "b"]}}
        await store.ban(Ban("discord", "s", "bob", "spam", "boss", 2.0), entry)
        assert [b.user for b in await store.bans()] == ["bob"]
        await store.unban("discord", "s", "bob", entry)
        assert await store.bans() == []
        assert len(await store.audit_log("discord", "s")) == 5
        assert await store.audit_log("discord", "other") == []


async def test_remembers_where_an_adapter_shows_a_job(tmp_path: Path) -> None:
    job = Job("j1", Requester("slack", "T1", "C1", "U1"), "a cat", Options(1, 5.0, 1.0, None), 9, time.time())
    async with await Store.open(tmp_path) as store:
        await store.add_job(job)
        assert await store.message("j1") is None
        await store.set_message("j1", "C1 1700000001.000100")
        await store.set_message("j1", "C1 1700000002.000100")
    async with await Store.open(tmp_path) as store:
        assert await store.message("j1") == "C1 1700000002.000100"


async def test_a_write_cancelled_half_way_leaves_no_transaction_open(tmp_path: Path) -> None:
    def job(i: int) -> Job:
        return Job(f"j{i}", Requester("slack", "T1", "C1", "U1"), "a cat", Options(1, 5.0, 1.0, None), i, time.time())

    async with await Store.open(tmp_path) as store:
        for i in range(30):  # cancelled at different points: before, in and after BEGIN
            task = asyncio.create_task(store.add_job(job(i)))
            for _ in range(i % 6):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await store.add_job(job(100))
        assert await store.job("j100") is not None
