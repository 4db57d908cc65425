"""`python -m generator serve` in a real process with the tiny checkpoint, spoken to in raw protocol lines;
and its worker thread in this process, with an engine step made to fail."""

from __future__ import annotations

import asyncio
import io
import queue
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import janus
import pytest
import torch
from PIL import Image

from generator import protocol as wire
from generator.engine import Request, generate
from generator.server import EXIT_DEVICE_FAILED, EngineOptions, EngineThread

TIMEOUT = 60.0


class Server:
    """A generator process; events are read by a thread so a test can wait for them with a timeout."""

    def __init__(self, model: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "generator", "serve", "--model", str(model), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.events: queue.Queue[wire.Message | None] = queue.Queue()
        self.backlog: list[wire.Message] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(wire.loads(line))
        self.events.put(None)

    def send(self, message: wire.Message) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(wire.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def next(self) -> wire.Message | None:
        return self.events.get(timeout=TIMEOUT)

    def until_final(self, job_id: str) -> list[wire.Message]:
        """Events of one job up to its Done, Failed or Cancelled; other jobs' events wait in the backlog."""
        seen = [e for e in self.backlog if getattr(e, "job_id", None) == job_id]
        self.backlog = [e for e in self.backlog if getattr(e, "job_id", None) != job_id]
        while not (seen and isinstance(seen[-1], wire.FINAL)):
            event = self.next()
            if event is None:
                raise AssertionError(f"the generator exited before job {job_id} ended: {seen}")
            (seen if getattr(event, "job_id", None) == job_id else self.backlog).append(event)
        return seen


@pytest.fixture(scope="module")
def server(tiny_dir: Path) -> Iterator[Server]:
    server = Server(tiny_dir, "--max-batch-images", "4", "--preview-every", "12", "--step-delay", "0.02")
    ready = server.next()
    assert isinstance(ready, wire.Ready), server.proc.stderr.read().decode() if server.proc.stderr else ""
    assert (ready.image_size, ready.grid_size, ready.max_batch_images) == (96, 6, 4)
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_job_round_trip(server: Server) -> None:
    server.send(wire.Generate("trip", "a red circle", count=3, cfg=5.0, temperature=1.0, seed=11))
    events = server.until_final("trip")
    assert isinstance(events[0], wire.JobStarted)
    progress = [e for e in events if isinstance(e, wire.JobProgress)]
    steps = [p.step for p in progress]
    assert steps == sorted(steps) and steps[-1] == 36 and all(p.total == 36 for p in progress)
    previews = [p for p in progress if p.preview is not None]
    assert [p.step for p in previews] == [12, 24]
    assert _png(previews[0].preview).size == (2 * 96, 2 * 96)  # three images on a 2x2 grid
    done = events[-1]
    assert isinstance(done, wire.JobDone)
    assert [_png(image).size for image in done.images] == [(96, 96)] * 3
    assert len(done.tokens) == 3 and all(len(row) == 36 for row in done.tokens)
    assert all(0 <= t < 256 for row in done.tokens for t in row)


def test_prefix_forces_first_tokens_and_matches_the_engine(server: Server, tiny) -> None:
    prefix = [[5, 6, 7, 8, 9, 10], [200, 201, 202, 203, 204, 205]]
    server.send(wire.Generate("pre", "a blue house", count=2, cfg=3.0, temperature=0.0, seed=1, prefix=prefix))
    done = server.until_final("pre")[-1]
    assert isinstance(done, wire.JobDone)
    assert [row[:6] for row in done.tokens] == prefix
    [local] = generate(tiny, [Request("a blue house", 2, cfg=3.0, temperature=0.0, prefix=torch.tensor(prefix))])
    assert done.tokens == local.tokens.tolist()  # the process runs the same engine

    server.send(wire.Generate("pre1", "a blue house", count=2, cfg=3.0, temperature=1.0, seed=1, prefix=[[1, 2, 3]]))
    done = server.until_final("pre1")[-1]
    assert isinstance(done, wire.JobDone) and [row[:3] for row in done.tokens] == [[1, 2, 3], [1, 2, 3]]


def test_cancel_running_and_queued_jobs(server: Server) -> None:
    server.send(wire.Generate("big", "a green tree", count=4, cfg=5.0, temperature=1.0, seed=2))
    server.send(wire.Generate("queued", "a cat", count=1, cfg=5.0, temperature=1.0, seed=3))  # no free slot yet
    server.send(wire.Cancel("queued"))
    assert server.until_final("queued") == [wire.JobCancelled("queued")]  # never started

    server.send(wire.Generate("next", "a dog", count=1, cfg=5.0, temperature=1.0, seed=4))
    server.send(wire.Cancel("big"))
    big = server.until_final("big")
    assert isinstance(big[0], wire.JobStarted) and big[-1] == wire.JobCancelled("big")
    assert isinstance(server.until_final("next")[-1], wire.JobDone)  # admitted once the slots were freed
    server.send(wire.Cancel("next"))  # already finished: no answer
    server.send(wire.Generate("after", "a dog", count=1, cfg=5.0, temperature=1.0, seed=4))
    assert isinstance(server.until_final("after")[-1], wire.JobDone)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"prompt": "   "}, "The prompt is empty; describe the picture you want."),
        ({"count": 5}, "Ask for between 1 and 4 images, not 5."),
        ({"count": "4"}, "The image count must be a whole number, not '4'."),
        ({"prefix": [[1, 2], [3]]}, "A token prefix must be one list of token ids per image"),
        ({"prefix": [[1, 999]]}, "each id from 0 to 255."),
    ],
)
def test_invalid_job_fails_with_a_sentence(server: Server, fields: dict, reason: str) -> None:
    job = {"job_id": "bad", "prompt": "a cat", "count": 2, "cfg": 5.0, "temperature": 1.0, "seed": 0} | fields
    server.send(wire.Generate(**job))
    [failed] = server.until_final("bad")
    assert isinstance(failed, wire.JobFailed) and reason in failed.reason and failed.reason.endswith(".")


