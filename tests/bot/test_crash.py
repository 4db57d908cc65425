"""Kill -9 the bot with jobs waiting and running; a new bot finishes every accepted job, none twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


def statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT id, status FROM jobs").fetchall())


def bot(mode: str, data: Path, model: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bot.crash_bot", mode, str(data), str(model)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_kill_9_the_bot_then_restart_finishes_every_accepted_job_once(tmp_path: Path, tiny_dir: Path) -> None:
    first = bot("submit", tmp_path, tiny_dir)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "accepted"
        accepted = (tmp_path / "accepted").read_text().split()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until some are done, some running and some waiting
            now = statuses(tmp_path / "janus-bot.db")
            if {"done", "running", "queued"} <= set(now.values()):
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"never had done, running and waiting jobs at once: {now}")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    generator_pid = int((tmp_path / "generator.pid").read_text())
    assert gone(generator_pid, 15), "the orphaned generator did not exit when its bot died"
    before = statuses(tmp_path / "janus-bot.db")
    finished_before = {job for job, status in before.items() if status == "done"}

    second = bot("recover", tmp_path, tiny_dir)
    out, _ = second.communicate(timeout=90)
    assert second.returncode == 0 and out.strip() == "recovered"

    after = statuses(tmp_path / "janus-bot.db")
    assert sorted(after) == sorted(accepted) and set(after.values()) == {"done"}
    rerun = (tmp_path / "submitted-recover").read_text().split()
    assert len(rerun) == len(set(rerun))  # nothing generated twice by the new bot
    assert set(rerun) == set(accepted) - finished_before  # and nothing finished before is generated again
    with sqlite3.connect(tmp_path / "janus-bot.db") as con:
        per_job = dict(con.execute("SELECT job_id, COUNT(*) FROM images GROUP BY job_id").fetchall())
    assert per_job == dict.fromkeys(accepted, 1)


def test_sigterm_past_the_grace_period_leaves_unfinished_jobs_for_the_next_start_with_their_seeds(
    tmp_path: Path, tiny_dir: Path
) -> None:
    first = bot("term", tmp_path, tiny_dir)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "accepted"
        accepted = (tmp_path / "accepted").read_text().split()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until some are done, some running and some waiting
            if {"done", "running", "queued"} <= set(statuses(tmp_path / "janus-bot.db").values()):
                break
            time.sleep(0.02)
        else:
            pytest.fail("never had done, running and waiting jobs at once")
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0  # a clean exit once the grace period is over
    finally:
        first.kill()
    assert gone(int((tmp_path / "generator.pid").read_text()), 5), "the generator outlived its bot's shutdown"
    before = statuses(tmp_path / "janus-bot.db")
    unfinished = {job for job, status in before.items() if status != "done"}
    assert unfinished and set(before.values()) <= {"done", "running", "queued"}  # nothing failed by the shutdown

    second = bot("recover", tmp_path, tiny_dir)
    out, _ = second.communicate(timeout=90)
    assert second.returncode == 0 and out.strip() == "recovered"
    after = statuses(tmp_path / "janus-bot.db")
    assert sorted(after) == sorted(accepted) and set(after.values()) == {"done"}
    with sqlite3.connect(tmp_path / "janus-bot.db") as con:
        stored = {job: str(seed) for job, seed in con.execute("SELECT id, seed FROM jobs")}
    rerun = dict(line.split() for line in (tmp_path / "seeds-recover").read_text().splitlines())
    assert set(rerun) == unfinished  # exactly the unfinished jobs ran again
    assert all(rerun[job] == stored[job] for job in unfinished)  # each with the seed it was given at admission
    started = dict(line.split() for line in (tmp_path / "seeds-term").read_text().splitlines())
    assert any(job in started for job in unfinished)  # some were running when the grace period ran out
