"""Image prompts and Vary (Region) through the web API: pictures sent as base64 JSON or multipart forms, their
limits and bad files, regions, the picture served back, and the cross-site protections kept for multipart."""

from __future__ import annotations

import asyncio
import base64
import io
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.jobs import REGIONS
from tests.bot.adapters.test_web import Web, serving
from tests.bot.helpers import FakeGenerator

pytestmark = pytest.mark.asyncio

FOX = {"user": "ada", "prompt": "a fox"}


def picture(kind: str = "PNG", size: tuple[int, int] = (32, 32), colour: tuple[int, int, int] = (200, 40, 10)
            ) -> bytes:  # fmt: skip
    """A small picture file of this format."""
    out = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.putpixel((0, 0), (0, 0, 255))  # not one colour: a corner to tell orientation by
    image.save(out, format=kind)
    return out.getvalue()


def undecodable_png() -> bytes:
    """A PNG whose chunks are whole (their checksums right) but whose pixel data is not zlib: it opens, then fails."""
    data = bytearray(picture("PNG"))
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    data[start : start + length] = b"\xff" * length
    data[start + length : start + length + 4] = zlib.crc32(bytes(data[start - 4 : start + length])).to_bytes(4, "big")
    return bytes(data)


def gif_bomb() -> bytes:
    """A 48 KB GIF that decodes to 8000x8000 pixels (64 megapixels, over the default 40)."""
    out = io.BytesIO()
    image = Image.new("P", (8000, 8000), 0)
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.save(out, format="GIF")
    return out.getvalue()


def form(fields: dict[str, Any], image: bytes | None = None, filename: str = "fox.png") -> aiohttp.FormData:
    """A multipart form as a page's FormData sends it: text fields, then the picture as a file part."""
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        data.add_field(name, str(value))
    if image is not None:
        data.add_field("image", image, filename=filename, content_type="application/octet-stream")
    return data


def own_origin(web: Web) -> dict[str, str]:
    """What the page's own fetch sends: its Origin (every browser sends one with a POST)."""
    return {"Origin": web.adapter.url.rstrip("/"), "Sec-Fetch-Site": "same-origin"}


async def upload(web: Web, fields: dict[str, Any], image: bytes | None, headers: dict[str, str] | None = None,
                 filename: str = "fox.png") -> tuple[int, dict[str, Any]]:  # fmt: skip
    """POST /api/imagine as multipart/form-data (from the page's own origin unless `headers` says otherwise)."""
    sent = own_origin(web) if headers is None else headers
    async with web.http.post("/api/imagine", data=form(fields, image, filename), headers=sent) as response:
        return response.status, await response.json()


