"""The generator process seen from the bot: spawn it, speak JSON lines to it, restart it when it dies.

`GeneratorProcess` implements `bot.generator.Generator`. It runs `python -m generator serve` with the
model options, waits for Ready, then sends Generate and Cancel lines to its stdin and reads events from
its stdout. A supervisor task watches the process: when it dies (a crash, kill -9, a CUDA error) the
jobs it was running are sent again to a fresh process, once; a job whose second process dies too ends
with Failed. A job re-run after a restart starts over: Started and Progress from step 1 again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Secrets
from generator import protocol as wire

log = logging.getLogger(__name__)

LINE_LIMIT = 256 * 2**20  # longest event line: a Done with 16 large PNGs, base64-encoded
STDERR_TAIL = 20  # lines kept to explain a death or a failed start
CRASHED_TWICE = "The image generator crashed twice while making these images; try again later, perhaps with fewer."
NOT_RUNNING = "The image generator stopped and could not be restarted; try again later."


BOT_SECRETS = frozenset(
    name for field in Secrets.model_fields for name in (field.upper(), f"JANUS_BOT_{field.upper()}")
)


class GeneratorStartError(RuntimeError):
    """The generator process could not start; the message is one sentence for the operator."""


@dataclass
class _Job:
    msg: wire.Work
    sends: int = 0  # processes it was sent to
    cancelling: bool = False


@dataclass
class _Process:
    proc: asyncio.subprocess.Process
    tail: deque[str]  # its last lines on stderr
    started: float
    heard: float  # when it last wrote a line on stderr (time.monotonic)
    stderr: asyncio.Task[None] = field(init=False)  # the task reading them


def describe_exit(code: int) -> str:
    """'exit code 1' or 'killed by SIGKILL'."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class GeneratorProcess:
    """A supervised `python -m generator serve` process behind the Generator interface."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        quantize: str = "none",
        max_batch_images: int = 16,
        preview_every: int | None = None,
        compile: bool = False,
        python: str = sys.executable,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 600.0,
        shutdown_grace: float = 10.0,
    ) -> None:
        self.command = [python, "-m", "generator", "serve", "--max-batch-images", str(max_batch_images)]
        for flag, value in (("--model", model), ("--device", device), ("--dtype", dtype), ("--quantize", quantize)):
            if value and value not in ("auto", "none"):
                self.command += [flag, value]
        if preview_every is not None:
            self.command += ["--preview-every", str(preview_every)]
        if compile:
            self.command.append("--compile")
        self.command += list(extra_args)
        # `python -m generator` must find the same generator package this bot imports.
        root = str(Path(wire.__file__).resolve().parents[1])
        # The model needs none of the bot's secrets (a hub token, HF_TOKEN, is not one of them): a process that
        # runs third-party model code should not hold the chat platforms' tokens.
        self.env = {k: v for k, v in (os.environ if env is None else env).items() if k not in BOT_SECRETS}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (root, self.env.get("PYTHONPATH")) if p)
        self.start_timeout = start_timeout
        self.shutdown_grace = shutdown_grace
        self.ready: wire.Ready | None = None
        self.restarts = 0
        self._process: _Process | None = None
        self._up = False  # Ready received and stdout still open
        self._down: str | None = None  # why the process is gone for good, after a failed restart
        self._closing = False
        self._jobs: dict[str, _Job] = {}
        self._events: asyncio.Queue[wire.Message | None] = asyncio.Queue()
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The running process's id, None while it is down."""
        return self._process.proc.pid if self._process and self._up else None

    @property
    def in_flight(self) -> list[str]:
        """Jobs submitted and not yet ended, oldest first (after close: the ones to re-queue)."""
        return list(self._jobs)

    # -- the Generator interface --

    async def start(self) -> wire.Ready:
        """Spawn the process and wait until its model is loaded; GeneratorStartError says why it could not."""
        if self._supervisor is not None or self._closing:
            raise RuntimeError("a GeneratorProcess starts once")
        self._process, self.ready = await self._spawn()
        self._up = True
        self._supervisor = asyncio.create_task(self._supervise(), name="generator-supervisor")
        return self.ready

    async def submit(self, msg: wire.Work) -> None:
        """Queue a job; held while the process restarts, failed at once if it could not restart."""
        if self._supervisor is None or self._closing:
            raise RuntimeError("the generator is not running; start() it first")
        if msg.job_id in self._jobs:
            raise ValueError(f"job {msg.job_id} is already in flight")
        if self._down is not None:
            self._events.put_nowait(wire.JobFailed(msg.job_id, NOT_RUNNING))
            return
        job = self._jobs[msg.job_id] = _Job(msg)
        if self._up:
            await self._send_job(job)

    async def cancel(self, job_id: str) -> None:
        """Stop a job: Cancelled follows (or nothing if it already ended)."""
        job = self._jobs.get(job_id)
        if job is None or job.cancelling:
            return
        if not self._up:  # not in any process now: nothing to stop
            del self._jobs[job_id]
            self._events.put_nowait(wire.JobCancelled(job_id))
            return
        job.cancelling = True
        await self._write(wire.Cancel(job_id))

    async def close(self) -> None:
        """Ask the process to finish its current step and exit, kill it after the grace period; end events()."""
        if self._closing:
            return
        self._closing = True
        process = self._process
        if process is not None and process.proc.returncode is None:
            await self._write(wire.Shutdown())
            if process.proc.stdin is not None:
                process.proc.stdin.close()
            try:
                await asyncio.wait_for(process.proc.wait(), self.shutdown_grace)
            except TimeoutError:
                log.warning("generator process %d did not stop within %gs; killing it",
                            process.proc.pid, self.shutdown_grace)
                process.proc.kill()
                await process.proc.wait()
        if self._supervisor is not None:
            # It returns by itself once the process is gone, unless it is waiting to restart one.
            done, _ = await asyncio.wait({self._supervisor}, timeout=1.0)
            if not done:
                self._supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._supervisor
        if self._jobs:
            log.info("generator closed with %d job(s) unfinished", len(self._jobs))
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[wire.Message]:
        """Started, Progress and exactly one of Done, Failed or Cancelled per job; ends after close()."""
        while (event := await self._events.get()) is not None:
            yield event

    # -- the process --

    async def _spawn(self) -> tuple[_Process, wire.Ready]:
        """A new process that said Ready."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.env, limit=LINE_LIMIT,
                start_new_session=True,  # Ctrl-C goes to the bot, which shuts the generator down in order
            )
        except OSError as err:
            raise GeneratorStartError(f"Cannot run the generator with {self.command[0]!r}: {err.strerror}.") from None
        now = time.monotonic()
        process = _Process(proc, deque(maxlen=STDERR_TAIL), started=now, heard=now)
        process.stderr = asyncio.create_task(self._pump_stderr(process))
        waiting = asyncio.create_task(self._wait_ready(proc))
        try:
            # A first start may download the model for many minutes; it logs its progress, so the limit is on
            # silence, not on the whole start.
            while not waiting.done():
                if time.monotonic() - process.heard >= self.start_timeout:
                    raise TimeoutError
                await asyncio.wait({waiting}, timeout=process.heard + self.start_timeout - time.monotonic())
            ready = waiting.result()
        except TimeoutError:
            waiting.cancel()
            proc.kill()
            await proc.wait()
            raise GeneratorStartError(
                f"The generator said nothing for {self.start_timeout:g} seconds while loading its model; "
                f"its last line: {process.tail[-1] if process.tail else '(none)'}"
            ) from None
        except BaseException:
            waiting.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if ready is None:
            code = await proc.wait()
            await process.stderr
            raise GeneratorStartError(self._start_failure(code, process.tail))
        return process, ready

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> wire.Ready | None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            message = self._decode(line)
            if isinstance(message, wire.Ready):
                return message
        return None

    @staticmethod
    def _start_failure(code: int, tail: deque[str]) -> str:
        """The generator's own sentence ('error: ...' on stderr) or how it ended."""
        for line in reversed(tail):
            if line.startswith("error: "):
                return line.removeprefix("error: ")
        last = f"; its last line: {tail[-1]}" if tail else "."
        return f"The generator process ended ({describe_exit(code)}) before its model was loaded{last}"

    async def _pump_stderr(self, process: _Process) -> None:
        """The generator's log lines into ours."""
        proc = process.proc
        assert proc.stderr is not None
        while True:
            try:
                raw = await proc.stderr.readline()
            except ValueError:
                continue
            if not raw:
                return
            process.heard = time.monotonic()
            line = raw.decode(errors="replace").rstrip()
            if line:
                process.tail.append(line)
                log.info("generator[%d]: %s", proc.pid, line)

    @staticmethod
    def _decode(line: bytes) -> wire.Message | None:
        try:
            return wire.loads(line)
        except (ValueError, TypeError) as err:  # a torn last line after kill -9, or a stray print
            if line.strip():
                log.warning("ignored a line from the generator that is not a message: %s", err)
            return None

    async def _write(self, message: wire.Message) -> bool:
        """Send one message; False when the pipe is gone (the supervisor is about to notice)."""
        process = self._process
        if process is None or process.proc.stdin is None or not self._up:
            return False
        try:
            process.proc.stdin.write(wire.dumps(message).encode() + b"\n")
            await process.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True

    async def _send_job(self, job: _Job) -> None:
        job.sends += 1
        await self._write(job.msg)

    # -- supervision --

    async def _supervise(self) -> None:
        """Watch the process; should watching itself fail, end every job rather than leave it hanging."""
        try:
            await self._watch()
        except Exception as err:
            log.error("generator supervisor stopped: %s: %s", type(err).__name__, err)
            self._down = NOT_RUNNING
            for job_id in list(self._jobs):
                del self._jobs[job_id]
                self._events.put_nowait(wire.JobFailed(job_id, NOT_RUNNING))

    async def _watch(self) -> None:
        """Read events until the process's stdout closes; if it died, restart it and re-send its jobs."""
        quick_deaths = 0
        while self._process is not None:
            process = self._process
            await self._read_events(process.proc)
            self._up = False
            code = await process.proc.wait()
            await process.stderr
            if self._closing:
                return
            lived = time.monotonic() - process.started
            quick_deaths = quick_deaths + 1 if lived < 10 else 0
            failed = self._after_death()
            last = f"; its last line: {process.tail[-1]}" if process.tail else ""
            log.warning("generator process %d died (%s) after %.0fs; restarting it, %d job(s) to re-run, "
                        "%d failed%s", process.proc.pid, describe_exit(code), lived, len(self._jobs), failed, last)
            if quick_deaths > 1:  # a crash loop: do not spin
                await asyncio.sleep(min(30.0, 0.5 * 2 ** (quick_deaths - 2)))
            await self._restart()

    async def _read_events(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:
                log.warning("ignored a generator message longer than %d bytes", LINE_LIMIT)
                continue
            if not line:
                return
            message = self._decode(line)
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: wire.Message) -> None:
        """Forward an event about a job in flight; a job's first final event ends it."""
        if not isinstance(message, wire.JobStarted | wire.JobProgress | wire.FINAL):
            return
        if message.job_id not in self._jobs:
            return
        if isinstance(message, wire.FINAL):
            del self._jobs[message.job_id]
        self._events.put_nowait(message)

    def _after_death(self) -> int:
        """Settle the dead process's jobs: cancelled ones end, twice-crashed ones fail; the number failed."""
        failed = 0
        for job_id, job in list(self._jobs.items()):
            if job.cancelling:
                del self._jobs[job_id]
                self._events.put_nowait(wire.JobCancelled(job_id))
            elif job.sends >= 2:
                del self._jobs[job_id]
                self._events.put_nowait(wire.JobFailed(job_id, CRASHED_TWICE))
                failed += 1
        return failed

    async def _restart(self) -> None:
        """A new process, retried with growing pauses; its jobs fail while none can start."""
        attempt = 0
        while not self._closing:
            started = time.monotonic()
            try:
                process, ready = await self._spawn()
            except GeneratorStartError as err:
                attempt += 1
                pause = min(60.0, 2.0**attempt)
                log.error("generator could not restart: %s (retrying in %gs)", err, pause)
                self._down = NOT_RUNNING
                for job_id in list(self._jobs):
                    del self._jobs[job_id]
                    self._events.put_nowait(wire.JobFailed(job_id, NOT_RUNNING))
                await asyncio.sleep(pause)
                continue
            if self._closing:  # close() came while it loaded
                process.proc.kill()
                await process.proc.wait()
                return
            self._process, self.ready, self._down = process, ready, None
            self.restarts += 1
            log.info("generator restarted in %.1fs as process %d", time.monotonic() - started, process.proc.pid)
            resend = list(self._jobs.values())
            self._up = True
            for job in resend:
                if job.msg.job_id in self._jobs:
                    await self._send_job(job)
            return
