"""The generator process: load the model once, then speak the protocol over stdin/stdout.

One JSON message per line: commands (Generate, Describe, Cancel, Shutdown) arrive on stdin; Ready, then job
events (Started, Progress, Done, Described, Failed, Cancelled) leave on stdout. Anything else the process prints goes to
stderr, where a start-up failure is the last line, `error: <one sentence>`, with exit code 2.

An asyncio loop owns the pipes; one thread (`EngineThread`) owns the engine. Two `janus` queues (a sync
and an async side each) bridge them, as aiosqlite bridges its connection thread: commands in, events out.
The engine thread runs a step whenever a job is running, takes commands between steps and admits queued
jobs first-in first-out as image slots free up. It makes no pictures: finished and preview token grids go
to `generator.pictures`, whose threads decode and encode them while the next steps run; a job that starts
from a picture file waits there too, for its VQ encoding, before it is queued.

A describe job's picture is read on the picture thread too; then, between two steps, the engine thread runs the
oldest waiting describe and those that can share its call (same instruction, token limit, temperature and count;
at most `max_batch_images` rows) as one `generator.describe` call, and answers Started, then Described. In the
step loop rather than as rows of the engine or on a thread of its own: the engine keeps its static shapes and
graphs, no two threads contend for the device, and running image jobs wait for exactly one describe call before
their next step. Describes take no image slots (the bot counts none for them), so Ready says nothing of them.

Shutdown (the command, SIGTERM or the end of input) finishes the current step (or describe call), then the
pictures of jobs whose tokens are all sampled (their Done is sent: the bot would otherwise run them again); jobs
still sampling, and describe jobs not yet answered, get no final event, and the bot re-queues them. A device
failure (a CUDA error, not out of memory), in a step, a describe call or while making pictures, ends the process
at once with exit code 3 and no final events for its jobs: the supervisor restarts it and sends them again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import janus
import torch
from PIL import Image

from generator import protocol as wire
from generator.checkpoint import (
    Checkpoint,
    CheckpointError,
    first_line,
    is_device_failure,
    load_checkpoint,
    resolve_model,
)
from generator.codec import region_cells
from generator.describe import DEFAULT_INSTRUCTION, MAX_NEW_TOKENS, describe
from generator.engine import Engine, Request, RequestError, StepReport
from generator.pictures import JobEvents, Pictures
from generator.prompt import template_tokens, tokenizer_file
from generator.protocol import add_process_arguments

log = logging.getLogger("generator")

LINE_LIMIT = 64 * 2**20  # longest command line read: a picture of MAX_IMAGE_BYTES in base64, and room to spare
EXIT_LOAD_FAILED = 2
EXIT_DEVICE_FAILED = 3


class DeviceFailure(Exception):
    """The device is unusable (a CUDA error, not out-of-memory); the process must exit and be restarted."""


@dataclass(frozen=True)
class EngineOptions:
    """How the engine thread builds (and after a failure, rebuilds) its engine."""

    max_batch_images: int = 16
    preview_every: int = 0  # steps between previews; 0 = none
    compile: bool = False  # the decode step through torch.compile (the engine falls back to eager itself)


def default_preview_every(checkpoint: Checkpoint) -> int:
    """A preview every 5% of an image's tokens."""
    return max(1, round(checkpoint.num_image_tokens / 20))


class FailureFlag:
    """Tests only: when the file appears, the next step (or, if it says `pictures` or `describe`, the next picture
    or describe call) fails as a CUDA error would. The file goes first, so the process the supervisor starts next
    runs on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, where: str) -> None:
        try:
            said = self.path.read_text().strip() or "step"
        except OSError:
            return
        if said == where:
            self.path.unlink(missing_ok=True)
            raise RuntimeError(f"CUDA error: an illegal memory access was encountered (simulated in the {where})")


@dataclass(frozen=True)
class _SourceEncoded:
    """In the inbox: a job's picture to start from is encoded (`codes`), or could not be (`error`)."""

    job_id: str
    codes: torch.Tensor | None
    error: str | None


@dataclass(frozen=True)
class _PictureRead:
    """In the inbox: a describe job's picture is read (`picture`, RGB), or could not be (`error`)."""

    job_id: str
    picture: Image.Image | None
    error: str | None


