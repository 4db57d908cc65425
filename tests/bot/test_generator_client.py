"""The supervised generator process with the tiny checkpoint: jobs, cancel, start errors, kill -9 and restarts."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.generator import Generator
from bot.generator_client import CRASHED_TWICE, NOT_RUNNING, GeneratorProcess, GeneratorStartError
from generator import protocol as wire

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the tests share one supervised process, in order
TIMEOUT = 60.0


class Events:
    """Everything events() yields, collected in the background so a test can wait for what it expects."""

    def __init__(self, generator: Generator) -> None:
        self.seen: list[wire.Message] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._collect(generator))

    async def _collect(self, generator: Generator) -> None:
        async for event in generator.events():
            self.seen.append(event)
            self._changed.set()

    async def wait(self, predicate: Callable[[wire.Message], bool], after: int = 0) -> wire.Message:
        """The first event from index `after` on that matches."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                for event in self.seen[after:]:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()


def job(job_id: str, count: int = 1, **fields: object) -> wire.Generate:
    options = {"prompt": "a lighthouse at dusk", "cfg": 5.0, "temperature": 1.0, "seed": 7} | fields
    return wire.Generate(job_id, count=count, **options)  # type: ignore[arg-type]


def of(kind: type, job_id: str) -> Callable[[wire.Message], bool]:
    return lambda event: isinstance(event, kind) and event.job_id == job_id


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def generator(tiny_dir: Path) -> AsyncIterator[tuple[GeneratorProcess, Events]]:
    client = GeneratorProcess(str(tiny_dir), max_batch_images=4, preview_every=12, extra_args=["--step-delay", "0.03"])
    ready = await client.start()
    assert (ready.model, ready.image_size, ready.grid_size, ready.max_batch_images) == (str(tiny_dir), 96, 6, 4)
    yield client, Events(client)
    await client.close()


async def test_job_round_trip(generator: tuple[GeneratorProcess, Events]) -> None:
    client, events = generator
    await client.submit(job("trip", count=2, prefix=[[1, 2, 3, 4]]))
    done = await events.wait(of(wire.JobDone, "trip"))
    assert [Image.open(io.BytesIO(png)).size for png in done.images] == [(96, 96), (96, 96)]
    assert [len(row) for row in done.tokens] == [36, 36] and [row[:4] for row in done.tokens] == [[1, 2, 3, 4]] * 2
    trip = [e for e in events.seen if e.job_id == "trip"]
    assert isinstance(trip[0], wire.JobStarted) and trip[-1] is done
    assert sum(isinstance(e, wire.JobProgress) and e.preview is not None for e in trip) == 2


async def test_cancel_and_invalid_job(generator: tuple[GeneratorProcess, Events]) -> None:
    client, events = generator
    await client.submit(job("stop", count=4))
    await events.wait(of(wire.JobStarted, "stop"))
    await client.cancel("stop")
    await events.wait(of(wire.JobCancelled, "stop"))

    await client.submit(job("empty", prompt=" "))
    failed = await events.wait(of(wire.JobFailed, "empty"))
    assert failed.reason == "The prompt is empty; describe the picture you want."


async def test_kill_9_re_runs_jobs_once_and_fails_those_caught_by_a_second_death(
    generator: tuple[GeneratorProcess, Events], caplog: pytest.LogCaptureFixture
) -> None:
    client, events = generator
    caplog.set_level(logging.INFO, logger="bot.generator_client")
    mark = len(events.seen)
    await client.submit(job("first"))
    await events.wait(of(wire.JobProgress, "first"), after=mark)
    first_pid = client.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)  # mid-job: "first" is re-run by the next process
    await events.wait(of(wire.JobStarted, "first"), after=len(events.seen))
    second_pid = client.pid
    assert second_pid not in (None, first_pid) and client.restarts == 1

    await client.submit(job("second"))
    await events.wait(of(wire.JobProgress, "second"))
    os.kill(second_pid, signal.SIGKILL)  # "first" dies a second time and fails; "second" is re-run
    failed = await events.wait(of(wire.JobFailed, "first"))
    assert failed.reason == CRASHED_TWICE
    done = await events.wait(of(wire.JobDone, "second"))
    assert len(done.images) == 1 and len(done.tokens[0]) == 36
    assert client.restarts == 2 and client.in_flight == []

    finals = [(type(e).__name__, e.job_id) for e in events.seen[mark:] if isinstance(e, wire.FINAL)]
    assert finals == [("JobFailed", "first"), ("JobDone", "second")]  # one final event per job
    deaths = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert len(deaths) == 2 and all("killed by SIGKILL" in d and "\n" not in d for d in deaths)
    assert "1 job(s) to re-run, 0 failed" in deaths[0] and "1 job(s) to re-run, 1 failed" in deaths[1]


async def test_close_leaves_unfinished_jobs_in_flight(generator: tuple[GeneratorProcess, Events]) -> None:
    # Last of the shared-process tests: it closes the process.
    client, events = generator
    await client.submit(job("left", count=4))
    await events.wait(of(wire.JobStarted, "left"))
    await client.close()  # the current step finishes; the unfinished job stays for the bot to re-queue
    await asyncio.wait_for(events.task, TIMEOUT)  # events() ended
    assert client.in_flight == ["left"]
    assert not any(isinstance(e, wire.FINAL) and e.job_id == "left" for e in events.seen)


