"""Pictures made off the step loop: the loop hands over token grids and steps on; PNGs come back later.
Pictures to start from are read and VQ-encoded here too, before their jobs join the loop, and pictures to
describe are read.

A VQ decode costs many decode steps (on a CPU, a picture costs more than a whole step of 32 images), and
inside the step loop every running job's next token would wait for it. So the loop hands a finished job's
grids and every preview's partial grids to `Pictures`: one thread VQ-decodes them on the device (on CUDA
on a stream of its own; previews of several jobs in one batch) while the next steps run, and a small
thread pool encodes the PNGs. Finished jobs come first, then pictures to encode (their jobs wait to start),
then previews; a job's preview still waiting when its next one (or its end) comes is sent without a picture.

`JobEvents` keeps each job's events in the order the step loop made them: an event waits behind the
job's picture in the making, so a job's Progress steps only go up and its final event comes last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from PIL import Image

from generator import protocol as wire
from generator.checkpoint import Checkpoint, first_line, is_device_failure
from generator.codec import (
    PictureError,
    blank_unfinished,
    decode_tokens,
    encode_image,
    encode_pictures,
    load_picture,
    make_grid,
    preview_tokens,
)

log = logging.getLogger("generator")
_T = TypeVar("_T")

PREVIEW_SIZE = 768  # longer side of a preview grid, in pixels
PICTURES_NICE = 10  # the picture threads' nice value above the step loop's


@dataclass
class Hold:
    """A place in a job's events for one a picture thread fills in later (None: nothing to send)."""

    job_id: str
    ready: bool = False
    message: wire.Message | None = None


class JobEvents:
    """Each job's events, sent in the order they were made even where some wait for a picture."""

    def __init__(self, put: Callable[[wire.Message], None]) -> None:
        self._put = put
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[Hold | wire.Message]] = {}  # jobs with an unfilled hold, and what is behind it

    def send(self, job_id: str, message: wire.Message) -> None:
        with self._lock:
            if job_id in self._waiting:
                self._waiting[job_id].append(message)
            else:
                self._put(message)

    def hold(self, job_id: str) -> Hold:
        hold = Hold(job_id)
        with self._lock:
            self._waiting.setdefault(job_id, deque()).append(hold)
        return hold

    def fill(self, hold: Hold, message: wire.Message | None) -> None:
        with self._lock:
            hold.ready, hold.message = True, message
            queue = self._waiting.get(hold.job_id)
            while queue and (not isinstance(queue[0], Hold) or queue[0].ready):
                item = queue.popleft()
                if isinstance(item, Hold):
                    if item.message is not None:
                        self._put(item.message)
                else:
                    self._put(item)
            if queue is not None and not queue:
                del self._waiting[hold.job_id]

    def waiting(self, job_id: str) -> bool:
        """Whether the job has an event waiting for a picture (its Done, perhaps)."""
        with self._lock:
            return job_id in self._waiting

    def drop(self) -> None:
        """Forget every waiting event: the device failed, and the process is about to exit."""
        with self._lock:
            self._waiting.clear()


@dataclass
class _Preview:
    job_id: str
    step: int
    total: int
    tokens: torch.Tensor  # [images, step] on the CPU
    hold: Hold
    kept: torch.Tensor | None = None  # [images, num_image_tokens] kept cells' codes, -1 elsewhere


@dataclass
class _Final:
    job_id: str
    tokens: torch.Tensor  # [images, num_image_tokens] on the CPU
    hold: Hold


Encoded = Callable[[torch.Tensor | None, str | None], None]  # (the grid [num_image_tokens], or why there is none)
Read = Callable[[Image.Image | None, str | None], None]  # (the picture, RGB, or why there is none)


@dataclass
class _Source:
    job_id: str
    data: bytes  # a picture file, as sent
    done: Encoded


@dataclass
class _Read:
    job_id: str
    data: bytes  # a picture file, as sent
    done: Read


@dataclass
class _Work:
    finals: deque[_Final] = field(default_factory=deque)
    sources: deque[_Source | _Read] = field(default_factory=deque)
    previews: dict[str, _Preview] = field(default_factory=dict)  # at most one a job, oldest job first