def test_garbage_lines_and_bad_jobs_leave_the_process_working(server: Server) -> None:
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"not json\n{\"type\": \"nope\"}\n\n")
    server.proc.stdin.flush()
    server.send(wire.Generate("ok", "a cat", count=1, cfg=5.0, temperature=1.0, seed=0))
    assert isinstance(server.until_final("ok")[-1], wire.JobDone)


def test_a_negative_prompt_steers_the_job_as_it_steers_the_engine(server: Server, tiny) -> None:
    server.send(wire.Generate("neg", "a blue house", count=2, cfg=3.0, temperature=0.0, seed=1,
                              negative=" a red roof "))
    done = server.until_final("neg")[-1]
    assert isinstance(done, wire.JobDone)
    [local] = generate(tiny, [Request("a blue house", 2, cfg=3.0, temperature=0.0, negative="a red roof")])
    [plain] = generate(tiny, [Request("a blue house", 2, cfg=3.0, temperature=0.0)])
    assert done.tokens == local.tokens.tolist() and done.tokens != plain.tokens.tolist()


def test_vary_region_on_a_result_keeps_the_cells_outside_the_region(server: Server, tiny) -> None:
    from generator.codec import region_cells

    server.send(wire.Generate("first", "a red circle", count=1, cfg=5.0, temperature=1.0, seed=3))
    [grid] = server.until_final("first")[-1].tokens
    region = [0.25, 0.25, 0.75, 0.75]
    server.send(wire.Generate("vary", "a green circle", count=2, cfg=5.0, temperature=1.0, seed=4, codes=grid,
                              region=region))
    events = server.until_final("vary")
    done = events[-1]
    assert isinstance(done, wire.JobDone)
    keep = ~region_cells(6, region)
    [local] = generate(tiny, [Request("a green circle", 2, seed=4, forced=torch.tensor(grid), keep=keep)])
    assert done.tokens == local.tokens.tolist()
    assert all(torch.equal(torch.tensor(row)[keep], torch.tensor(grid)[keep]) for row in done.tokens)
    previews = [e for e in events if isinstance(e, wire.JobProgress) and e.preview is not None]
    assert previews[0].step == 1  # the kept cells show at once

    server.send(wire.Generate("bottom", "a green circle", count=1, cfg=5.0, temperature=1.0, seed=4, codes=grid))
    [row] = server.until_final("bottom")[-1].tokens
    assert row[:18] == grid[:18]  # no region: the bottom half regenerated, the top half kept