@dataclass(frozen=True)
class _Describing:
    """A describe job whose picture is read, waiting for a describe call between two steps."""

    job_id: str
    picture: Image.Image
    count: int
    temperature: float
    seed: int
    instruction: str
    max_tokens: int

    @property
    def call(self) -> tuple[str, int, float, int]:
        """What the jobs of one describe call share."""
        return self.instruction, self.max_tokens, self.temperature, self.count

    @property
    def rows(self) -> int:
        return self.count if self.temperature > 0 else 1


@dataclass(frozen=True)
class _PicturesFailed:
    """In the inbox: the picture thread has stopped, on a device failure or a bug."""

    reason: str
    device: bool


Inbox = wire.Message | _SourceEncoded | _PictureRead | _PicturesFailed  # commands, and the picture thread's news


# -- the engine thread ------------------------------------------------------------------------------


class EngineThread(threading.Thread):
    """Owns the engine: takes commands from `inbox`, puts events on `outbox`, then None when it stops."""

    def __init__(self, checkpoint: Checkpoint, options: EngineOptions,
                 inbox: janus.SyncQueue[Inbox], outbox: janus.SyncQueue[wire.Message | None], *,
                 step_delay: float = 0.0, step_log: TextIO | None = None,
                 inject_failure: Callable[[str], None] | None = None) -> None:
        super().__init__(name="generator-engine", daemon=True)
        self.checkpoint = checkpoint
        self.options = options
        self.inbox = inbox
        self.outbox = outbox
        self.step_delay = step_delay  # seconds slept after each step; crash tests use it to catch a job mid-way
        self.step_log = step_log  # one line a step for `janus-bot bench --serving`: start, end, whether busy after
        self.inject_failure = inject_failure
        self.codebook = int(checkpoint.model.model.generation_embeddings.num_embeddings)
        self.pending: deque[Request] = deque()
        self.encoding: dict[str, Request] = {}  # jobs whose picture the picture thread is encoding
        self.reading: dict[str, wire.Describe] = {}  # describe jobs whose picture the picture thread is reading
        self.describing: deque[_Describing] = deque()
        self.running: dict[str, Request] = {}
        self.percent: dict[str, int] = {}
        self.reports: list[StepReport] = []
        self.events = JobEvents(outbox.put)
        self.pictures = Pictures(checkpoint, self.events, inject_failure=inject_failure,
                                 on_failure=lambda why, device: inbox.put(_PicturesFailed(why, device)))
        with torch.inference_mode():
            self.engine = self._new_engine()
        self.dirty = False  # an admission failed half-way; rebuild the engine once it is idle
        self.stopping = False
        self.exit_code = 0

    def _new_engine(self) -> Engine:
        return Engine(self.checkpoint, max_batch_images=self.options.max_batch_images,
                      preview_every=self.options.preview_every, on_progress=self.reports.append,
                      compile=self.options.compile)

    def run(self) -> None:
        self.pictures.start()
        try:
            with torch.inference_mode():
                while not self.stopping:
                    self._take_commands(block=not self.engine.busy and not self.pending and not self.describing)
                    if self.stopping:
                        break
                    if self.dirty and not self.engine.busy:
                        self._rebuild()
                    self._admit()
                    if self.describing:
                        self._describe()
                    if self.engine.busy:
                        self._step()
        except DeviceFailure as err:
            log.error("device failure, exiting so the bot restarts the generator: %s", err)
            self.exit_code = EXIT_DEVICE_FAILED
        except Exception as err:  # a bug in this loop: one line, and the supervisor restarts the process
            log.error("engine thread stopped: %s: %s", type(err).__name__, first_line(err))
            self.exit_code = 1
        if self.exit_code == EXIT_DEVICE_FAILED:
            self.pictures.abandon()
        else:
            self.pictures.close()  # finished jobs get their Done
        unfinished = (len(self.running) + len(self.pending) + len(self.encoding) + len(self.reading)
                      + len(self.describing))
        if unfinished:
            log.info("stopping with %d unfinished job(s)", unfinished)
        self.outbox.put(None)

    # -- commands --

    def _take_commands(self, block: bool) -> None:
        commands = [self.inbox.get()] if block else []
        while True:
            try:
                commands.append(self.inbox.get_nowait())
            except janus.SyncQueueEmpty:
                break
        for command in commands:
            if isinstance(command, _PicturesFailed):
                raise (DeviceFailure if command.device else RuntimeError)(command.reason)
            if isinstance(command, _SourceEncoded):
                self._encoded(command)
            elif isinstance(command, _PictureRead):
                self._read(command)
            elif isinstance(command, wire.Generate):
                self._queue(command)
            elif isinstance(command, wire.Describe):
                self._queue_describe(command)
            elif isinstance(command, wire.Cancel):
                self._cancel(command.job_id)
            elif isinstance(command, wire.Shutdown):
                self.stopping = True  # commands after it are ignored; the current step has finished

    def _known(self, job_id: str) -> bool:
        """Whether a job of this id is queued, running or waiting for its pictures."""
        return (job_id in self.running or job_id in self.encoding or job_id in self.reading
                or any(r.id == job_id for r in self.pending) or any(d.job_id == job_id for d in self.describing)
                or self.events.waiting(job_id))

    def _queue(self, msg: wire.Generate) -> None:
        if self._known(msg.job_id):
            log.warning("job %s is already queued or running; ignored the second Generate", msg.job_id)
            return
        try:
            request = self._request(msg)
            if msg.image is None:
                self.engine.validate(request)
            else:  # everything but the grid the picture will give
                self.engine.validate(dataclasses.replace(request, forced=torch.zeros(self.engine.n_tokens,
                                                                                     dtype=torch.long)))
        except RequestError as err:
            self.events.send(msg.job_id, wire.JobFailed(msg.job_id, str(err)))
            return
        except Exception as err:
            self.events.send(msg.job_id, wire.JobFailed(
                msg.job_id, f"The job could not be read ({first_line(err)}); check its options."))
            return
        if msg.image is None:
            self.pending.append(request)
            return
        self.encoding[request.id] = request

        def encoded(codes: torch.Tensor | None, error: str | None) -> None:  # on the picture thread
            with contextlib.suppress(RuntimeError):  # the inbox has closed: the process is stopping
                self.inbox.put(_SourceEncoded(request.id, codes, error))

        self.pictures.source(request.id, msg.image, encoded)

    def _encoded(self, encoded: _SourceEncoded) -> None:
        """A job's picture is encoded: it joins the queue (or fails, with the sentence saying why)."""
        request = self.encoding.pop(encoded.job_id, None)
        if request is None:  # cancelled meanwhile
            return
        if encoded.codes is None:
            self.events.send(request.id, wire.JobFailed(request.id, encoded.error or "The picture could not be read."))
            return
        request.forced = encoded.codes
        self.pending.append(request)

    def _queue_describe(self, msg: wire.Describe) -> None:
        """A describe job: checked, then its picture read on the picture thread before it waits for a call."""
        if self._known(msg.job_id):
            log.warning("job %s is already queued or running; ignored the second Describe", msg.job_id)
            return
        try:
            if isinstance(msg.seed, bool) or not isinstance(msg.seed, int):
                raise wire.OptionError(f"The seed must be a whole number, not {msg.seed!r}.")
            wire.check_describe(msg.count, msg.temperature, msg.seed, msg.instruction, msg.max_tokens)
            if not isinstance(msg.image, bytes) or not msg.image:
                raise wire.OptionError("The picture to describe must be a picture file's bytes.")
        except wire.OptionError as err:
            self.events.send(msg.job_id, wire.JobFailed(msg.job_id, str(err)))
            return
        self.reading[msg.job_id] = msg

        def read(picture: Image.Image | None, error: str | None) -> None:  # on the picture thread
            with contextlib.suppress(RuntimeError):  # the inbox has closed: the process is stopping
                self.inbox.put(_PictureRead(msg.job_id, picture, error))

        self.pictures.read(msg.job_id, msg.image, read)

    def _read(self, read: _PictureRead) -> None:
        """A describe job's picture is read: it waits for a describe call (or fails, with the sentence saying why)."""
        msg = self.reading.pop(read.job_id, None)
        if msg is None:  # cancelled meanwhile
            return
        if read.picture is None:
            self.events.send(msg.job_id, wire.JobFailed(msg.job_id, read.error or "The picture could not be read."))
            return
        self.describing.append(_Describing(
            msg.job_id, read.picture, msg.count, float(msg.temperature), msg.seed,
            DEFAULT_INSTRUCTION if msg.instruction is None else msg.instruction,
            MAX_NEW_TOKENS if msg.max_tokens is None else msg.max_tokens))

    def _request(self, msg: wire.Generate) -> Request:
        """An engine request for a Generate message; RequestError says what is wrong with it."""
        if not isinstance(msg.prompt, str):
            raise RequestError("The prompt must be text.")
        if isinstance(msg.count, bool) or not isinstance(msg.count, int):
            raise RequestError(f"The image count must be a whole number, not {msg.count!r}.")
        if isinstance(msg.seed, bool) or not isinstance(msg.seed, int):
            raise RequestError(f"The seed must be a whole number, not {msg.seed!r}.")
        for name, value in (("guidance weight", msg.cfg), ("temperature", msg.temperature)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"The {name} must be a number, not {value!r}.")
        if msg.negative is not None and not isinstance(msg.negative, str):
            raise RequestError("The negative prompt must be text.")
        try:
            negative = wire.check_negative(msg.negative)
        except wire.OptionError as err:
            raise RequestError(str(err)) from None
        forced, keep = self._start_from(msg)
        return Request(msg.prompt, num_images=msg.count, cfg=float(msg.cfg), temperature=float(msg.temperature),
                       seed=msg.seed, prefix=self._prefix(msg), negative=negative, forced=forced, keep=keep,
                       id=msg.job_id)

    def _start_from(self, msg: wire.Generate) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A job starting from a picture: its grid (None while a picture file waits to be encoded) and the cells
        kept, all but those the region covers; (None, None) for a job that starts from nothing."""
        if msg.image is None and msg.codes is None:
            if msg.region is not None:
                raise RequestError("A region says which part of a picture to change; send the picture with it.")
            return None, None
        if msg.image is not None and msg.codes is not None:
            raise RequestError("Send a picture or a token grid to start from, not both.")
        if msg.prefix is not None:
            raise RequestError("Give a token prefix or a picture to start from, not both.")
        try:
            region = wire.check_region(wire.DEFAULT_REGION if msg.region is None else msg.region)
        except wire.OptionError as err:
            raise RequestError(str(err)) from None
        keep = ~region_cells(self.checkpoint.grid_size, region)
        if msg.image is not None:
            if not isinstance(msg.image, bytes) or not msg.image:
                raise RequestError("The picture to start from must be a picture file's bytes.")
            if len(msg.image) > wire.MAX_IMAGE_BYTES:
                raise RequestError(f"The picture is {len(msg.image) / 2**20:.1f} MB; send one of at most "
                                   f"{wire.MAX_IMAGE_BYTES / 2**20:g} MB.")
            return None, keep
        total = self.checkpoint.num_image_tokens
        codes = msg.codes
        if not (isinstance(codes, list) and len(codes) == total and all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < self.codebook for t in codes)):
            raise RequestError(f"A token grid to start from must be {total} token ids ({self.checkpoint.grid_size} "
                               f"rows of {self.checkpoint.grid_size}), each from 0 to {self.codebook - 1}.")
        return torch.tensor(codes, dtype=torch.long), keep

    def _prefix(self, msg: wire.Generate) -> torch.Tensor | None:
        if msg.prefix is None:
            return None
        rows = msg.prefix
        ok = isinstance(rows, list) and len(rows) in (1, msg.count) and all(
            isinstance(row, list) and len(row) == len(rows[0]) and all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < self.codebook for t in row)
            for row in rows
        )
        if not ok:
            raise RequestError(
                f"A token prefix must be one list of token ids per image (or one for all), all of the same "
                f"length, each id from 0 to {self.codebook - 1}."
            )
        prefix = torch.tensor(rows, dtype=torch.long)  # [count or 1, k]
        return prefix[0] if len(rows) == 1 else prefix

    def _cancel(self, job_id: str) -> None:
        """A queued or running job ends as Cancelled; one whose pictures are being made gets its Done. A describe
        job is cancelled until its call starts; its call is over before the Cancel is read."""
        if self.encoding.pop(job_id, None) is not None or self.reading.pop(job_id, None) is not None:
            self.events.send(job_id, wire.JobCancelled(job_id))  # its picture's codes are dropped when they come
            return
        for waiting in self.describing:
            if waiting.job_id == job_id:
                self.describing.remove(waiting)
                self.events.send(job_id, wire.JobCancelled(job_id))
                return
        for request in self.pending:
            if request.id == job_id:
                self.pending.remove(request)
                self.events.send(job_id, wire.JobCancelled(job_id))
                return
        if job_id in self.running:
            self.engine.cancel(job_id)
            self._end(wire.JobCancelled(job_id))

    def _end(self, message: wire.JobFailed | wire.JobCancelled) -> None:
        """A running job ends without pictures."""
        self.running.pop(message.job_id, None)
        self.percent.pop(message.job_id, None)
        self.pictures.forget(message.job_id)
        self.events.send(message.job_id, message)

    # -- engine --

    def _admit(self) -> None:
        """Add queued jobs, oldest first, while they fit; a job that does not fit waits for the next free slots."""
        batch: list[Request] = []
        free = self.engine.free_images
        while self.pending and self.pending[0].num_images <= free:
            request = self.pending.popleft()
            free -= request.num_images
            batch.append(request)
        if not batch:
            return
        try:
            failed = self.engine.add(batch)
        except Exception as err:
            if is_device_failure(err):
                raise DeviceFailure(first_line(err)) from None
            log.warning("admitting %d job(s) failed: %s", len(batch), first_line(err))
            self.reports.clear()
            self.dirty = True
            for request in batch:
                self.events.send(request.id, wire.JobFailed(
                    request.id, f"The generator could not start this job ({first_line(err)}); "
                                f"try again, perhaps with fewer images."))
            return
        refused = {result.request.id: result.error or "The generator could not start this job." for result in failed}
        for request in batch:
            if request.id in refused:  # out of memory even alone: this job only
                self.events.send(request.id, wire.JobFailed(request.id, refused[request.id]))
                continue
            self.running[request.id] = request
            self.percent[request.id] = -1
            self.events.send(request.id, wire.JobStarted(request.id))
        self._report()

    def _step(self) -> None:
        started = time.monotonic()
        try:
            if self.inject_failure is not None:
                self.inject_failure("step")
            results = self.engine.step()
        except Exception as err:
            if is_device_failure(err):
                raise DeviceFailure(first_line(err)) from None
            log.warning("step failed for %d job(s): %s", len(self.running), first_line(err))
            reason = f"The generator failed while making these images ({first_line(err)}); try again."
            for job_id in list(self.running):
                self._end(wire.JobFailed(job_id, reason))
            self._rebuild()
            return
        self._report()
        for result in results:
            if result.status == "done" and result.tokens is not None:
                self.running.pop(result.request.id, None)
                self.percent.pop(result.request.id, None)
                self.pictures.finish(result.request.id, result.tokens)  # its Done follows, off this loop
            elif result.status == "failed":  # the engine gave up on this job alone (out of memory)
                self._end(wire.JobFailed(result.request.id, result.error or "The generator failed on this job."))
        if self.step_log is not None:
            self.step_log.write(f"{started:.6f} {time.monotonic():.6f} {int(self.engine.busy or bool(self.pending))}\n")
        if self.step_delay:
            time.sleep(self.step_delay)

    def _describe(self) -> None:
        """One describe call: the oldest waiting job and the later ones that can share its call, up to
        `max_batch_images` rows (a row's cache is about an image row's, so a call needs less than the slots)."""
        first, rows = self.describing[0], 0
        batch: list[_Describing] = []
        for job in self.describing:
            if job.call == first.call and (not batch or rows + job.rows <= self.options.max_batch_images):
                batch.append(job)
                rows += job.rows
        for job in batch:
            self.describing.remove(job)
            self.events.send(job.job_id, wire.JobStarted(job.job_id))
        started = time.monotonic()
        try:
            if self.inject_failure is not None:
                self.inject_failure("describe")
            results = describe(self.checkpoint, [job.picture for job in batch], count=first.count,
                               temperature=first.temperature, seed=[job.seed for job in batch],
                               instruction=first.instruction, max_new_tokens=first.max_tokens)
        except Exception as err:
            if is_device_failure(err):
                raise DeviceFailure(first_line(err)) from None
            log.warning("describing %d picture(s) failed: %s", len(batch), first_line(err))
            for job in batch:
                self.events.send(job.job_id, wire.JobFailed(
                    job.job_id, f"The generator could not describe this picture ({first_line(err)}); try again."))
            return
        for job, result in zip(batch, results):
            self.events.send(job.job_id, wire.Described(job.job_id, result.prompts, result.tokens))
        if self.step_log is not None:
            self.step_log.write(f"describe {started:.6f} {time.monotonic():.6f} {rows}\n")

    def _rebuild(self) -> None:
        """A fresh engine after a failure: nothing half-written survives into the next job."""
        self.reports.clear()
        del self.engine
        with self.pictures.device_lock:  # no picture decoding while the new engine captures its graphs
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.engine = self._new_engine()
        self.dirty = False

    def _report(self) -> None:
        """Progress for each running job when its percentage moves; a preview's picture is made off this loop."""
        reports = list(self.reports)
        self.reports.clear()
        for report in reports:
            job_id = report.request.id
            if job_id not in self.running:
                continue
            percent = report.step * 100 // report.total
            if report.tokens is None and percent == self.percent[job_id]:
                continue
            self.percent[job_id] = percent
            if report.tokens is None:
                self.events.send(job_id, wire.JobProgress(job_id, report.step, report.total))
            else:
                self.pictures.preview(job_id, report.step, report.total, report.tokens, report.kept)


