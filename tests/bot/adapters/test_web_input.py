"""Hostile or careless input to the web API: a 4xx with a sentence each, never a 500, a traceback or a forged line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.bot.adapters.test_web import Web, serving
from tests.bot.helpers import FakeGenerator, until

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Any:
    """Fail a test that logged an ERROR (a traceback) while the adapter ran."""
    caplog.set_level(logging.INFO)
    yield
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []


async def raw(web: Web, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are over a socket; the status code and body of the answer."""
    host, port = web.adapter.url.removeprefix("http://").strip("/").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('{"user": "ada", "prompt": "a fox", "seed": 1' + "0" * 5000 + "}", "more than 100 digits"),
        ('{"user": "ada", "prompt": "a fox", "cfg": NaN}', "NaN is not a number JSON allows"),
        ("[" * 30000 + "]" * 30000, "nested too deeply"),
        ('{"user": "ada", "prompt": "a fox", "count": ' + "[" * 30000 + "]" * 30000 + "}", "nested too deeply"),
    ],
    ids=["5000-digit seed", "NaN", "30000 brackets", "30000 brackets in a field"],
)
async def test_numbers_and_nesting_json_cannot_read_are_400(tmp_path: Path, body: str, says: str) -> None:
    async with serving(tmp_path) as web:
        status, answer, _ = await web.post("/api/imagine", body)
        assert status == 400 and says in answer["error"], answer


async def test_a_5000_digit_image_index_is_404(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        job_id = await web.imagine(count=2)
        await web.events(job_id)
        status, body = await web.get(f"/api/jobs/{job_id}/images/{'9' * 5000}.png")
        assert status == 404 and body["error"] == "That job has images 0 to 1."
        async with web.http.get(f"/api/jobs/{job_id}/images/{'0' * 5000}1.png") as response:
            assert response.status == 404


async def test_authorization_bytes_that_are_not_utf8_are_401(tmp_path: Path) -> None:
    async with serving(tmp_path, token="s3cret") as web:
        for value in (b"Bearer \xff\xfe\xfd", b"\xff\xff", b"Bearer s3cret\xc3"):
            request = b"GET /api/jobs/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + value + \
                b"\r\nConnection: close\r\n\r\n"  # fmt: skip
            status, body = await raw(web, request)
            assert status == 401 and b"token is wrong" in body, (value, body)
        request = b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe.example\r\nConnection: close\r\n\r\n"
        status, body = await raw(web, request)
        assert status in (400, 421), body


async def test_a_client_hanging_up_an_event_stream_logs_no_error(tmp_path: Path) -> None:
    held = FakeGenerator(steps=4, step_delay=0.01)
    held.hold.clear()
    async with serving(tmp_path, generator=held) as web:
        job_id = await web.imagine()
        for _ in range(3):
            async with web.http.get(f"/api/jobs/{job_id}/events") as response:
                await response.content.readline()  # "event: queued"
        held.hold.set()
        await web.events(job_id)
        await asyncio.sleep(0.1)  # the hung-up streams write the job's progress, and find nobody there
        assert web.adapter._streams.total() == 0


async def test_event_streams_are_capped_per_client_and_in_all(tmp_path: Path) -> None:
    held = FakeGenerator()
    held.hold.clear()
    async with serving(tmp_path, generator=held, web={"max_streams_per_client": 3, "max_streams": 4}) as web:
        job_id = await web.imagine()
        url = f"/api/jobs/{job_id}/events"
        streams = [await web.http.get(url) for _ in range(3)]
        async with web.http.get(url) as refused:
            body = await refused.json()
            assert refused.status == 429 and refused.headers["Retry-After"] == "10"
        assert body["error"].startswith("You have 3 event streams open, the most one client may; close some")
        streams.pop().close()
        await until(lambda: web.adapter._streams.total() == 2, "the closed stream to be let go")
        streams.append(await web.http.get(url))
        assert streams[-1].status == 200
        for stream in streams:
            stream.close()
        held.hold.set()
    async with serving(tmp_path / "all", generator=FakeGenerator(), web={"max_streams": 2}) as web:
        web.generator.hold.clear()
        job_id = await web.imagine()
        streams = [await web.http.get(f"/api/jobs/{job_id}/events") for _ in range(2)]
        async with web.http.get(f"/api/jobs/{job_id}/events") as refused:
            assert refused.status == 429 and "as many event streams as it can" in (await refused.json())["error"]
        for stream in streams:
            stream.close()
        web.generator.hold.set()


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        (
            "/api/imagine",
            {"user": "ada", "prompt": "a fox", "size": 1024},
            '"size" is not something imagine takes; send only "user", "prompt", "command", "count", "cfg", '
            '"temperature", "seed", "negative", "image" and "region".',
        ),
        (
            "/api/imagine",
            {"user": "ada", "command": "/help"},
            'Only /imagine works here; "/help" is not a command of this bot.\nUsage: /imagine <prompt>',
        ),
        ("/api/imagine", {"user": "ada", "command": "/IMAGINEx a fox"}, "Only /imagine works here"),
        ("/api/imagine", {"user": "ada", "command": 7}, '"command" must be text such as "/imagine a red fox"'),
        (
            "/api/imagine",
            {"user": "ada", "prompt": "a fox", "command": "/imagine a cat"},
            'Give either "prompt" or "command", not both.',
        ),
        ("/api/imagine", {"user": "ada", "prompt": None, "command": "/imagine a cat"}, 'Give either "prompt"'),
        ("/api/jobs/JOB/upscale", {"user": "ada"}, 'Say which image in "index", a whole number from 0 to 1 (U1 is 0).'),
        ("/api/jobs/JOB/vary", {"user": "ada", "strength": "strong"}, 'Say which image in "index"'),
        (
            "/api/jobs/JOB/reroll",
            {"user": "ada", "index": 1},
            '"index" is not something reroll takes; send only "user", "prompt" and "negative".',
        ),
        ("/api/jobs/JOB/cancel", {"user": "ada", "force": True}, '"force" is not something cancel takes'),
    ],
)
async def test_requests_that_say_something_else_than_they_mean_are_400(
    tmp_path: Path, path: str, body: dict[str, Any], says: str
) -> None:
    async with serving(tmp_path) as web:
        job_id = await web.imagine(count=2)
        await web.events(job_id)
        submitted = len(web.generator.submitted)
        status, answer, _ = await web.post(path.replace("JOB", job_id), body)
        assert status == 400 and answer["error"].startswith(says), answer
        assert len(web.generator.submitted) == submitted


async def test_a_command_may_be_plain_prompt_text(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "command": "a fox --count 2"})
        assert status == 202, body
        _, job = await web.get(f"/api/jobs/{body['job_id']}")
        assert (job["prompt"], job["count"]) == ("a fox", 2)