def test_a_picture_file_is_encoded_and_its_top_half_kept(server: Server, tiny) -> None:
    from generator.codec import decode_tokens, encode_image, encode_pictures, load_picture

    picture = decode_tokens(tiny, torch.randint(0, 256, (1, 36), generator=torch.Generator().manual_seed(8)))[0]
    data = encode_image(picture.resize((150, 96)))  # not square, not the model's size: cropped and resized
    server.send(wire.Generate("upload", "a house", count=2, cfg=5.0, temperature=1.0, seed=5, image=data))
    done = server.until_final("upload")[-1]
    assert isinstance(done, wire.JobDone), done
    codes = encode_pictures(tiny, [load_picture(data)])[0]
    assert all(row[:18] == codes[:18].tolist() for row in done.tokens)
    [local] = generate(tiny, [Request("a house", 2, seed=5, forced=codes, keep=torch.arange(36) < 18)])
    assert done.tokens == local.tokens.tolist()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"region": [0, 0.5, 1, 1]}, "A region says which part of a picture to change; send the picture with it."),
        ({"codes": [1] * 36, "region": [0, 0.5, 1.5, 1]}, "A region's corners must lie between 0 and 1"),
        ({"codes": [1] * 36, "region": [0.5, 0, 0.5, 1]}, "The region 0.5,0,0.5,1 is empty"),
        ({"codes": [1] * 36, "region": [0, 0, 1]}, "A region is four numbers X0,Y0,X1,Y1"),
        ({"codes": [1] * 35}, "A token grid to start from must be 36 token ids (6 rows of 6), each from 0 to 255."),
        ({"codes": [1] * 35 + [256]}, "A token grid to start from must be 36 token ids"),
        ({"codes": [1] * 36, "image": b"x"}, "Send a picture or a token grid to start from, not both."),
        ({"codes": [1] * 36, "prefix": [[1]]}, "Give a token prefix or a picture to start from, not both."),
        ({"image": b"GIF89a but no picture"}, "The file is not a picture; use a PNG, JPEG, WebP or GIF."),
        ({"negative": 5}, "The negative prompt must be text."),
        ({"negative": "word " * 300}, "The negative prompt is 1499 characters long; keep it under 1000."),
    ],
)
def test_a_bad_picture_region_or_grid_fails_only_that_job(server: Server, fields: dict, reason: str) -> None:
    job = {"job_id": "bad-start", "prompt": "a cat", "count": 1, "cfg": 5.0, "temperature": 1.0, "seed": 0} | fields
    server.send(wire.Generate(**job))
    [failed] = server.until_final("bad-start")
    assert isinstance(failed, wire.JobFailed) and failed.reason.startswith(reason), failed.reason
    server.send(wire.Generate("fine-after", "a cat", count=1, cfg=5.0, temperature=1.0, seed=0))
    assert isinstance(server.until_final("fine-after")[-1], wire.JobDone)


def test_a_generate_line_from_before_pictures_and_negatives_still_reads() -> None:
    old = ('{"job_id":"j","prompt":"a cat","count":2,"cfg":5.0,"temperature":1.0,"seed":3,"prefix":null,'
           '"type":"generate"}')
    message = wire.loads(old)
    assert message == wire.Generate("j", "a cat", 2, 5.0, 1.0, 3)
    assert (message.negative, message.image, message.codes, message.region) == (None, None, None, None)
    picture = wire.Generate("k", "a cat", 1, 5.0, 1.0, 0, image=b"\x89PNG", region=[0.0, 0.0, 0.5, 1.0])
    assert wire.loads(wire.dumps(picture)) == picture


def _describe_picture() -> bytes:
    from generator.codec import encode_image

    picture = Image.new("RGB", (150, 100), (30, 60, 200))
    picture.paste((220, 40, 40), (40, 10, 110, 50))
    return encode_image(picture)


def test_describe_answers_the_prompts_describe_gives(server: Server, tiny) -> None:
    from generator.codec import load_picture
    from generator.describe import describe

    data = _describe_picture()
    server.send(wire.Describe("read", data, count=3, temperature=0.7, seed=9, max_tokens=6))
    started, described = server.until_final("read")
    assert isinstance(started, wire.JobStarted) and isinstance(described, wire.Described)
    [local] = describe(tiny, [load_picture(data)], count=3, temperature=0.7, seed=9, max_new_tokens=6)
    assert (described.prompts, described.tokens) == (local.prompts, local.tokens)
    assert len(described.tokens) == 3 and all(0 < len(row) <= 6 for row in described.tokens)

    server.send(wire.Describe("greedy", data, count=2, temperature=0.0, seed=1, instruction="Say what you see.",
                              max_tokens=5))
    greedy = server.until_final("greedy")[-1]
    [local] = describe(tiny, [load_picture(data)], count=2, temperature=0.0, instruction="Say what you see.",
                       max_new_tokens=5)
    assert isinstance(greedy, wire.Described) and greedy.tokens == local.tokens