# -- event loop -------------------------------------------------------------------------------------


async def _read_commands(reader: asyncio.StreamReader, inbox: janus.AsyncQueue[Inbox]) -> None:
    """Commands from stdin into the engine thread's inbox; end of input (the bot is gone) means Shutdown."""
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # longer than LINE_LIMIT: the rest of the line is dropped
            log.warning("ignored a command longer than %d bytes", LINE_LIMIT)
            continue
        if not line:
            break
        if not line.strip():
            continue
        try:
            message = wire.loads(line)
        except (ValueError, TypeError) as err:
            log.warning("ignored a line that is not a command: %s", first_line(err))
            continue
        if not isinstance(message, wire.Generate | wire.Describe | wire.Cancel | wire.Shutdown):
            log.warning("ignored a %s message: only generate, describe, cancel and shutdown are commands",
                        message.type)
            continue
        await inbox.put(message)
        if isinstance(message, wire.Shutdown):
            return
    await inbox.put(wire.Shutdown())


def _is_stream(file: BinaryIO) -> bool:
    """A pipe or socket, which the event loop can watch (a regular file, /dev/null or a terminal it cannot)."""
    mode = os.fstat(file.fileno()).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def _line_reader(stdin: BinaryIO) -> asyncio.StreamReader:
    """Lines of stdin: through the loop's pipe transport, or fed by a thread when stdin is a file or terminal."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    if _is_stream(stdin):
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
        return reader

    def feed() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
            for line in stdin:
                loop.call_soon_threadsafe(reader.feed_data, line)
            loop.call_soon_threadsafe(reader.feed_eof)

    threading.Thread(target=feed, name="generator-stdin", daemon=True).start()
    return reader


async def _line_writer(stdout: BinaryIO) -> Callable[[wire.Message], Awaitable[None]]:
    """A function that sends one message as one line: through the loop's pipe transport, or plainly to a file."""
    if not _is_stream(stdout):
        async def write_file(message: wire.Message) -> None:
            stdout.write(wire.dumps(message).encode() + b"\n")
            stdout.flush()

        return write_file
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    async def write_pipe(message: wire.Message) -> None:
        writer.write(wire.dumps(message).encode() + b"\n")
        await writer.drain()

    return write_pipe


