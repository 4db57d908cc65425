"""The Redis backend with a real redis-server: bot instances and GPU workers sharing one queue, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.config import Secrets
from bot.jobs import Cancelled, Done, Handle, Queued, Refused, Started
from bot.redis_queue import RedisQueue, connect, pool_health
from bot.service import Service
from bot.store import Store
from bot.worker import PoolWorker
from generator import protocol as wire
from tests.bot.helpers import OWNER, FakeGenerator, free_port, png, requester, settings
from tests.bot.redis_server import RedisServer

ROOT = Path(__file__).parents[2]
VISIBILITY_S = 2.0
pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@contextlib.asynccontextmanager
async def shared(
    data_dir: Path, url: str, instance: str, result_dir: Path | None = None, **limits: Any
) -> AsyncIterator[Service]:
    """A started service on the Redis pool with its own store, as one bot instance."""
    config = settings(data_dir, limits=limits, queue={"backend": "redis", "redis_url": url, "instance": instance,
                                                      "poll_s": 0.1})
    queue = RedisQueue(connect(url), instance=instance, max_batch_images=16, poll_s=0.1, result_dir=result_dir)
    async with await Store.open(data_dir) as store:
        service = Service(config, store, queue)
        await service.start()
        try:
            yield service
        finally:
            await service.close()


def start_worker(
    url: str, model: Path, name: str, logs: Path, *, slots: int = 8, step_delay: float = 0.0,
    visibility: float = VISIBILITY_S,
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bot.worker", "--redis", url, "--model", str(model), "--device", "cpu",
            "--max-batch-images", str(slots), "--name", name, "--visibility-timeout", str(visibility),
            "--poll", "0.05", "--preview-every", "0", "--shutdown-grace", "0"]
    if step_delay:
        args += ["--step-delay", str(step_delay)]
    return subprocess.Popen(args, cwd=ROOT, stdout=(logs / f"{name}.log").open("ab"), stderr=subprocess.STDOUT)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def health(url: str) -> dict[str, dict[str, str]]:
    client = connect(url)
    try:
        return {w.name: w.fields for w in await pool_health(client)}
    finally:
        await client.aclose()


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def workers_ready(url: str, names: set[str], timeout: float = 120) -> None:
    async def ready() -> bool:
        return names <= set(await health(url))

    await until(ready, timeout, f"workers {sorted(names)}")


# -- limits across instances (no workers: jobs just wait) ---------------------------------------------


async def test_the_queue_cap_holds_under_concurrent_submissions_to_two_instances(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    cap = {"queue_cap": 12, "server_share": 1.0}
    async with shared(tmp_path / "a", url, "a", **cap) as a, shared(tmp_path / "b", url, "b", **cap) as b:
        calls = [(a if i % 2 else b).submit(requester(f"u{i}"), f"cap {i}", count=1) for i in range(40)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        accepted = [r for r in results if isinstance(r, Handle)]
        refused = [r for r in results if isinstance(r, Refused)]
        assert len(accepted) == 12 and len(refused) == 28
        assert all("queue is full" in str(r) for r in refused)
        first = [await h._events.get() for h in accepted]  # each stream opens with its place in the whole queue
        assert sorted(e.position for e in first if isinstance(e, Queued)) == list(range(1, 13))


async def test_a_users_token_bucket_and_waiting_jobs_count_across_instances(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    limits = {"jobs_per_period": 3, "period_s": 600, "max_queued_per_user": 10}
    async with shared(tmp_path / "a", url, "a", **limits) as a, shared(tmp_path / "b", url, "b", **limits) as b:
        results = await asyncio.gather(
            *[(a if i % 2 else b).submit(requester("alice"), f"bucket {i}", count=1) for i in range(10)],
            return_exceptions=True,
        )
        assert sum(isinstance(r, Handle) for r in results) == 3
        assert all("jobs every 10 minutes" in str(r) for r in results if isinstance(r, Refused))

        queued = {"max_queued_per_user": 2, "jobs_per_period": 100}
        async with shared(tmp_path / "c", url, "c", **queued) as c, shared(tmp_path / "d", url, "d", **queued) as d:
            results = await asyncio.gather(
                *[(c if i % 2 else d).submit(requester("bob"), f"queued {i}", count=1) for i in range(6)],
                return_exceptions=True,
            )
            assert sum(isinstance(r, Handle) for r in results) == 2
            # a ban given on one instance holds on the others
            admin = requester("admin", admin=True)
            await c.admin.ban(admin, "carol", "spam")
            with pytest.raises(Refused, match="banned"):
                await d.submit(requester("carol"), "banned elsewhere", count=1)
            await c.admin.unban(admin, "carol")
            await d.submit(requester("carol"), "welcome back", count=1)


async def test_cancel_a_waiting_job_from_its_instance(tmp_path: Path, redis_server: RedisServer) -> None:
    async with shared(tmp_path / "a", redis_server.url, "a") as a:
        first = await a.submit(requester("alice"), "first", count=1)
        second = await a.submit(requester("bob"), "second", count=1)
        assert (await a.status(second.job.id)).position == 2  # type: ignore[union-attr]
        assert [(s.job.id, s.position) for s in a.admin.queue(OWNER)] == [(first.job.id, 1), (second.job.id, 2)]
        assert a.stats().waiting == 2
        await a.cancel(requester("alice"), first.job.id)
        assert isinstance(await first.final(), Cancelled)
        events = [await second._events.get(), await asyncio.wait_for(second._events.get(), 5)]
        assert events == [Queued(second.job.id, 2), Queued(second.job.id, 1)]  # it moved up


async def test_workers_take_jobs_round_robin_across_users_and_instances_unless_paused(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    client = connect(url)
    one_slot = FakeGenerator(max_batch_images=1, steps=2, step_delay=0.01)
    try:
        async with shared(tmp_path / "a", url, "a") as a, shared(tmp_path / "b", url, "b") as b:
            await b.admin.pause(OWNER)  # a bot admin pauses the whole pool from any instance
            alice = [await a.submit(requester("alice"), f"alice {i}", count=1) for i in range(3)]
            bob = await b.submit(requester("bob", platform="slack"), "bob", count=1)
            assert [(await h._events.get()).position for h in [*alice, bob]] == [1, 2, 3, 2]  # type: ignore[union-attr]
            async with pool_worker(client, "w1", generator=one_slot):
                await asyncio.sleep(0.3)
                assert one_slot.submitted == []  # paused: the worker takes nothing
                await a.admin.resume(OWNER)
                for handle in [*alice, bob]:
                    assert isinstance(await asyncio.wait_for(handle.final(), 10), Done)
    finally:
        await client.aclose()
    assert [m.job_id for m in one_slot.submitted] == [alice[0].job.id, bob.job.id, alice[1].job.id, alice[2].job.id]


async def test_a_bot_away_longer_than_its_results_are_kept_gets_the_job_made_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    async with shared(tmp_path / "a", url, "a") as a:
        job_id = (await a.submit(requester("alice"), "while you were away", count=1)).job.id
    client = connect(url)
    try:
        # A worker (with a torch-free generator) makes the job while the bot is down, and the result expires.
        async with pool_worker(client, "w1") as first:
            await until(lambda: done(first, 1), 10, "the job to be made")
        await client.delete(f"janus:result:{job_id}")
        async with pool_worker(client, "w2") as second, shared(tmp_path / "a", url, "a") as a:
            final = await asyncio.wait_for((await a.watch(job_id)).final(), 10)
            assert isinstance(final, Done) and second.counters["jobs_done"] == 1
    finally:
        await client.aclose()


async def test_results_through_a_shared_directory_and_a_lost_file_made_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url, results = redis_server.url, tmp_path / "results"
    client = connect(url)
    try:
        async with pool_worker(client, "w1", results), shared(tmp_path / "a", url, "a", results) as a:
            handles = [await a.submit(requester(f"u{i}"), f"via a file {i}", count=2) for i in range(3)]
            for handle in handles:
                final = await asyncio.wait_for(handle.final(), 10)
                assert isinstance(final, Done) and len(final.images) == 2
            assert sorted(p.name for p in results.iterdir()) == sorted(f"{h.job.id}.json" for h in handles)
            assert not [key async for key in client.scan_iter(match="janus:result:*")]  # nothing in Redis
            job_id = (await a.submit(requester("alice"), "lost while you were away", count=1)).job.id
            await a.close()
            await until(lambda: asyncio.sleep(0, (results / f"{job_id}.json").exists()), 10, "the result file")
        (results / f"{job_id}.json").unlink()
        async with pool_worker(client, "w2", results) as second, shared(tmp_path / "a", url, "a", results) as a:
            final = await asyncio.wait_for((await a.watch(job_id)).final(), 10)
            assert isinstance(final, Done) and second.counters["jobs_done"] == 1
    finally:
        await client.aclose()


async def test_a_busy_worker_stopped_by_sigterm_hands_its_jobs_over_at_once(
    tmp_path: Path, redis_server: RedisServer, tiny_dir: Path
) -> None:
    url = redis_server.url
    w1 = start_worker(url, tiny_dir, "w1", tmp_path, slots=2, step_delay=0.2, visibility=60)  # 36 steps: 7 s
    client = connect(url)
    try:
        await workers_ready(url, {"w1"})
        async with shared(tmp_path / "a", url, "a") as a:
            handle = await a.submit(requester("alice"), "hand me over", count=1)
            async for event in handle:
                if isinstance(event, Started):
                    break
            w1.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(w1.wait, 30) == 0
            async with pool_worker(client, "w2", visibility_timeout=60) as w2:
                assert isinstance(await asyncio.wait_for(handle.final(), 10), Done)  # not a minute later
                assert w2.counters["jobs_claimed"] == 1
        assert "stopping with 1 job(s) unfinished; other workers will claim them" in (tmp_path / "w1.log").read_text()
    finally:
        stop([w1])
        await client.aclose()


async def test_a_job_that_ends_on_two_workers_is_recorded_once(tmp_path: Path, redis_server: RedisServer) -> None:
    url = redis_server.url
    client = connect(url)
    stalled = FakeGenerator(steps=20, step_delay=0.05)
    w1 = PoolWorker(client, stalled, name="w1", poll_s=0.02, visibility_timeout=0.5, shutdown_grace=0)

    async def never_refreshes() -> None:  # as if its machine stalled: its entries look abandoned
        await asyncio.Event().wait()

    async def claims_nothing(free: int) -> int:  # nor does it look for abandoned entries (its own included)
        return 0

    w1._heartbeat = never_refreshes  # type: ignore[method-assign]
    w1._reclaim = claims_nothing  # type: ignore[method-assign]
    stop = asyncio.Event()
    first = asyncio.create_task(w1.run(stop))
    try:
        async with shared(tmp_path / "a", url, "a") as a:
            handle = await a.submit(requester("alice"), "twice", count=1)
            await until(lambda: asyncio.sleep(0, bool(stalled.submitted)), 10, "w1 to take the job")
            async with pool_worker(client, "w2", visibility_timeout=0.5) as w2:
                events = [event async for event in handle]
                assert [type(e) for e in events].count(Done) == 1 and w2.counters["jobs_claimed"] == 1
                await until(lambda: asyncio.sleep(0, w1.counters["jobs_duplicate"] == 1), 10, "w1 to finish too")
            await asyncio.sleep(0.3)  # time for a second result to reach the bot, were one sent
            usage = await a.admin.usage(OWNER)
            assert [(u.user, u.jobs, u.images) for u in usage] == [("alice", 1, 1)]
            assert w1.counters["jobs_done"] == 0 and w2.counters["jobs_done"] == 1
    finally:
        stop.set()
        await first
        await client.aclose()


async def test_job_ids_from_redis_never_name_files_outside_the_result_directory(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url, results = redis_server.url, tmp_path / "results"
    client = connect(url)
    try:
        async with shared(tmp_path / "a", url, "a", results) as a:
            waiting = await a.submit(requester("alice"), "waiting", count=1)
            # Whoever can write to Redis forges a result "file" outside the directory, for a real job...
            forged = wire.JobDone(waiting.job.id, [png(1)], [[0] * 16])
            (tmp_path / "forged.json").write_text(wire.dumps(forged))
            await client.xadd("janus:out:a", {"file": "../forged"})
            # ...and a job whose id would put a worker's result file there.
            await client.hset("janus:job:../../escaped", mapping={"msg": wire.dumps(wire.Generate(
                "../../escaped", "x", 1, 5.0, 1.0, 1)), "user": "mallory", "instance": "a", "count": 1,
                "limit": 0, "ttl": 60, "state": "waiting"})
            await client.lpush("janus:q:mallory", "../../escaped")
            await client.zadd("janus:ring", {"mallory": -2e15})
            with caplog.at_level(logging.WARNING):
                async with pool_worker(client, "w1", results) as w1:
                    assert isinstance(await asyncio.wait_for(waiting.final(), 10), Done)
                    assert w1.counters["jobs_done"] == 1  # the real job, made by the worker
            events = [e async for e in await a.watch(waiting.job.id)]
            assert [type(e) for e in events] == [Done]
        assert not (tmp_path / "escaped.json").exists() and not (tmp_path.parent / "escaped.json").exists()
        logged = [r.getMessage() for r in caplog.records]
        assert any("dropped a job entry whose id is not one a bot makes: '../../escaped'" in m for m in logged)
        assert any("ignored an event that could not be read: '../forged' is not a job id" in m for m in logged)
    finally:
        await client.aclose()


async def test_a_worker_waiting_for_redis_at_start_stops_on_sigterm(tmp_path: Path, tiny_dir: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    worker = start_worker(url, tiny_dir, "w1", tmp_path)
    log = tmp_path / "w1.log"
    try:
        await until(lambda: asyncio.sleep(0, "Redis is unreachable while creating the job stream" in log.read_text()),
                    120, "the worker to wait for Redis")
        worker.terminate()
        assert worker.wait(20) == 0
    finally:
        stop([worker])
    lines = log.read_text().splitlines()
    assert any(line.endswith("worker w1: stopped before Redis could be reached") for line in lines)
    assert not any("Traceback" in line for line in lines)


async def test_pool_without_redis_is_one_line() -> None:
    port = free_port()
    shown = subprocess.run([sys.executable, "-m", "janus_bot", "pool", "--redis", f"redis://:hunter2@127.0.0.1:{port}/0"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1
    assert shown.stderr.startswith(f"janus-bot: Redis cannot be reached (Error 111 connecting to 127.0.0.1:{port}.")
    assert shown.stderr.count("\n") == 1 and "hunter2" not in shown.stderr


async def test_a_worker_result_dir_that_cannot_be_made_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    (tmp_path / "a-file").touch()
    shown = subprocess.run([sys.executable, "-m", "janus_bot", "worker", "--redis", "redis://127.0.0.1:1/0",
                            "--result-dir", str(tmp_path / "a-file" / "results")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 2
    assert shown.stderr.splitlines()[-1] == (f"janus-bot worker: error: --result-dir: cannot make "
                                             f"'{tmp_path / 'a-file' / 'results'}' (Not a directory) "
                                             f"(janus-bot worker -h lists the options)")


@contextlib.asynccontextmanager
async def pool_worker(
    client: Any, name: str, result_dir: Path | None = None, generator: FakeGenerator | None = None, **options: Any
) -> AsyncIterator[PoolWorker]:
    """An in-process worker on the fake generator of the service tests."""
    worker = PoolWorker(client, generator or FakeGenerator(), name=name, poll_s=0.05, result_dir=result_dir,
                        shutdown_grace=0, **options)
    stop_worker = asyncio.Event()
    running = asyncio.create_task(worker.run(stop_worker))
    try:
        yield worker
    finally:
        stop_worker.set()
        await running


async def done(worker: PoolWorker, n: int) -> bool:
    return worker.counters["jobs_done"] == n


# -- the pool with real workers -------------------------------------------------------------------------


async def test_two_workers_two_bots_200_jobs_from_20_users(
    tmp_path: Path, redis_server: RedisServer, tiny_dir: Path
) -> None:
    url = redis_server.url
    procs = [start_worker(url, tiny_dir, name, tmp_path) for name in ("w1", "w2")]
    try:
        await workers_ready(url, {"w1", "w2"})
        limits = {"queue_cap": 200, "max_queued_per_user": 10, "jobs_per_period": 100, "max_running_per_user": 2}
        async with shared(tmp_path / "a", url, "a", **limits) as a, shared(tmp_path / "b", url, "b", **limits) as b:
            handles = []
            for i in range(200):
                user = i % 20
                service, platform = (a, "discord") if user < 10 else (b, "slack")
                who = requester(f"u{user}", platform=platform)
                handles.append(await service.submit(who, f"a picture {i}", count=1, seed=i))
            finals = await asyncio.wait_for(asyncio.gather(*(h.final() for h in handles)), 300)
            assert all(isinstance(f, Done) for f in finals), [f for f in finals if not isinstance(f, Done)][:3]
            for data in ("a", "b"):
                with sqlite3.connect(tmp_path / data / "janus-bot.db") as con:
                    assert dict(con.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")) == {"done": 100}
                    assert set(dict(con.execute("SELECT job_id, COUNT(*) FROM images GROUP BY job_id")).values()) == {1}

            async def counted() -> bool:  # a worker writes its counts just after the result the bot saw
                return sum(int(fields["jobs_done"]) for fields in (await health(url)).values()) >= 200

            await until(counted, 10, "the workers' health to count all 200 jobs")
            pool = await health(url)
            done = Counter({name: int(fields["jobs_done"]) for name, fields in pool.items()})
            assert sum(done.values()) == 200  # every job ran once
            assert min(done.values()) >= 40, done  # and both workers took a share
            metrics = await b.backend_metrics()  # what the web adapter's /metrics adds: the whole pool
            assert 'janus_worker_jobs_done{worker="w1"}' in metrics and "janus_pool_workers 2" in metrics
            shown = subprocess.run([sys.executable, "-m", "janus_bot", "pool", "--redis", url], cwd=ROOT,
                                   capture_output=True, text=True, timeout=30)
            assert shown.stdout.startswith("0 job(s) waiting, 2 worker(s)") and "  w2: " in shown.stdout
    finally:
        stop(procs)


async def test_cancel_a_job_while_a_worker_runs_it(tmp_path: Path, redis_server: RedisServer, tiny_dir: Path) -> None:
    url = redis_server.url
    procs = [start_worker(url, tiny_dir, "w1", tmp_path, slots=2, step_delay=0.2)]
    try:
        await workers_ready(url, {"w1"})
        async with shared(tmp_path / "a", url, "a") as a:
            handle = await a.submit(requester("alice"), "stop me", count=1)
            async for event in handle:
                if isinstance(event, Started):
                    await a.cancel(requester("alice"), handle.job.id)
            assert isinstance(event, Cancelled)
            status = await a.status(handle.job.id)
            assert status is not None and status.job.status.value == "cancelled"

            async def counted() -> bool:
                return (await health(url))["w1"].get("jobs_cancelled") == "1"

            await until(counted, 10, "the worker to count the cancel")
    finally:
        stop(procs)


def _statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT id, status FROM jobs").fetchall())


def _bot(mode: str, data: Path, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.bot.redis_bot", mode, str(data), url], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


async def test_kill_9_a_worker_redis_and_the_bot_loses_no_accepted_job(
    tmp_path: Path, redis_server: RedisServer, tiny_dir: Path
) -> None:
    url = redis_server.url
    data = tmp_path / "bot"
    data.mkdir()
    w1 = start_worker(url, tiny_dir, "w1", tmp_path, slots=2, step_delay=0.05)
    w2 = start_worker(url, tiny_dir, "w2", tmp_path, slots=2, step_delay=0.05)
    procs = [w1, w2]
    try:
        await workers_ready(url, {"w1", "w2"})
        bot = _bot("submit", data, url)
        procs.append(bot)
        assert bot.stdout is not None and bot.stdout.readline().strip() == "accepted"
        accepted = (data / "accepted").read_text().split()

        async def w1_busy() -> bool:
            return int((await health(url)).get("w1", {}).get("jobs_running", 0)) > 0

        await until(w1_busy, 60, "w1 to run jobs")
        w1.send_signal(signal.SIGKILL)
        w1.wait(10)
        await workers_ready(url, {"w2"})

        redis_server.kill()  # persistence on: every acknowledged write is on disk
        await asyncio.sleep(0.5)
        redis_server.start()

        async def some_done() -> bool:
            return "done" in _statuses(data / "janus-bot.db").values()

        await until(some_done, 120, "a job to finish after the restarts")
        bot.send_signal(signal.SIGKILL)
        bot.wait(10)

        again = _bot("recover", data, url)
        procs.append(again)
        out, _ = await asyncio.to_thread(again.communicate, timeout=180)
        assert again.returncode == 0 and out.strip() == "recovered"
        after = _statuses(data / "janus-bot.db")
        assert sorted(after) == sorted(accepted) and set(after.values()) == {"done"}
        with sqlite3.connect(data / "janus-bot.db") as con:
            per_job = dict(con.execute("SELECT job_id, COUNT(*) FROM images GROUP BY job_id").fetchall())
        assert per_job == dict.fromkeys(accepted, 1)
        pool = await health(url)
        assert int(pool["w2"]["jobs_claimed"]) >= 1  # w2 took over what w1 held
    finally:
        stop(procs)


async def test_a_redis_password_comes_from_the_environment_and_a_wrong_one_is_one_line(
    tmp_path: Path, tiny_dir: Path
) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", password="s3cret-pw")
    server.start()
    try:
        env = {"JANUS_BOT_REDIS_URL": server.url}  # the URL with its password: a secret, never in the file
        config = settings(tmp_path / "bot", queue={"backend": "redis", "redis_url": "redis://nowhere:1/0"})
        config = config.model_copy(update={"secrets": Secrets.from_env(env)})
        async with App(config) as app:
            waiting = await app.service.submit(requester(), "behind a password", count=1)
            assert (await app.service.status(waiting.job.id)).position == 1  # type: ignore[union-attr]
        wrong = server.url.replace("s3cret-pw", "guess")
        shown = subprocess.run([sys.executable, "-m", "janus_bot", "worker", "--model", str(tiny_dir)], cwd=ROOT,
                               env={**os.environ, "JANUS_BOT_REDIS_URL": wrong}, capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 2, shown.stderr
        assert shown.stderr.splitlines()[-1].startswith("janus-bot: Redis refused this bot's login (")
        assert "guess" not in shown.stderr and "Traceback" not in shown.stderr
    finally:
        server.stop()
