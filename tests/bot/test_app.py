from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bot.app import App, until_signalled
from bot.config import ConfigError
from bot.jobs import Done, Refused, Status
from bot.local_queue import LocalQueue
from bot.store import Store
from tests.bot.helpers import FakeGenerator, free_port, requester, settings


@pytest.mark.asyncio
async def test_app_builds_store_service_and_generator_and_closes_them(tmp_path: Path) -> None:
    fake = FakeGenerator()
    async with App(settings(tmp_path), LocalQueue(fake)) as app:
        assert app.service.backend.up and app.service.backend.max_images == 16
        handle = await app.service.submit(requester(), "a cat")
        assert isinstance(await handle.final(), Done)
    assert fake.closed
    with pytest.raises(Refused, match="restarting"):
        await app.service.submit(requester(), "a cat")
    assert (tmp_path / "janus-bot.db").exists()


@pytest.mark.asyncio
async def test_shutdown_lets_running_jobs_finish_within_the_grace_period(tmp_path: Path) -> None:
    fake = FakeGenerator(max_batch_images=1, steps=5, step_delay=0.02)
    config = settings(tmp_path, bot={"shutdown_grace_s": 5})
    async with App(config, LocalQueue(fake)) as app:
        running = await app.service.submit(requester("a"), "x", count=1)
        waiting = await app.service.submit(requester("b"), "y", count=1)
        await asyncio.sleep(0.01)
    assert isinstance(await running.final(), Done)
    async with await Store.open(tmp_path) as store:
        assert (await store.job(running.job.id)).status is Status.DONE  # type: ignore[union-attr]
        assert (await store.job(waiting.job.id)).status is Status.QUEUED  # type: ignore[union-attr]
    assert [m.job_id for m in fake.submitted] == [running.job.id]


@pytest.mark.asyncio
async def test_sigterm_and_sigint_end_the_wait(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().call_later(0.01, os.kill, os.getpid(), sig)
        assert await asyncio.wait_for(until_signalled(), 5) is sig


def test_run_command_reports_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from janus_bot.cli import main

    assert main(["run", "-c", str(tmp_path / "missing.toml")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nperiod_s = 0\n")
    assert main(["run", "-c", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"janus-bot: {tmp_path / 'missing.toml'}: no such file (copy config.example.toml to start)",
        f"janus-bot: {bad}: limits.period_s: Input should be greater than 0",
    ]


def test_run_command_reports_a_platform_out_of_reach_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from discord.http import Route

    from janus_bot.cli import main

    monkeypatch.setenv("DISCORD_TOKEN", "the.secret.token")
    monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{free_port()}/api/v10")
    config = tmp_path / "config.toml"
    config.write_text(f'[bot]\ndata_dir = "{tmp_path / "data"}"\n')
    assert main(["run", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.endswith("; check this machine's network\n")
    assert "generator[" not in err  # said before the model loads: the generator never started
    assert err.splitlines()[-1].startswith("janus-bot: Discord cannot be reached (Cannot connect to host 127.0.0.1:")
    assert "Traceback" not in err and "secret" not in err


def test_ctrl_c_while_starting_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    # With Redis out of reach, start-up waits for it: a Ctrl-C is sure to come before the bot is running.
    log = tmp_path / "bot.log"
    config = tmp_path / "config.toml"
    config.write_text(f'[bot]\ndata_dir = "{tmp_path / "data"}"\n')
    with log.open("w") as out:
        bot = subprocess.Popen([sys.executable, "-m", "janus_bot", "run", "-c", str(config), "--redis",
                                f"redis://127.0.0.1:{free_port()}/0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "Redis is unreachable while starting" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        bot.send_signal(signal.SIGINT)
        assert bot.wait(30) == 130
    finally:
        bot.kill()
    lines = log.read_text().splitlines()
    assert lines[-1] == "janus-bot: interrupted while starting" and "Traceback" not in log.read_text()


def test_a_data_dir_the_bot_cannot_use_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from janus_bot.cli import main

    (tmp_path / "a-file").touch()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "janus-bot.db").write_bytes(b"not a database, only sixteen+ bytes of text")
    for data_dir in (tmp_path / "a-file" / "data", damaged):
        config = tmp_path / "config.toml"
        config.write_text(f'[bot]\ndata_dir = "{data_dir}"\n')
        assert main(["run", "-c", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"janus-bot: bot.data_dir: cannot keep the bot's data in '{tmp_path / 'a-file' / 'data'}' (Not a directory)",
        f"janus-bot: bot.data_dir: cannot keep the bot's data in '{damaged}' (janus-bot.db: file is not a database)",
    ]


@pytest.mark.asyncio
async def test_one_bot_to_a_data_directory(tmp_path: Path) -> None:
    config = settings(tmp_path)
    async with App(config, LocalQueue(FakeGenerator())):
        with pytest.raises(ConfigError) as info:
            async with App(config, LocalQueue(FakeGenerator())):
                pass
    assert str(info.value) == (f"bot.data_dir: another janus-bot (pid {os.getpid()}) is using '{tmp_path}'; stop "
                               f"it, or give this one a data_dir of its own")
    async with App(config, LocalQueue(FakeGenerator())):  # the first one stopped: its lock went with it
        pass