async def serve(checkpoint: Checkpoint, options: EngineOptions, stdin: BinaryIO, stdout: BinaryIO, *,
                step_delay: float = 0.0, step_log: TextIO | None = None,
                inject_failure: Callable[[str], None] | None = None) -> int:
    """Send Ready, run jobs until Shutdown or end of input; the exit code."""
    loop = asyncio.get_running_loop()
    reader = await _line_reader(stdin)
    write = await _line_writer(stdout)
    inbox: janus.Queue[Inbox] = janus.Queue()
    outbox: janus.Queue[wire.Message | None] = janus.Queue()
    engine = EngineThread(checkpoint, options, inbox.sync_q, outbox.sync_q, step_delay=step_delay, step_log=step_log,
                          inject_failure=inject_failure)
    loop.add_signal_handler(signal.SIGTERM, inbox.async_q.put_nowait, wire.Shutdown())

    prompt_tokens = engine.engine.max_prompt_tokens - template_tokens(checkpoint.processor)
    await write(wire.Ready(model=checkpoint.name, device=str(checkpoint.device), image_size=checkpoint.image_size,
                           grid_size=checkpoint.grid_size, max_batch_images=options.max_batch_images,
                           prompt_tokens=prompt_tokens, tokenizer=tokenizer_file(checkpoint.processor)))
    engine.start()
    commands = asyncio.create_task(_read_commands(reader, inbox.async_q))
    try:
        while (event := await outbox.async_q.get()) is not None:
            await write(event)
    except (BrokenPipeError, ConnectionResetError):
        log.info("the bot closed the pipe; stopping")
    finally:
        inbox.async_q.put_nowait(wire.Shutdown())  # unless the engine thread has stopped already
        commands.cancel()
        await asyncio.to_thread(engine.join)
        inbox.close()
        outbox.close()
    return engine.exit_code