def test_a_describe_between_steps_leaves_the_image_job_s_tokens_as_they_were(server: Server, tiny) -> None:
    server.send(wire.Generate("drawn", "a red circle", count=2, cfg=5.0, temperature=1.0, seed=21))
    while not isinstance(event := server.next(), wire.JobProgress) or event.job_id != "drawn":
        server.backlog.append(event)
    server.send(wire.Describe("between", _describe_picture(), count=2, temperature=1.0, seed=4, max_tokens=8))
    described = server.until_final("between")[-1]
    assert isinstance(described, wire.Described)
    assert not any(isinstance(e, wire.FINAL) for e in server.backlog)  # the image job was still stepping
    done = server.until_final("drawn")
    [local] = generate(tiny, [Request("a red circle", 2, cfg=5.0, temperature=1.0, seed=21)])
    assert isinstance(done[-1], wire.JobDone) and done[-1].tokens == local.tokens.tolist()


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, "PNG")  # 81 megapixels in a few kilobytes
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"image": b"GIF89a but no picture"}, "The file is not a picture; use a PNG, JPEG, WebP or GIF."),
        ({"image": _bomb()}, "The picture is 9000x9000 pixels; use one of at most 64 megapixels."),
        ({"image": b""}, "The picture to describe must be a picture file's bytes."),
        ({"count": 0}, "count must be a whole number from 1 to 16 prompts; you gave 0."),
        ({"temperature": 3.0}, "temperature must be between 0 and 2; you gave 3."),
        ({"max_tokens": 0}, "max_tokens must be a whole number from 1 to 512; you gave 0."),
        ({"instruction": "  "}, "The instruction must be text of 1 to 1000 characters."),
        ({"seed": "7"}, "The seed must be a whole number, not '7'."),
    ],
)
def test_a_bad_describe_fails_with_one_sentence(server: Server, fields: dict, reason: str) -> None:
    job = {"job_id": "bad-read", "image": _describe_picture(), "count": 1, "temperature": 0.7, "seed": 0} | fields
    server.send(wire.Describe(**job))
    assert server.until_final("bad-read") == [wire.JobFailed("bad-read", reason)]
    server.send(wire.Describe("fine-read", _describe_picture(), count=1, temperature=0.7, seed=0, max_tokens=2))
    assert isinstance(server.until_final("fine-read")[-1], wire.Described)


def test_end_of_input_stops_after_the_current_step(server: Server) -> None:
    # Last in the file: it ends the shared process.
    server.send(wire.Generate("long", "a cat", count=1, cfg=5.0, temperature=1.0, seed=0))
    while not isinstance(event := server.next(), wire.JobProgress) or event.job_id != "long":
        pass
    assert server.proc.stdin is not None
    server.proc.stdin.close()  # the bot is gone: the same as Shutdown
    assert server.proc.wait(timeout=TIMEOUT) == 0
    events = []
    while (event := server.next()) is not None:
        events.append(event)
    assert all(isinstance(e, wire.JobProgress) for e in events)  # no Done, no Failed: the bot re-queues the job




def test_compile_flag_serves_jobs_through_the_compiled_step(tiny_dir: Path, tiny) -> None:
    server = Server(tiny_dir, "--max-batch-images", "2", "--compile")
    try:
        assert isinstance(server.next(), wire.Ready)
        server.send(wire.Generate("fused", "a blue house", count=2, cfg=3.0, temperature=0.0, seed=1))
        done = server.until_final("fused")[-1]
        assert isinstance(done, wire.JobDone)
        [local] = generate(tiny, [Request("a blue house", 2, cfg=3.0, temperature=0.0)])
        # inductor's fused kernels may round differently from the eager ones now and then
        assert (torch.tensor(done.tokens) == local.tokens).float().mean() >= 0.9
        server.send(wire.Shutdown())
        assert server.proc.wait(timeout=TIMEOUT) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    assert server.proc.stderr is not None
    assert "decode step compiled by torch.compile" in server.proc.stderr.read().decode()


