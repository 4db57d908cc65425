"""/describe through the web API: a picture sent (base64 JSON or a multipart form) or one of a job's images read
back into prompts, queued like any job; its events and status, its limits, and each wrong request's sentence."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.bot.adapters.test_web import Web, serving
from tests.bot.adapters.test_web_upload import finished, form, own_origin, picture, stored_files, unvouched_multipart
from tests.bot.helpers import FakeGenerator

pytestmark = pytest.mark.asyncio

PIC = base64.b64encode(picture()).decode()


async def describe(web: Web, fields: dict[str, Any], image: bytes | None, headers: dict[str, str] | None = None
                   ) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """POST /api/describe as multipart/form-data (from the page's own origin unless `headers` says otherwise)."""
    sent = own_origin(web) if headers is None else headers
    async with web.http.post("/api/describe", data=form(fields, image), headers=sent) as response:
        return response.status, await response.json()


async def test_a_sent_picture_is_described_like_any_job_with_prompts_in_its_stream_and_status(tmp_path: Path) -> None:
    async with serving(tmp_path, describe={"temperature": 0.5}) as web:
        status, body, _ = await web.post("/api/describe", {"user": "ada", "image": PIC})
        assert status == 202, body
        assert body["url"] == f"/api/jobs/{body['job_id']}" and body["position"] == 1 and body["user"] == "ada"
        stream = await web.events(body["job_id"])
        assert [name for name, _ in stream] == ["queued", "started", "done"]
        done = stream[-1][1]
        prompts = [f"a fake prompt {int(done['seed']) + i}" for i in range(4)]  # [describe] count: 4 by default
        assert done == {"job_id": body["job_id"], "seed": done["seed"], "prompts": prompts}
        sent = web.generator.described[-1]
        assert (sent.count, sent.temperature) == (4, 0.5) and sent.image.startswith(b"\x89PNG")
        assert web.generator.submitted == []  # read, not drawn

        job = await finished(web, body["job_id"])
        assert (job["kind"], job["status"], job["prompts"], job["count"], job["progress"]) == (
            "describe", "done", prompts, 4, 100)  # fmt: skip
        assert (job["made_from"], job["grid_url"], job["image_urls"], job["pictures_removed"]) == (
            "a picture sent", None, [], False)  # fmt: skip
        async with web.http.get(job["source_url"]) as response:  # the picture it read, as the bot keeps it
            assert response.status == 200 and await response.read() == sent.image
        for path in ("grid.png", "images/0.png"):
            status, said = await web.get(f"/api/jobs/{job['job_id']}/{path}")
            assert status == 409 and said["error"].startswith(f"Job {job['job_id']} describes a picture: it answers "
                                                              'with prompts (its "prompts"), not images')  # fmt: skip

        _, listed = await web.get("/api/jobs")  # the history: prompts, no pictures
        assert [(j["kind"], j["prompts"], j["image_urls"]) for j in listed["jobs"]] == [("describe", prompts, [])]
        _, plain = await web.get(f"/api/jobs/{await web.imagine()}")
        assert plain["prompts"] is None


async def test_one_of_a_jobs_images_is_described_by_job_id_and_index(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        drawn = await finished(web, await web.imagine(count=2))
        status, body, _ = await web.post("/api/describe", {"user": "bo", "job_id": drawn["job_id"], "index": 1,
                                                           "count": 2})  # fmt: skip
        assert status == 202, body
        job = await finished(web, body["job_id"])
        assert (job["kind"], job["user"], job["parent_id"], job["parent_index"], len(job["prompts"])) == (
            "describe", "bo", drawn["job_id"], 1, 2)  # fmt: skip
        assert job["made_from"] == f"image 2 of job {drawn['job_id']}"
        async with web.http.get(drawn["image_urls"][1]) as response:
            assert web.generator.described[-1].image == await response.read()  # the image as stored

        # an upscale's one picture, as a multipart form's text fields
        status, body, _ = await web.post(f"/api/jobs/{drawn['job_id']}/upscale", {"user": "bo", "index": 0})
        upscale = await finished(web, body["job_id"])
        status, body = await describe(web, {"user": "bo", "job_id": upscale["job_id"], "index": "0", "count": "1"},
                                      None)  # fmt: skip
        assert status == 202, body
        assert (await finished(web, body["job_id"]))["prompts"] == [f"a fake prompt {web.generator.described[-1].seed}"]


async def test_a_picture_as_a_multipart_form_from_the_page_or_with_the_token(tmp_path: Path) -> None:
    async with serving(tmp_path, token="s3cret") as web:
        token = {"Authorization": "Bearer s3cret"}
        for headers in (token, {**own_origin(web), **token}):
            status, body = await describe(web, {"user": "ada", "count": "3"}, picture("JPEG"), headers)
            assert status == 202, body
            job = await finished(web, body["job_id"], token)
            assert (job["kind"], len(job["prompts"]), job["made_from"]) == ("describe", 3, "a picture sent")
        status, body = await describe(web, {"user": "ada"}, picture(), own_origin(web))  # the page without a token
        assert status == 401, body


async def test_a_cross_site_or_unvouched_multipart_describe_starts_nothing(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        for headers, says in unvouched_multipart(web):
            status, body = await describe(web, {"user": "eve"}, picture(), headers)
            assert status == 403 and says in body["error"], (headers, body)
        status, body, _ = await web.post("/api/describe", "user=eve", headers={"Content-Type": "text/plain"})
        assert status == 415 and body["error"].endswith("or a picture and its fields as multipart/form-data."), body
        assert web.generator.described == [] and stored_files(tmp_path) == []
        status, body = await describe(web, {"user": "ada"}, picture())  # the page's own upload still works
        assert status == 202, body


async def test_describe_jobs_wait_in_the_same_queue_under_the_same_limits(tmp_path: Path) -> None:
    held = FakeGenerator()
    held.hold.clear()
    async with serving(tmp_path, generator=held, limits={"max_queued_per_user": 1, "max_running_per_user": 1}) as web:
        await web.imagine()  # runs (the fake generator holds it)
        status, body, _ = await web.post("/api/describe", {"user": "ada", "image": PIC})
        assert status == 202 and body["position"] == 1, body
        _, job = await web.get(body["url"])
        assert (job["status"], job["position"], job["prompts"]) == ("queued", 1, None)
        status, said, headers = await web.post("/api/describe", {"user": "ada", "image": PIC})
        assert status == 429 and said["error"].startswith("You already have 1 job waiting"), said
        assert int(headers["Retry-After"]) >= 1
        held.hold.set()
        assert (await web.events(body["job_id"]))[-1][0] == "done"


@pytest.mark.parametrize(
    ("sent", "code", "says"),
    [
        ({"image": PIC, "job_id": "JOB", "index": 0}, 400, 'Give either "image" (a picture to describe) or "job_id" '
                                                           'and "index" (one of a job\'s images), not both.'),
        ({}, 400, 'Send the picture to describe in "image" (base64 in JSON, or a file part of a multipart form), or '
                  'name one of a job\'s images, such as {"user": "ada", "job_id": "0123456789abcdef", "index": 0}.'),
        ({"count": 2}, 400, 'Send the picture to describe in "image"'),
        ({"image": PIC, "index": 0}, 400, '"index" says which of a job\'s images to describe; with a picture in '
                                          '"image", send no index.'),
        ({"job_id": "JOB"}, 400, 'Say which image in "index", a whole number from 0 to 1 (U1 is 0).'),
        ({"job_id": "JOB", "index": 2}, 400, '"index" must be a whole number from 0 to 1 (U1 is 0); you gave 2.'),
        ({"job_id": "JOB", "index": -1}, 400, '"index" must be a whole number from 0 to 1'),
        ({"job_id": "JOB", "index": "1"}, 400, '"index" must be a whole number from 0 to 1 (U1 is 0); you gave "1".'),
        ({"job_id": "JOB", "index": True}, 400, '"index" must be a whole number from 0 to 1'),
        ({"job_id": "my fox", "index": 0}, 400, '"job_id" must be a job\'s id, 16 characters 0-9 and a-f such as '
                                                '"0123456789abcdef"; you gave "my fox".'),
        ({"job_id": 7, "index": 0}, 400, '"job_id" must be a job\'s id'),
        ({"job_id": "0123456789abcdef", "index": 0}, 404, "There is no job 0123456789abcdef; start one with POST "
                                                          "/api/imagine."),
        ({"image": PIC, "count": 0}, 400, '"count" must be a whole number from 1 to 8 (prompts); you gave 0.'),
        ({"image": PIC, "count": 9}, 400, '"count" must be a whole number from 1 to 8 (prompts); you gave 9.'),
        ({"image": PIC, "count": "four"}, 400, '"count" must be a whole number; you gave "four".'),
        ({"image": PIC, "count": 2.5}, 400, '"count" must be a whole number; you gave 2.5.'),
        ({"image": "not base64!"}, 400, '"image" is not base64; send the picture file\'s bytes in standard base64'),
        ({"image": 7}, 400, '"image" must be text; send the picture file\'s bytes'),
        ({"image": base64.b64encode(b"just text").decode()}, 400, "That file is not a picture; send a PNG, JPEG, "
                                                                  "WebP or GIF."),
        ({"image": PIC, "prompt": "a fox"}, 400, '"prompt" is not something describe takes; send only "user", '
                                                 '"image", "job_id", "index" and "count".'),
    ],
    ids=["both", "neither", "count-alone", "index-with-image", "no-index", "index-high", "index-negative",
         "index-text", "index-bool", "job-id-text", "job-id-number", "no-such-job", "count-0", "count-9",
         "count-text", "count-fraction", "bad-base64", "image-number", "not-a-picture", "unknown-field"],
)
async def test_each_wrong_describe_gets_its_sentence_and_starts_nothing(tmp_path: Path, sent: dict[str, Any],
                                                                        code: int, says: str) -> None:  # fmt: skip
    async with serving(tmp_path) as web:
        drawn = await finished(web, await web.imagine(count=2))
        if sent.get("job_id") == "JOB":
            sent = {**sent, "job_id": drawn["job_id"]}
        status, body, _ = await web.post("/api/describe", {"user": "ada", **sent})
        assert status == code and body["error"].startswith(says), body
        assert web.generator.described == []


async def test_a_describe_job_has_no_images_to_describe_vary_upscale_or_reroll(tmp_path: Path) -> None:
    async with serving(tmp_path, images={"max_upload_mb": 0.05}) as web:
        status, body, _ = await web.post("/api/describe", {"user": "ada", "image": PIC})
        described = (await finished(web, body["job_id"]))["job_id"]
        has_none = f'Job {described} describes a picture: it answers with prompts (its "prompts"), not images'
        for path, sent, says in [
            ("/api/describe", {"job_id": described, "index": 0}, has_none),
            (f"/api/jobs/{described}/upscale", {"index": 0}, has_none),
            (f"/api/jobs/{described}/vary", {"index": 0}, has_none),
            (f"/api/jobs/{described}/reroll", {}, f"Job {described} describes a picture, so it has no prompt to make "
                                                  "again; start a new describe with POST /api/describe."),
        ]:
            status, said, _ = await web.post(path, {"user": "ada", **sent})
            assert status == 409 and said["error"].startswith(says), (path, said)
        assert len(web.generator.described) == 1 and web.generator.submitted == []

        big = picture("PNG", (200, 200)) + b"\0" * 60_000  # over [images] max_upload_mb
        status, said = await describe(web, {"user": "ada"}, big)
        assert status == 413 and said["error"] == "That picture is over 0.05 MB; send one of at most 0.05 MB.", said

        drawn = await finished(web, await web.imagine(count=1))
        async with web.http.delete(f"/api/jobs/{drawn['job_id']}") as response:
            assert response.status == 200
        status, said, _ = await web.post("/api/describe", {"user": "ada", "job_id": drawn["job_id"], "index": 0})
        assert status == 410 and said["error"].startswith(f"Job {drawn['job_id']} was deleted by the person who "
                                                          "asked for it"), said  # fmt: skip


async def test_the_api_index_lists_describe(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        _, index = await web.get("/api/")
        paths = {(e["method"], e["path"]): e for e in index["endpoints"]}
        assert paths["POST", "/api/describe"]["takes"] == '{"user", "image" or "job_id" and "index", "count"?}'
        assert '"prompts"' in paths["POST", "/api/describe"]["does"] and "/api/describe" in index["notes"]["writes"]