# -- command line -----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m generator", description="The janus-bot generator process.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="load a model, then run jobs sent as JSON lines on stdin")
    add_process_arguments(serve)
    serve.add_argument("--step-log", type=Path, help=argparse.SUPPRESS)  # `janus-bot bench --serving` reads it
    serve.add_argument("--simulate-device-failure", type=Path, metavar="FILE", help=argparse.SUPPRESS)  # tests
    return parser


def _protocol_stdout() -> BinaryIO:
    """The real stdout for protocol lines; fd 1 is pointed at stderr so a stray print cannot corrupt them."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = _protocol_stdout()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("generator.checkpoint").setLevel(logging.WARNING)  # said once below, with the timing
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the bot, which sends Shutdown

    if args.max_batch_images < 1:
        return _fail(f"--max-batch-images must be at least 1; you gave {args.max_batch_images}.")
    if args.preview_every is not None and args.preview_every < 0:
        return _fail(f"--preview-every must be 0 or more; you gave {args.preview_every}.")
    started = time.perf_counter()
    try:
        checkpoint = load_checkpoint(resolve_model(args.model or None), device=args.device or None, dtype=args.dtype,
                                     quantize=args.quantize)
    except CheckpointError as err:
        return _fail(str(err))
    except (RuntimeError, ValueError) as err:  # the device failed while the model moved there
        return _fail(f"Cannot use device {args.device!r}: {first_line(err)}")
    except Exception as err:
        return _fail(f"The model could not be loaded: {type(err).__name__}: {first_line(err)}")
    preview_every = default_preview_every(checkpoint) if args.preview_every is None else args.preview_every
    options = EngineOptions(max_batch_images=args.max_batch_images, preview_every=preview_every,
                            compile=args.compile)
    log.info("loaded %s on %s in %s%s in %.1fs; %d image slots", checkpoint.name, checkpoint.device,
             str(checkpoint.dtype).removeprefix("torch."),
             "" if checkpoint.quantize == "none" else f" (language model layers {checkpoint.quantize})",
             time.perf_counter() - started, options.max_batch_images)
    try:
        with contextlib.ExitStack() as files:
            step_log = files.enter_context(open(args.step_log, "w", buffering=1)) if args.step_log else None
            inject = FailureFlag(args.simulate_device_failure) if args.simulate_device_failure else None
            return asyncio.run(serve(checkpoint, options, sys.stdin.buffer, out, step_delay=args.step_delay,
                                     step_log=step_log, inject_failure=inject))
    except torch.OutOfMemoryError:
        return _fail(f"The device has too little memory for {options.max_batch_images} image slots; "
                     f"lower --max-batch-images.")
    except Exception as err:  # before Ready this is the start-up error the bot reports
        print(f"error: The generator stopped: {type(err).__name__}: {first_line(err)}", file=sys.stderr, flush=True)
        return 1


def _fail(sentence: str) -> int:
    print(f"error: {sentence}", file=sys.stderr, flush=True)
    return EXIT_LOAD_FAILED