# -- the engine thread in this process, with an engine step that fails --------------------------------


class FailingWorker:
    """An engine thread whose first engine raises `failure` from step(); queue jobs, then start() and read events()."""

    def __init__(self, checkpoint, failure: Exception) -> None:
        self.inbox: janus.Queue[wire.Message] = janus.Queue()
        self.outbox: janus.Queue[wire.Message | None] = janus.Queue()
        self.worker = EngineThread(checkpoint, EngineOptions(max_batch_images=4), self.inbox.sync_q,
                                   self.outbox.sync_q)
        self.first = self.worker.engine

        def fail() -> None:
            raise failure

        self.first.step = fail  # type: ignore[method-assign]

    async def events(self) -> AsyncIterator[wire.Message]:
        self.worker.start()
        async with asyncio.timeout(TIMEOUT):
            while (event := await self.outbox.async_q.get()) is not None:
                yield event
        await asyncio.to_thread(self.worker.join)


REASON = "The generator failed while making these images (boom); try again."


def _job(job_id: str, count: int = 1) -> wire.Generate:
    return wire.Generate(job_id, "a cat", count=count, cfg=5.0, temperature=1.0, seed=0)


@pytest.mark.asyncio
async def test_a_step_error_fails_the_jobs_it_touched_and_the_process_carries_on(tiny) -> None:
    failing = FailingWorker(tiny, RuntimeError("boom\nwith a long explanation"))
    for job_id in ("one", "two"):  # queued before the worker starts: they share the failing step
        failing.inbox.sync_q.put(_job(job_id, count=2))
    events = []
    async for event in failing.events():
        events.append(event)
        if event == wire.JobFailed("two", REASON):
            await failing.inbox.async_q.put(_job("after"))
        elif isinstance(event, wire.JobDone):
            await failing.inbox.async_q.put(wire.Shutdown())
    failed = [e for e in events if isinstance(e, wire.JobFailed)]
    assert failed == [wire.JobFailed("one", REASON), wire.JobFailed("two", REASON)]
    assert isinstance(events[-1], wire.JobDone) and events[-1].job_id == "after"
    assert failing.worker.engine is not failing.first and failing.worker.exit_code == 0  # a fresh engine


@pytest.mark.asyncio
async def test_a_cuda_error_stops_the_worker_without_failing_jobs(tiny) -> None:
    failing = FailingWorker(tiny, RuntimeError("CUDA error: an illegal memory access was encountered"))
    failing.inbox.sync_q.put(_job("one"))
    events = [type(event) async for event in failing.events()]
    assert events == [wire.JobStarted, wire.JobProgress]  # no Failed: the supervisor re-runs "one"
    assert failing.worker.exit_code == EXIT_DEVICE_FAILED


# -- pictures are made off the step loop ---------------------------------------------------------------