async def finished(web: Web, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The job's JSON once it has ended."""
    async with web.http.get(f"/api/jobs/{job_id}/events", headers=headers or {}) as response:
        await response.read()
    status, job = await web.get(f"/api/jobs/{job_id}", headers=headers or {})
    assert status == 200, job
    return job


def pixels(png: bytes) -> tuple[tuple[int, int], Any]:
    with Image.open(io.BytesIO(png)) as image:
        return image.size, image.convert("RGB").getpixel((0, 0))


def stored_files(tmp_path: Path) -> list[Path]:
    return [path for path in tmp_path.rglob("*") if path.is_file() and "images" in path.parts]


async def test_a_picture_in_json_as_base64_is_made_again_in_its_region_and_served_back(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        sent = picture("PNG", (40, 30))
        status, body, _ = await web.post("/api/imagine", {**FOX, "image": base64.b64encode(sent).decode(),
                                                          "region": [0, 0, 1, 0.5]})  # fmt: skip
        assert status == 202, body
        job = await finished(web, body["job_id"])
        assert (job["kind"], job["region"], job["from_picture"]) == ("imagine", [0.0, 0.0, 1.0, 0.5], True)
        assert job["made_from"] == "a picture, the top half made again"
        generate = web.generator.submitted[-1]
        assert generate.region == [0.0, 0.0, 1.0, 0.5] and generate.image is not None
        assert pixels(generate.image) == ((40, 30), (0, 0, 255))  # a plain PNG of the same pixels
        async with web.http.get(job["source_url"]) as response:
            assert response.status == 200 and response.content_type == "image/png"
            assert pixels(await response.read()) == ((40, 30), (0, 0, 255))

        # a data: URL as FileReader gives it, and `base64` output with its line breaks; no region: the bottom half
        encoded = base64.encodebytes(picture("JPEG")).decode()
        for image in (f"data:image/png;base64,{base64.b64encode(sent).decode()}", encoded):
            status, body, _ = await web.post("/api/imagine", {**FOX, "image": image})
            assert status == 202, body
            job = await finished(web, body["job_id"])
            assert job["region"] == [0.0, 0.5, 1.0, 1.0] and job["made_from"] == "a picture, the bottom half made again"

        _, plain = await web.get(f"/api/jobs/{await web.imagine()}")
        assert (plain["region"], plain["from_picture"], plain["source_url"], plain["made_from"]) == (
            None, False, None, None)  # fmt: skip


async def test_a_picture_as_a_multipart_form_with_its_fields_as_text(tmp_path: Path) -> None:
    async with serving(tmp_path, token="s3cret") as web:
        token = {"Authorization": "Bearer s3cret"}
        fields = {"user": "ada", "prompt": "a fox", "count": "2", "cfg": "3.5", "temperature": "0.5",
                  "seed": "1247650969592046033", "negative": "trees", "region": "centre"}  # fmt: skip
        status, body = await upload(web, fields, picture("JPEG"), headers=token)  # a script: the token
        assert status == 202, body
        job = await finished(web, body["job_id"], token)
        assert (job["count"], job["cfg"], job["temperature"], job["seed"], job["negative"]) == (
            2, 3.5, 0.5, "1247650969592046033", "trees")  # fmt: skip
        assert job["region"] == list(REGIONS["centre"]) and job["from_picture"] is True
        async with web.http.get(job["source_url"], headers=token) as response:
            assert response.status == 200 and pixels(await response.read())[1] == pixels(picture("JPEG"))[1]

        # the page: a typed command with --no, a drawn region as text, its own Origin and the token
        drawn = {"user": "ada", "command": "/imagine a fox --count 1 --no snow", "region": "0.1, 0.2,0.6,0.9"}
        status, body = await upload(web, drawn, picture("WEBP"), headers={**own_origin(web), **token})
        assert status == 202, body
        job = await finished(web, body["job_id"], token)
        assert (job["prompt"], job["negative"], job["count"]) == ("a fox", "snow", 1)
        assert job["region"] == [0.1, 0.2, 0.6, 0.9] and web.generator.submitted[-1].region == [0.1, 0.2, 0.6, 0.9]
        assert job["made_from"] == "a picture, the region 0.1,0.2,0.6,0.9 made again"

        # a reroll starts from the same picture, in the same region
        status, body, _ = await web.post(f"/api/jobs/{job['job_id']}/reroll", {"user": "ada"}, headers=token)
        assert status == 202, body
        reroll = await finished(web, body["job_id"], token)
        assert (reroll["kind"], reroll["region"], reroll["from_picture"]) == ("reroll", job["region"], True)


BAD_FILES = [
    (b"just some text, not a picture", 400, "That file is not a picture; send a PNG, JPEG, WebP or GIF."),
    (picture("BMP"), 400, "That is a BMP file; send a PNG, JPEG, WebP or GIF."),
    (picture("PNG")[:60], 400, "That file is not a picture"),  # a PNG cut short
    (undecodable_png(), 400, "That picture could not be read; send another PNG, JPEG, WebP or GIF."),
    (b"", 400, 'The "image" file is empty; pick a picture file.'),
]


@pytest.mark.parametrize("via", ["json", "form"])
@pytest.mark.parametrize(("data", "code", "says"), BAD_FILES, ids=["text", "bmp", "cut", "undecodable", "empty"])
async def test_what_is_not_a_picture_is_400_told_by_its_content(tmp_path: Path, via: str, data: bytes, code: int,
                                                                 says: str) -> None:  # fmt: skip
    async with serving(tmp_path) as web:
        if via == "form":
            status, body = await upload(web, FOX, data, filename="fox.png")  # the name says PNG; the bytes decide
        else:
            encoded = base64.b64encode(data).decode()
            status, body, _ = await web.post("/api/imagine", {**FOX, "image": encoded} if data else {**FOX,
                                             "image": ""})  # fmt: skip
            if not data:  # JSON's empty text is empty base64
                says = '"image" is empty; send the picture file\'s bytes in standard base64'
        assert status == code and body["error"].startswith(says), body
        assert web.generator.submitted == [] and stored_files(tmp_path) == []


async def test_a_gif_bomb_is_refused_by_its_size_before_it_is_decoded(tmp_path: Path) -> None:
    bomb = gif_bomb()
    assert len(bomb) < 100_000
    async with serving(tmp_path) as web:
        status, body = await upload(web, FOX, bomb, filename="fox.gif")
        assert status == 400, body
        assert body["error"] == "That picture is 8000x8000 pixels; send one of at most 40 megapixels."
        status, body, _ = await web.post("/api/imagine", {**FOX, "image": base64.b64encode(bomb).decode()})
        assert status == 400 and "8000x8000 pixels" in body["error"], body
        assert web.generator.submitted == [] and stored_files(tmp_path) == []


async def first_line(web: Web, head: bytes) -> bytes:
    """Send only a request's head over a socket (no body at all); the status line of the answer."""
    host, port = web.adapter.url.removeprefix("http://").strip("/").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def test_a_picture_over_the_limit_is_413_and_not_read_to_its_end(tmp_path: Path) -> None:
    async with serving(tmp_path, images={"max_upload_mb": 0.05}) as web:  # 51 KiB
        big = picture("PNG", (200, 200)) + b"\0" * 60_000  # over the limit, whatever it holds
        status, body = await upload(web, FOX, big)
        assert status == 413 and body["error"] == "That picture is over 0.05 MB; send one of at most 0.05 MB.", body
        status, body, _ = await web.post("/api/imagine", {**FOX, "image": base64.b64encode(big).decode()})
        assert status == 413 and body["error"] == "That picture is over 0.05 MB; send one of at most 0.05 MB.", body
        status, body, _ = await web.post("/api/imagine", {**FOX, "image": "A" * 400_000})
        assert status == 413 and body["error"].startswith("The request body is over 0.1 MB; a picture may be at "
                                                          "most 0.05 MB"), body  # fmt: skip
        # a declared gigabyte is refused from its head: the answer comes with none of the body sent
        for kind in ("application/json", "multipart/form-data; boundary=x"):
            head = (f"POST /api/imagine HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
                    f"Authorization: Bearer none\r\nContent-Length: {10**9}\r\n\r\n").encode()  # fmt: skip
            assert (await first_line(web, head)).startswith(b"HTTP/1.1 413 "), kind
        assert web.generator.submitted == [] and stored_files(tmp_path) == []


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"image": "not base64!"}, '"image" is not base64; send the picture file\'s bytes in standard base64'),
        ({"image": 7}, '"image" must be text; send the picture file\'s bytes'),
        ({"image": "data:image/png,abc"}, '"image" is a data: URL that is not base64'),
        ({"region": [0, 0.5, 1, 1]}, 'A "region" says which part of a picture to make again; send the picture in '
                                     '"image" too.'),
        ({"image": "PIC", "region": [0, 0.5, 1]}, '"region" must be four numbers [x0, y0, x1, y1] from 0 to 1'),
        ({"image": "PIC", "region": ["0", 0.5, 1, 1]}, '"region" must be four numbers'),
        ({"image": "PIC", "region": [False, 0.5, True, 1]}, '"region" must be four numbers'),
        ({"image": "PIC", "region": "middle"}, '"region" must be four numbers [x0, y0, x1, y1] from 0 to 1, '
                                               'fractions of the width and height from the top left'),
        ({"image": "PIC", "region": [1, 0, 0, 1]}, "The region 1,0,0,1 is not inside the picture or is empty"),
        ({"image": "PIC", "region": [0, 0, 2, 1]}, "The region 0,0,2,1 is not inside the picture or is empty"),
        ({"image": "PIC", "region": "0,0.5,1,nan"}, '"region" must be four numbers'),
        ({"image": "PIC", "count": 99}, "count must be a whole number from 1 to 16"),
    ],
)
async def test_bad_base64_and_bad_regions_are_400_with_a_sentence(tmp_path: Path, extra: dict[str, Any],
                                                                  says: str) -> None:  # fmt: skip
    async with serving(tmp_path) as web:
        if extra.get("image") == "PIC":
            extra = {**extra, "image": base64.b64encode(picture()).decode()}
        status, body, _ = await web.post("/api/imagine", {**FOX, **extra})
        assert status == 400 and body["error"].startswith(says), body
        assert web.generator.submitted == [] and stored_files(tmp_path) == []