async def test_bad_model_path_fails_start_with_one_sentence(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(GeneratorStartError) as caught:
        await GeneratorProcess(missing).start()
    assert str(caught.value) == f"Model path {missing!r} is not a directory; give a checkpoint directory or a hub id."


async def test_a_process_that_dies_before_ready_is_explained() -> None:
    with pytest.raises(GeneratorStartError) as caught:
        await GeneratorProcess(python="false").start()
    assert str(caught.value) == "The generator process ended (exit code 1) before its model was loaded."


SLOW_STARTER = """
import sys
import time

from generator.protocol import Ready, dumps

lines, pause = int(sys.argv[-2]), float(sys.argv[-1])
for n in range(lines):  # a download logging its progress, then silence
    print(f"downloaded {n + 1} of {lines} GB", file=sys.stderr, flush=True)
    time.sleep(pause)
print(dumps(Ready("slow", "cpu", 96, 6, 16)), flush=True)
time.sleep(60)
"""


async def test_the_start_limit_is_on_silence_not_on_a_long_start_that_logs_progress(tmp_path: Path) -> None:
    script = tmp_path / "slow-generator"
    script.write_text(f"#!{sys.executable}\n{SLOW_STARTER}")
    script.chmod(0o755)
    chatty = GeneratorProcess(python=str(script), extra_args=["8", "0.25"], start_timeout=1.0, shutdown_grace=0)
    started = time.monotonic()
    assert (await chatty.start()).model == "slow"  # two seconds in all, never a second without a line
    assert time.monotonic() - started >= 2.0
    await chatty.close()
    silent = GeneratorProcess(python=str(script), extra_args=["1", "30"], start_timeout=1.0, shutdown_grace=0)
    with pytest.raises(GeneratorStartError) as caught:
        await silent.start()
    assert str(caught.value) == ("The generator said nothing for 1 seconds while loading its model; its last line: "
                                 "downloaded 1 of 1 GB")


FAKE_GENERATOR = """
import sys
import time
from pathlib import Path

from generator.protocol import Generate, JobStarted, Ready, dumps, loads

if Path(sys.argv[-1]).exists():
    sys.exit(print("error: The model is gone.", file=sys.stderr) or 2)
print(dumps(Ready("fake", "cpu", 96, 6, 16)), flush=True)
for line in sys.stdin:  # jobs start and never end; Shutdown and the end of input are ignored
    if isinstance(msg := loads(line), Generate):
        print(dumps(JobStarted(msg.job_id)), flush=True)
time.sleep(60)
"""


async def test_jobs_fail_while_the_generator_cannot_restart_and_run_once_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script, broken = tmp_path / "fake-generator", tmp_path / "broken"
    script.write_text(f"#!{sys.executable}\n{FAKE_GENERATOR}")
    script.chmod(0o755)
    client = GeneratorProcess(python=str(script), extra_args=[str(broken)], shutdown_grace=0.2)
    await client.start()
    events = Events(client)
    await client.submit(job("a"))
    await events.wait(of(wire.JobStarted, "a"))

    broken.touch()
    assert client.pid is not None
    os.kill(client.pid, signal.SIGKILL)
    assert await events.wait(of(wire.JobFailed, "a")) == wire.JobFailed("a", NOT_RUNNING)
    await client.submit(job("b"))  # refused at once while the generator is down
    assert await events.wait(of(wire.JobFailed, "b")) == wire.JobFailed("b", NOT_RUNNING)
    assert any("could not restart: The model is gone. (retrying in 2s)" in r.getMessage() for r in caplog.records)

    broken.unlink()
    async with asyncio.timeout(TIMEOUT):
        while client.restarts == 0:
            await asyncio.sleep(0.1)
    await client.submit(job("c"))
    await events.wait(of(wire.JobStarted, "c"))
    await client.close()  # the fake ignores Shutdown: killed after the grace period
    assert client.in_flight == ["c"]
    assert any("did not stop within 0.2s; killing it" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("where", ["step", "pictures"])
async def test_a_device_failure_mid_job_exits_3_and_the_supervisor_re_runs_the_job(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    flag = tmp_path / "fail"  # the process fails as a CUDA error would when this appears (a hidden test option)
    client = GeneratorProcess(str(tiny_dir), max_batch_images=4, preview_every=0,
                              extra_args=["--step-delay", "0.03", "--simulate-device-failure", str(flag)])
    caplog.set_level(logging.INFO, logger="bot.generator_client")
    await client.start()
    events = Events(client)
    try:
        first_pid = client.pid
        flag.write_text(where)  # in a decode step, or in making the finished job's pictures
        await client.submit(job("hit", count=2))
        done = await events.wait(of(wire.JobDone, "hit"))
        assert client.restarts == 1 and client.pid not in (None, first_pid)
    finally:
        await client.close()
    assert not flag.exists() and len(done.images) == 2
    hit = [type(e) for e in events.seen if e.job_id == "hit"]
    assert hit.count(wire.JobStarted) == 2 and hit[-1] is wire.JobDone and hit.count(wire.JobDone) == 1
    assert not any(t in (wire.JobFailed, wire.JobCancelled) for t in hit)  # no final from the failed process
    deaths = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert len(deaths) == 1 and "(exit code 3)" in deaths[0] and "1 job(s) to re-run, 0 failed" in deaths[0]