class BlockedPictures:
    """A finished job's pictures wait until `release` is set (`decoding` says one is waiting); then the first
    one's VQ decode raises `fail`, if given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None) -> None:
        import generator.pictures as pictures

        self.release, self.decoding = threading.Event(), threading.Event()
        self.fail, self.armed = fail, False
        make_final, decode_tokens = pictures.Pictures._make_final, pictures.decode_tokens

        def blocked(maker, final):
            self.decoding.set()
            assert self.release.wait(TIMEOUT)
            self.armed, self.fail = self.fail is not None, None
            return make_final(maker, final)

        def decode(*args, **options):
            if self.armed:
                self.armed = False
                raise fail
            return decode_tokens(*args, **options)

        monkeypatch.setattr(pictures.Pictures, "_make_final", blocked)
        monkeypatch.setattr(pictures, "decode_tokens", decode)


class InProcess:
    """An engine thread in this process; commands in with `send`, events out with `next`."""

    def __init__(self, checkpoint, **options) -> None:
        self.inbox: janus.Queue[wire.Message] = janus.Queue()
        self.outbox: janus.Queue[wire.Message | None] = janus.Queue()
        self.thread = EngineThread(checkpoint, EngineOptions(max_batch_images=4, **options), self.inbox.sync_q,
                                   self.outbox.sync_q)
        self.thread.start()

    def send(self, message: wire.Message) -> None:
        self.inbox.sync_q.put(message)

    async def next(self) -> wire.Message | None:
        async with asyncio.timeout(TIMEOUT):
            return await self.outbox.async_q.get()

    async def until(self, predicate) -> list[wire.Message]:
        """Events up to and including the first that matches."""
        seen = []
        while not seen or not predicate(seen[-1]):
            event = await self.next()
            assert event is not None, f"the engine thread stopped: {seen}"
            seen.append(event)
        return seen

    async def rest(self) -> list[wire.Message]:
        """Every event until the thread stops."""
        seen = []
        while (event := await self.next()) is not None:
            seen.append(event)
        await asyncio.to_thread(self.thread.join, TIMEOUT)
        return seen


def _final(job_id: str):
    return lambda event: isinstance(event, wire.FINAL) and event.job_id == job_id


@pytest.mark.asyncio
async def test_steps_go_on_while_a_finished_job_s_pictures_are_made(tiny, monkeypatch) -> None:
    pictures = BlockedPictures(monkeypatch)
    engine = InProcess(tiny, preview_every=12)
    engine.send(_job("first"))
    await engine.until(lambda e: isinstance(e, wire.JobProgress) and e.job_id == "first" and e.step == 36)
    assert await asyncio.to_thread(pictures.decoding.wait, TIMEOUT)  # its Done waits for the decoder
    engine.send(_job("second", count=2))
    seen = await engine.until(lambda e: isinstance(e, wire.JobProgress) and e.job_id == "second" and e.step == 36)
    assert not any(isinstance(e, wire.FINAL) for e in seen)  # every step of "second" ran meanwhile
    steps = [e.step for e in seen if isinstance(e, wire.JobProgress) and e.job_id == "second"]
    assert steps == sorted(steps) and steps[-1] == 36  # (its previews waited behind the pictures, then went without)
    pictures.release.set()
    seen = await engine.until(_final("second"))
    done = [e for e in seen if isinstance(e, wire.JobDone)]
    assert [e.job_id for e in done] == ["first", "second"] and [len(e.images) for e in done] == [1, 2]
    engine.send(wire.Shutdown())
    assert await engine.rest() == [] and engine.thread.exit_code == 0


@pytest.mark.asyncio
async def test_a_job_whose_pictures_fail_fails_alone(tiny, monkeypatch) -> None:
    pictures = BlockedPictures(monkeypatch, fail=ValueError("bad codes\nand more"))
    engine = InProcess(tiny)
    engine.send(_job("broken"))
    assert await asyncio.to_thread(pictures.decoding.wait, TIMEOUT)
    pictures.release.set()
    seen = await engine.until(_final("broken"))
    assert seen[-1] == wire.JobFailed("broken", "The images could not be decoded (bad codes); try again.")
    engine.send(_job("fine"))
    assert isinstance((await engine.until(_final("fine")))[-1], wire.JobDone)
    engine.send(wire.Shutdown())
    await engine.rest()
    assert engine.thread.exit_code == 0


@pytest.mark.asyncio
async def test_a_device_failure_while_making_pictures_stops_the_process_without_failing_jobs(tiny, monkeypatch) -> None:
    pictures = BlockedPictures(monkeypatch, fail=RuntimeError("CUDA error: an illegal memory access was encountered"))
    engine = InProcess(tiny)
    engine.send(_job("one"))
    assert await asyncio.to_thread(pictures.decoding.wait, TIMEOUT)
    engine.send(_job("two"))
    await engine.until(lambda e: isinstance(e, wire.JobStarted) and e.job_id == "two")
    pictures.release.set()
    events = await engine.rest()
    assert not any(isinstance(e, wire.FINAL) for e in events)  # the supervisor re-runs both
    assert engine.thread.exit_code == EXIT_DEVICE_FAILED


@pytest.mark.asyncio
async def test_shutdown_sends_the_done_of_a_job_whose_pictures_are_being_made_and_ignores_its_cancel(
        tiny, monkeypatch) -> None:
    pictures = BlockedPictures(monkeypatch)
    engine = InProcess(tiny)
    engine.send(_job("made"))
    assert await asyncio.to_thread(pictures.decoding.wait, TIMEOUT)
    engine.send(_job("sampling", count=2))
    await engine.until(lambda e: isinstance(e, wire.JobProgress) and e.job_id == "sampling")
    engine.send(wire.Cancel("made"))  # its tokens are all sampled: too late, its Done follows
    engine.send(wire.Shutdown())
    await asyncio.sleep(0.2)
    pictures.release.set()
    events = await engine.rest()
    finals = [e for e in events if isinstance(e, wire.FINAL)]
    assert [(type(e), e.job_id) for e in finals] == [(wire.JobDone, "made")]  # "sampling" is left to the bot
    assert engine.thread.exit_code == 0


@pytest.mark.asyncio
async def test_a_picture_thread_that_stops_on_a_bug_stops_the_process(tiny, monkeypatch) -> None:
    import generator.pictures as pictures

    def broken(maker, final):
        raise KeyError("a bug")

    monkeypatch.setattr(pictures.Pictures, "_make_final", broken)
    engine = InProcess(tiny)
    engine.send(_job("lost"))
    events = await engine.rest()  # its tokens were sampled, its pictures never made: the supervisor re-runs it
    assert not any(isinstance(e, wire.FINAL) for e in events) and engine.thread.exit_code == 1


@pytest.mark.asyncio
async def test_a_job_cancelled_while_its_picture_is_encoded_never_starts(tiny, monkeypatch) -> None:
    import generator.pictures as pictures
    from generator.codec import decode_tokens, encode_image

    release, encoding = threading.Event(), threading.Event()
    encode = pictures.encode_pictures

    def slow(*args, **options):
        encoding.set()
        assert release.wait(TIMEOUT)
        return encode(*args, **options)

    monkeypatch.setattr(pictures, "encode_pictures", slow)
    data = encode_image(decode_tokens(tiny, torch.zeros(1, 36, dtype=torch.long))[0])
    engine = InProcess(tiny)
    engine.send(wire.Generate("slow", "a cat", 1, 5.0, 1.0, 0, image=data))
    assert await asyncio.to_thread(encoding.wait, TIMEOUT)
    engine.send(_job("meanwhile"))  # the step loop runs on while a picture is encoded (its Done waits for it)
    await engine.until(lambda e: isinstance(e, wire.JobProgress) and e.job_id == "meanwhile" and e.step == 36)
    engine.send(wire.Cancel("slow"))
    assert await engine.until(_final("slow")) == [wire.JobCancelled("slow")]
    release.set()
    await engine.until(_final("meanwhile"))
    engine.send(wire.Generate("again", "a cat", 1, 5.0, 1.0, 0, image=data))  # the next one starts
    assert isinstance((await engine.until(_final("again")))[-1], wire.JobDone)
    engine.send(wire.Shutdown())
    assert not any(getattr(e, "job_id", None) == "slow" for e in await engine.rest())


# -- describe jobs in the engine thread ------------------------------------------------------------------


class Gate:
    """Wraps a function of `module`: calls wait until `release` is set (`entered` says one is waiting); each call's
    last positional argument and its options are recorded in `calls`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str, *, hold: bool = True) -> None:
        self.entered, self.release, self.calls = threading.Event(), threading.Event(), []
        if not hold:
            self.release.set()
        real = getattr(module, name)

        def gated(*args, **options):
            self.calls.append((args[-1], options))
            self.entered.set()
            assert self.release.wait(TIMEOUT)
            return real(*args, **options)

        monkeypatch.setattr(module, name, gated)


