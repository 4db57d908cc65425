"""Other sites cannot drive the web adapter: cross-site writes and DNS-rebound Host names are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.adapters.web import WebAdapter
from bot.config import ConfigError, WebSettings
from tests.bot.adapters.test_web import serving

pytestmark = pytest.mark.asyncio

FOX = {"user": "ada", "prompt": "a fox"}


async def test_a_cross_site_text_plain_fetch_or_form_post_starts_no_job(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        port = web.adapter.url.rsplit(":", 1)[1].strip("/")
        cross_site = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
        # fetch(url, {mode: "no-cors", method: "POST", body: JSON.stringify(...)}) sends text/plain
        status, body, _ = await web.post("/api/imagine", FOX, headers={**cross_site, "Content-Type": "text/plain"})
        assert status == 403 and "other sites" in body["error"], body
        # <form method="post" enctype="text/plain"><input name='{"user":"ada","prompt":"a fox","x":"' value='"}'>
        form = '{"user":"ada","prompt":"a fox","x":"="}\r\n'
        status, body, _ = await web.post("/api/imagine", form, headers={**cross_site, "Content-Type": "text/plain"})
        assert status == 403, body
        # another port of this machine is another origin (the same site, so no Origin check would catch it)
        same_site = {"Origin": f"http://127.0.0.1:{int(port) + 1}", "Sec-Fetch-Site": "same-site"}
        status, body, _ = await web.post("/api/imagine", FOX, headers={**same_site, "Content-Type": "application/json"})
        assert status == 403, body
        status, body, _ = await web.post(
            "/api/imagine", FOX, headers={"Origin": "null", "Content-Type": "application/json"}
        )
        assert status == 403, body
        for action in ("reroll", "upscale", "vary", "cancel"):
            status, body, _ = await web.post(f"/api/jobs/nope/{action}", FOX, headers={**cross_site,
                                             "Content-Type": "application/json"})  # fmt: skip
            assert status == 403, (action, body)
        assert web.generator.submitted == [] and web.service.stats().waiting == 0


async def test_writes_need_a_json_content_type(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        job_id = await web.imagine()
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": kind} if kind else {}
            async with web.http.post(f"/api/jobs/{job_id}/reroll", data=json.dumps(FOX).encode(), headers=headers,
                                     skip_auto_headers=["Content-Type"]) as response:  # fmt: skip
                body = await response.json()
            assert response.status == 415, (kind, body)
            assert body["error"] == "Send the request body as JSON, with 'Content-Type: application/json'.", body
            if kind is not None and kind.startswith("multipart/"):
                continue  # /api/imagine takes a picture as multipart (test_web_upload.py)
            async with web.http.post("/api/imagine", data=json.dumps(FOX).encode(), headers=headers,
                                     skip_auto_headers=["Content-Type"]) as response:  # fmt: skip
                body = await response.json()
            assert response.status == 415, (kind, body)
            assert body["error"] == "Send the request body as JSON, with 'Content-Type: application/json', or a " \
                                    "picture and its fields as multipart/form-data.", body  # fmt: skip
        assert len(web.generator.submitted) == 1


async def test_curl_and_the_page_itself_keep_working(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        host = web.adapter.url.removeprefix("http://").strip("/")
        json_type = {"Content-Type": "application/json"}
        for headers in (
            {},  # curl: no Origin, no Sec-Fetch-*
            {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"},  # the page
            {"Sec-Fetch-Site": "none"},  # typed into the address bar
            {"Content-Type": "application/json; charset=utf-8"},
        ):
            status, body, _ = await web.post("/api/imagine", FOX, headers={**json_type, **headers})
            assert status == 202, (headers, body)


@pytest.mark.parametrize(
    "path", ["/", "/healthz", "/metrics", "/api/jobs/someone", "/api/jobs/someone/events", "/static/app.js"]
)
async def test_a_rebound_host_name_reads_nothing(tmp_path: Path, path: str) -> None:
    async with serving(tmp_path) as web:
        job_id = await web.imagine()
        async with web.http.get(path.replace("someone", job_id), headers={"Host": "rebind.evil.example:8080"}) as got:
            assert got.status == 421
            body = await got.json()
        assert body["error"].startswith("This bot does not answer to the name 'rebind.evil.example'"), body
        assert "[web] public_names" in body["error"]
        status, body, _ = await web.post("/api/imagine", FOX, headers={"Host": "rebind.evil.example"})
        assert status == 421 and web.service.stats().waiting + web.service.stats().running <= 1


async def test_loopback_names_with_or_without_the_port_are_answered(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        port = web.adapter.url.rsplit(":", 1)[1].strip("/")
        for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LocalHost:{port}", "localhost.", "[::1]",
                     f"[::1]:{port}"):  # fmt: skip
            assert (await web.get("/healthz", headers={"Host": host}))[0] == 200, host
            status, body, _ = await web.post("/api/imagine", FOX, headers={
                "Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})  # fmt: skip
            assert status in (202, 429), (host, body)  # 429: this client's limits, not the Host check


async def test_public_names_need_the_token_and_are_answered_behind_a_proxy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^web.public_names: .*JANUS_BOT_WEB_TOKEN"):
        WebAdapter(WebSettings(public_names=("bot.example.com",)), tmp_path, None)
    with pytest.raises(ValueError, match="a host name"):
        WebSettings(public_names=("https://bot.example.com/",))
    right = {"Authorization": "Bearer s3cret"}
    async with serving(tmp_path, token="s3cret", web={"public_names": ["Bot.Example.com"]}) as web:
        assert (await web.get("/healthz", headers={"Host": "bot.example.com"}))[0] == 200
        # a TLS proxy: the browser's origin is https and has no port, the proxy passes the Host on
        proxied = {**right, "Host": "bot.example.com", "Origin": "https://bot.example.com",
                   "Sec-Fetch-Site": "same-origin"}  # fmt: skip
        status, body, _ = await web.post("/api/imagine", FOX, headers=proxied)
        assert status == 202, body
        status, body, _ = await web.post("/api/imagine", FOX, headers={**proxied, "Origin": "https://evil.example"})
        assert status == 403, body
        assert (await web.get("/healthz", headers={"Host": "other.example.com"}))[0] == 421


async def test_a_wildcard_bind_answers_address_literals_but_not_other_names(tmp_path: Path) -> None:
    async with serving(tmp_path, token="s3cret", host="0.0.0.0") as web:
        for host in ("192.0.2.7:8080", "192.0.2.7", "[2001:db8::7]:8080", "localhost"):
            assert (await web.get("/healthz", headers={"Host": host}))[0] == 200, host
        assert (await web.get("/healthz", headers={"Host": "rebind.evil.example"}))[0] == 421