async def test_a_multipart_form_says_what_is_wrong_with_it(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        for fields, says in [
            ({"user": "ada", "prompt": "a fox", "size": "1024"}, '"size" is not something imagine takes'),
            ({"user": "ada", "prompt": "a fox", "count": "four"}, '"count" must be a whole number; you gave "four".'),
            ({"user": "ada", "prompt": "a fox", "cfg": "1e400"}, '"cfg" must be a number; you gave "1e400".'),
            ({"user": "ada", "prompt": "a fox", "seed": "-1"}, '"seed" must be a whole number or a string of digits'),
            ({"user": "ada"}, 'Describe the picture in "prompt"'),
            ({**FOX, "region": "middle"}, '"region" must be four numbers [x0, y0, x1, y1] from 0 to 1'),
            ({**FOX, "region": "0,0,2,1"}, "The region 0,0,2,1 is not inside the picture or is empty"),
            ({**FOX, "region": "0,0.5,1"}, '"region" must be four numbers'),
        ]:
            status, body = await upload(web, fields, picture())
            assert status == 400 and body["error"].startswith(says), (fields, body)
        for fields, says in [
            ({**FOX, "region": "top half"}, 'A "region" says which part of a picture to make again'),
        ]:
            status, body = await upload(web, fields, None)
            assert status == 400 and body["error"].startswith(says), (fields, body)
        twice = form(FOX, picture())
        twice.add_field("prompt", "a cat")
        async with web.http.post("/api/imagine", data=twice, headers=own_origin(web)) as response:
            assert response.status == 400
            assert (await response.json())["error"] == '"prompt" is in the form twice; send each field once.'
        broken = b"--x\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nada"  # never closed
        async with web.http.post("/api/imagine", data=broken, headers={
                **own_origin(web), "Content-Type": "multipart/form-data; boundary=x"}) as response:  # fmt: skip
            assert response.status == 400
            assert (await response.json())["error"].startswith("The multipart/form-data body could not be read")
        assert web.generator.submitted == []


def unvouched_multipart(web: Web) -> list[tuple[dict[str, str], str]]:
    """Headers of multipart writes the page must refuse, each with what the refusal says."""
    port = int(web.adapter.url.rsplit(":", 1)[1].strip("/"))
    return [
        # <form enctype="multipart/form-data" action=".../api/imagine"> on another site: no preflight
        ({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
         "Requests from other sites are refused"),
        ({"Origin": f"http://127.0.0.1:{port + 1}", "Sec-Fetch-Site": "same-site"}, "other sites"),
        ({"Origin": "null"}, "other sites"),  # a sandboxed frame
        # a browser too old to send Origin with a form looks like curl: multipart then needs the token
        ({}, "A picture sent as multipart/form-data needs the access token (Authorization) or this page's own "
             "Origin header"),
        ({"Referer": f"http://127.0.0.1:{port}/"}, "needs the access token"),  # a Referer is easily had
    ]


async def test_a_cross_site_multipart_upload_starts_nothing(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        for headers, says in unvouched_multipart(web):
            status, body = await upload(web, FOX, picture(), headers=headers)
            assert status == 403 and says in body["error"], (headers, body)
        assert web.generator.submitted == [] and stored_files(tmp_path) == []
        assert web.service.stats().waiting == 0
        # the same without a picture, as JSON from a script, still works; so does the page's own upload
        status, body, _ = await web.post("/api/imagine", {**FOX, "image": base64.b64encode(picture()).decode()})
        assert status == 202, body
        status, body = await upload(web, FOX, picture())
        assert status == 202, body


async def test_vary_with_a_region_makes_only_that_part_again_under_the_remixed_prompt(tmp_path: Path) -> None:
    async with serving(tmp_path, limits={"max_queued_per_user": 10}) as web:
        first = await finished(web, await web.imagine(count=2, negative="trees"))
        status, body, _ = await web.post(f"/api/jobs/{first['job_id']}/vary", {
            "user": "bo", "index": 1, "region": [0.25, 0.25, 0.75, 0.75], "prompt": "a fox at night"})  # fmt: skip
        assert status == 202, body
        job = await finished(web, body["job_id"])
        assert (job["kind"], job["region"], job["parent_id"], job["parent_index"], job["strength"]) == (
            "region", [0.25, 0.25, 0.75, 0.75], first["job_id"], 1, None)  # fmt: skip
        assert (job["prompt"], job["negative"], job["from_picture"], job["source_url"]) == (
            "a fox at night", "trees", False, None)  # fmt: skip
        assert job["made_from"] == f"Vary (Region) of image 2 of job {first['job_id']}, the centre made again"
        generate = web.generator.submitted[-1]
        assert generate.region == [0.25, 0.25, 0.75, 0.75] and generate.prompt == "a fox at night"
        assert generate.codes == web.generator.tokens(web.generator.submitted[0], 1)  # image 2's own cells
        assert generate.prefix is None and generate.image is None

        # a region job's pictures can be varied by region again; a name works too
        status, body, _ = await web.post(f"/api/jobs/{job['job_id']}/vary", {"user": "bo", "index": 0,
                                                                             "region": "bottom left"})  # fmt: skip
        assert status == 202, body
        again = await finished(web, body["job_id"])
        assert (again["kind"], again["region"], again["prompt"]) == ("region", [0.0, 0.5, 0.5, 1.0], "a fox at night")

        # ↻ on a Vary (Region): the same part of the same image again, under that job's own (remixed) text
        status, body, _ = await web.post(f"/api/jobs/{job['job_id']}/reroll", {"user": "bo"})
        assert status == 202, body
        reroll = await finished(web, body["job_id"])
        assert (reroll["kind"], reroll["parent_id"], reroll["parent_index"], reroll["region"]) == (
            "region", first["job_id"], 1, [0.25, 0.25, 0.75, 0.75])  # fmt: skip
        assert (reroll["prompt"], reroll["negative"], reroll["status"]) == ("a fox at night", "trees", "done")
        assert web.generator.submitted[-1].codes == generate.codes and reroll["seed"] != job["seed"]
        status, body, _ = await web.post(f"/api/jobs/{job['job_id']}/reroll", {"user": "bo", "negative": ""})
        assert status == 202 and (await finished(web, body["job_id"]))["negative"] is None

        for extra, says in [
            ({"index": 0, "region": [0, 0, 1, 0.5], "strength": "strong"},
             'Give either "strength" (variations: the top rows kept, the rest made again) or "region"'),
            ({"index": 0, "region": [0, 0, 1, 0.5], "strength": "subtle"}, 'Give either "strength"'),
            ({"index": 0, "region": [0.5, 0, 0.5, 1]}, "The region 0.5,0,0.5,1 is not inside the picture or is empty"),
            ({"index": 0, "region": {"x0": 0}}, '"region" must be four numbers'),
            ({"index": 5, "region": [0, 0, 1, 0.5]}, '"index" must be a whole number from 0 to 1'),
        ]:
            status, body, _ = await web.post(f"/api/jobs/{first['job_id']}/vary", {"user": "bo", **extra})
            assert status == 400 and body["error"].startswith(says), (extra, body)
        assert len(web.generator.submitted) == 5


async def test_the_source_picture_is_404_without_one_and_goes_with_its_job(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        plain = await web.imagine()
        status, body = await web.get(f"/api/jobs/{plain}/source.png")
        assert status == 404 and body["error"] == f"Job {plain} did not start from a picture; its own are at its " \
                                                  "image_urls."  # fmt: skip
        status, body, _ = await web.post("/api/imagine", {**FOX, "image": base64.b64encode(picture()).decode()})
        job = await finished(web, body["job_id"])
        source = tmp_path / "images" / job["job_id"] / "source.png"
        assert source.is_file()
        async with web.http.delete(f"/api/jobs/{job['job_id']}") as response:
            assert response.status == 200
        status, body = await web.get(job["source_url"])
        assert status == 410 and not source.exists()  # stored with the job, deleted with it


async def test_a_held_upload_waits_in_the_queue_with_its_picture_shown(tmp_path: Path) -> None:
    held = FakeGenerator()
    held.hold.clear()
    async with serving(tmp_path, generator=held) as web:
        status, body = await upload(web, {**FOX, "region": "top half"}, picture())
        assert status == 202, body
        _, job = await web.get(f"/api/jobs/{body['job_id']}")
        assert job["status"] in ("queued", "running") and job["region"] == [0.0, 0.0, 1.0, 0.5]
        async with web.http.get(job["source_url"]) as response:  # before the job is made
            assert response.status == 200 and pixels(await response.read())[1] == (0, 0, 255)
        held.hold.set()
        await web.events(job["job_id"])


async def test_the_api_index_lists_pictures_and_regions(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        _, index = await web.get("/api/")
        paths = {(e["method"], e["path"]): e for e in index["endpoints"]}
        assert '"image"?' in paths["POST", "/api/imagine"]["takes"] and "multipart" in paths["POST", "/api/imagine"][
            "does"]  # fmt: skip
        assert '"region"?' in paths["POST", "/api/jobs/{id}/vary"]["takes"]
        assert ("GET", "/api/jobs/{id}/source.png") in paths and "top left" in index["notes"]["regions"]
        _, about = await web.get("/api/about")
        assert about["uploads"] == {"max_mb": 10.0, "max_megapixels": 40.0, "formats": ["GIF", "JPEG", "PNG", "WEBP"]}