def _read(job_id: str, instruction: str | None = None, count: int = 2, seed: int = 0) -> wire.Describe:
    return wire.Describe(job_id, _describe_picture(), count=count, temperature=0.7, seed=seed,
                         instruction=instruction, max_tokens=4)


@pytest.mark.asyncio
async def test_a_waiting_describe_is_cancelled_and_one_being_read_too(tiny, monkeypatch) -> None:
    import generator.pictures as pictures
    import generator.server as server

    calls = Gate(monkeypatch, server, "describe")
    engine = InProcess(tiny)
    engine.send(_read("first"))
    engine.send(_read("waiting", instruction="Say what you see."))  # not one call with "first"
    assert await asyncio.to_thread(calls.entered.wait, TIMEOUT)  # "first" is being described
    engine.send(wire.Cancel("waiting"))
    calls.release.set()
    seen = await engine.until(_final("waiting"))
    finals = [(type(e), e.job_id) for e in seen if isinstance(e, wire.FINAL)]
    assert finals == [(wire.Described, "first"), (wire.JobCancelled, "waiting")]  # its call was over first
    assert not any(isinstance(e, wire.JobStarted) and e.job_id == "waiting" for e in seen)

    reads = Gate(monkeypatch, pictures, "load_picture")
    engine.send(_read("reading"))
    assert await asyncio.to_thread(reads.entered.wait, TIMEOUT)
    engine.send(wire.Cancel("reading"))
    assert await engine.until(_final("reading")) == [wire.JobCancelled("reading")]
    reads.release.set()
    engine.send(_read("after"))
    assert isinstance((await engine.until(_final("after")))[-1], wire.Described)
    engine.send(wire.Shutdown())
    assert await engine.rest() == []
    assert [len(pictures) for pictures, _ in calls.calls] == [1, 1]  # "first", then "after"