class Pictures(threading.Thread):
    """Turns token grids into PNG events off the step loop; `close()` finishes what it holds, then stops."""

    def __init__(self, checkpoint: Checkpoint, events: JobEvents, *, on_failure: Callable[[str, bool], None],
                 inject_failure: Callable[[str], None] | None = None, encoders: int = 2) -> None:
        super().__init__(name="generator-pictures", daemon=True)
        self.checkpoint = checkpoint
        self.events = events
        self.on_failure = on_failure  # (why, whether the device failed): the picture thread has stopped
        self.inject_failure = inject_failure  # tests: raises as a failing device would
        # On a CPU a batch is no faster than one picture after another; on a GPU it is.
        self.preview_batch = 8 if checkpoint.device.type == "cuda" else 1
        self._work = _Work()
        self._changed = threading.Condition()
        self._closing = False
        # Held while decoding; a new engine's CUDA graph capture takes it too, as other work on the device
        # during a capture makes the capture (or that work) fail.
        self.device_lock = threading.Lock()
        self._encoders = ThreadPoolExecutor(encoders, thread_name_prefix="generator-png")

    # -- the step loop's side --

    def preview(self, job_id: str, step: int, total: int, tokens: torch.Tensor, kept: torch.Tensor | None = None
                ) -> None:
        """A Progress event with a picture of the job's grids so far; a preview still waiting goes without."""
        hold = self.events.hold(job_id)
        with self._changed:
            self._supersede(job_id)
            self._work.previews[job_id] = _Preview(job_id, step, total, tokens, hold, kept)
            self._changed.notify()

    def source(self, job_id: str, data: bytes, done: Encoded) -> None:
        """Read a picture file and VQ-encode it; `done` gets its token grid, or a sentence saying why not."""
        with self._changed:
            self._work.sources.append(_Source(job_id, data, done))
            self._changed.notify()

    def read(self, job_id: str, data: bytes, done: Read) -> None:
        """Read a picture file to describe; `done` gets the picture, or a sentence saying why not."""
        with self._changed:
            self._work.sources.append(_Read(job_id, data, done))
            self._changed.notify()

    def finish(self, job_id: str, tokens: torch.Tensor) -> None:
        """The job's Done event, with one PNG per image (or Failed if they cannot be made)."""
        hold = self.events.hold(job_id)
        with self._changed:
            self._supersede(job_id)
            self._work.finals.append(_Final(job_id, tokens, hold))
            self._changed.notify()

    def forget(self, job_id: str) -> None:
        """The job ended without pictures (cancelled, failed): a preview still waiting goes without one."""
        with self._changed:
            self._supersede(job_id)

    def close(self) -> None:
        """Make the finished jobs' pictures still held, send waiting previews without theirs, and stop."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        if self.is_alive():
            self.join()
        self._encoders.shutdown(wait=True)

    def abandon(self) -> None:
        """Stop at once, sending nothing more: the device failed, and the process exits."""
        self.events.drop()
        with self._changed:
            self._work, self._closing = _Work(), True
            self._changed.notify()
        self._encoders.shutdown(wait=False, cancel_futures=True)

    def _supersede(self, job_id: str) -> None:
        old = self._work.previews.pop(job_id, None)
        if old is not None:
            self.events.fill(old.hold, wire.JobProgress(old.job_id, old.step, old.total))

    # -- the picture thread --

    def run(self) -> None:
        try:
            self._run()
        except _DeviceFailed as err:
            self.events.drop()
            self.on_failure(str(err), True)
        except Exception as err:  # a bug here: the process restarts rather than leave jobs without their end
            log.error("picture thread stopped: %s: %s", type(err).__name__, first_line(err))
            self.on_failure(f"{type(err).__name__}: {first_line(err)}", False)

    def _run(self) -> None:
        # Below the step loop's priority, as are the threads this one starts (decoder and PNG workers inherit
        # it): where both need the CPU, the steps go first and pictures take what is left.
        with contextlib.suppress(OSError, AttributeError):  # Linux: a thread's own nice value
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + PICTURES_NICE))
        stream = torch.cuda.Stream(self.checkpoint.device) if self.checkpoint.device.type == "cuda" else None
        with torch.inference_mode(), torch.cuda.stream(stream) if stream else contextlib.nullcontext():
            while (work := self._next()) is not None:
                if isinstance(work, _Final):
                    self._make_final(work)
                elif isinstance(work, _Source):
                    self._encode_source(work)
                elif isinstance(work, _Read):
                    self._read(work)
                else:
                    self._make_previews(work)

    def _next(self) -> _Final | _Source | _Read | list[_Preview] | None:
        """Finished jobs first, then pictures to encode or read, then up to a batch of previews; None once closing
        leaves nothing to finish (a job whose picture was not encoded or read yet never started: the bot sends it
        again)."""
        with self._changed:
            while not (self._work.finals or self._work.sources or self._work.previews or self._closing):
                self._changed.wait()
            if self._work.finals:
                return self._work.finals.popleft()
            if self._closing:
                for job_id in list(self._work.previews):
                    self._supersede(job_id)
                return None
            if self._work.sources:
                return self._work.sources.popleft()
            batch, images = [], 0
            for job_id, preview in list(self._work.previews.items()):
                if batch and images + len(preview.tokens) > self.preview_batch:
                    break
                batch.append(self._work.previews.pop(job_id))
                images += len(preview.tokens)
            return batch

    def _decode(self, tokens: torch.Tensor, chunk: int) -> list[Image.Image]:
        """VQ-decoded pictures; a device failure raises _DeviceFailed, anything else as it was."""
        return self._on_device(lambda: decode_tokens(self.checkpoint, tokens, chunk=chunk))

    def _on_device(self, work: Callable[[], _T]) -> _T:
        try:
            if self.inject_failure is not None:
                self.inject_failure("pictures")
            with self.device_lock:
                return work()
        except Exception as err:
            if is_device_failure(err):
                raise _DeviceFailed(first_line(err)) from None
            raise

    def _encode_source(self, source: _Source) -> None:
        try:
            picture = load_picture(source.data)
        except PictureError as err:
            source.done(None, str(err))
            return
        try:
            codes = self._on_device(lambda: encode_pictures(self.checkpoint, [picture])[0])
        except _DeviceFailed:
            raise
        except Exception as err:
            log.warning("encoding job %s's picture failed: %s", source.job_id, first_line(err))
            source.done(None, f"The picture could not be encoded ({first_line(err)}); try again.")
            return
        source.done(codes, None)

    def _read(self, read: _Read) -> None:
        try:
            picture = load_picture(read.data)
        except PictureError as err:
            read.done(None, str(err))
            return
        read.done(picture, None)

    def _submit(self, encode: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # abandoned: the pool takes no more work
            self._encoders.submit(encode, *args)

    def _make_final(self, final: _Final) -> None:
        try:
            images = self._decode(final.tokens, chunk=1)  # one at a time: pixels never depend on other images
        except _DeviceFailed:
            raise
        except Exception as err:
            self._final_failed(final, err)
            return
        self._submit(self._encode_final, final, images)

    def _encode_final(self, final: _Final, images: list[Image.Image]) -> None:
        try:
            pngs = [encode_image(image) for image in images]
        except Exception as err:
            self._final_failed(final, err)
            return
        self.events.fill(final.hold, wire.JobDone(final.job_id, pngs, final.tokens.tolist()))

    def _final_failed(self, final: _Final, err: Exception) -> None:
        log.warning("decoding job %s failed: %s", final.job_id, first_line(err))
        reason = f"The images could not be decoded ({first_line(err)}); try again."
        self.events.fill(final.hold, wire.JobFailed(final.job_id, reason))

    def _make_previews(self, previews: list[_Preview]) -> None:
        """Several jobs' previews through the decoder together, then each job's grid encoded on its own."""
        try:
            full = torch.cat([preview_tokens(self.checkpoint, p.tokens, p.kept) for p in previews])
            images = self._decode(full, chunk=self.preview_batch)
        except _DeviceFailed:
            raise
        except Exception as err:
            for preview in previews:
                self._preview_failed(preview, err)
            return
        for preview in previews:
            mine, images = images[: len(preview.tokens)], images[len(preview.tokens) :]
            self._submit(self._encode_preview, preview, mine)

    def _encode_preview(self, preview: _Preview, images: list[Image.Image]) -> None:
        try:
            grid = make_grid(blank_unfinished(self.checkpoint, images, preview.step, preview.kept))
            scale = PREVIEW_SIZE / max(grid.size)
            if scale < 1:
                grid = grid.resize((round(grid.width * scale), round(grid.height * scale)))
            png = encode_image(grid)
        except Exception as err:
            self._preview_failed(preview, err)
            return
        self.events.fill(preview.hold, wire.JobProgress(preview.job_id, preview.step, preview.total, png))

    def _preview_failed(self, preview: _Preview, err: Exception) -> None:
        log.warning("preview of job %s failed: %s", preview.job_id, first_line(err))
        self.events.fill(preview.hold, wire.JobProgress(preview.job_id, preview.step, preview.total))


class _DeviceFailed(Exception):
    """The device failed while making pictures; the process must exit and be restarted."""