@pytest.mark.asyncio
async def test_shutdown_answers_the_describe_call_under_way_and_leaves_the_waiting_ones(tiny, monkeypatch) -> None:
    import generator.server as server

    calls = Gate(monkeypatch, server, "describe")
    engine = InProcess(tiny)
    engine.send(_job("sampling", count=2))
    engine.send(_read("under-way"))
    assert await asyncio.to_thread(calls.entered.wait, TIMEOUT)
    engine.send(_read("waiting"))
    engine.send(wire.Shutdown())
    calls.release.set()
    events = await engine.rest()
    finals = [(type(e), e.job_id) for e in events if isinstance(e, wire.FINAL)]
    assert finals == [(wire.Described, "under-way")]  # the bot re-queues "waiting" and "sampling"
    assert engine.thread.exit_code == 0


@pytest.mark.asyncio
async def test_a_device_failure_in_a_describe_call_stops_the_process_without_final_events(tiny) -> None:
    def fail(where: str) -> None:
        if where == "describe":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    inbox: janus.Queue[wire.Message] = janus.Queue()
    outbox: janus.Queue[wire.Message | None] = janus.Queue()
    thread = EngineThread(tiny, EngineOptions(max_batch_images=4), inbox.sync_q, outbox.sync_q, inject_failure=fail)
    inbox.sync_q.put(_job("drawing", count=2))
    inbox.sync_q.put(_read("read"))
    thread.start()
    events = []
    async with asyncio.timeout(TIMEOUT):
        while (event := await outbox.async_q.get()) is not None:
            events.append(event)
    await asyncio.to_thread(thread.join, TIMEOUT)
    assert not any(isinstance(e, wire.FINAL) for e in events) and thread.exit_code == EXIT_DEVICE_FAILED


def test_describe_jobs_that_agree_share_a_call_of_at_most_max_batch_images_rows(tiny, monkeypatch) -> None:
    import generator.server as server
    from generator.codec import load_picture
    from generator.describe import describe

    calls = Gate(monkeypatch, server, "describe", hold=False)
    inbox: janus.Queue[wire.Message] = janus.Queue()
    outbox: janus.Queue[wire.Message | None] = janus.Queue()
    thread = EngineThread(tiny, EngineOptions(max_batch_images=4), inbox.sync_q, outbox.sync_q)
    picture = load_picture(_describe_picture())
    jobs = {"a": ("X", 2), "b": ("Y", 2), "c": ("X", 2), "d": ("X", 3), "e": ("X", 2)}  # instruction, count
    for seed, (job_id, (instruction, count)) in enumerate(jobs.items()):
        thread.describing.append(server._Describing(job_id, picture, count, 0.7, seed, instruction, 4))
    while thread.describing:  # as the thread does between steps
        thread._describe()
    assert [options["seed"] for _, options in calls.calls] == [[0, 2], [1], [3], [4]]  # a+c fill the 4 rows
    events = []
    while not outbox.sync_q.empty():
        events.append(outbox.sync_q.get())
    described = {e.job_id: e for e in events if isinstance(e, wire.Described)}
    assert sorted(described) == list(jobs)
    [alone] = describe(tiny, [picture], count=2, temperature=0.7, seed=2, instruction="X", max_new_tokens=4)
    assert (described["c"].prompts, described["c"].tokens) == (alone.prompts, alone.tokens)
    inbox.close()
    outbox.close()
