"""The web adapter's HTTP API over real sockets: every endpoint, every error path, SSE order; fake generator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.adapters import configured_adapters
from bot.adapters.web import WebAdapter
from bot.adapters.web.tracking import Tracked
from bot.app import App, generator_process
from bot.commandline import USAGE
from bot.config import ConfigError, Settings, WebSettings
from bot.jobs import Done, Queued, Requester
from bot.local_queue import LocalQueue
from bot.service import Service
from tests.bot.helpers import FakeGenerator, png, running, settings, until

pytestmark = pytest.mark.asyncio

BOSS = Requester("web", "web", "web", "boss")


@dataclass
class Web:
    http: aiohttp.ClientSession
    service: Service
    generator: FakeGenerator
    adapter: WebAdapter

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, dict[str, Any], Any]:
        """Status, JSON body and headers of one POST (sent as JSON unless the headers say otherwise)."""
        data = body if isinstance(body, str) else json.dumps(body if body is not None else {})
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        async with self.http.post(path, data=data, headers=headers, **kwargs) as response:
            return response.status, await response.json(), response.headers

    async def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with self.http.get(path, **kwargs) as response:
            return response.status, await response.json()

    async def events(self, job_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The whole SSE stream of a job, in order."""
        async with self.http.get(f"/api/jobs/{job_id}/events") as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            text = (await response.read()).decode()
        stream = []
        for block in text.strip().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            stream.append((fields["event"], json.loads(fields["data"])))
        return stream

    async def imagine(self, user: str = "ada", prompt: str = "a red fox", **options: Any) -> str:
        status, body, _ = await self.post("/api/imagine", {"user": user, "prompt": prompt, **options})
        assert status == 202, body
        return body["job_id"]


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, *, token: str | None = None, admin_token: str | None = None, host: str = "127.0.0.1",
    generator: FakeGenerator | None = None, **sections: dict[str, Any],
) -> AsyncIterator[Web]:  # fmt: skip
    """A running service with the web adapter on a free port, and a client session for it."""
    config = settings(tmp_path, web={"port": 0, "host": host, **sections.pop("web", {})}, **sections)
    async with running(config, generator or FakeGenerator(steps=4, step_delay=0.01)) as (service, fake, _):
        tokens = {"admin_token": admin_token} if admin_token else {}
        adapter = WebAdapter(config.web, config.bot.data_dir, token, **tokens)
        await adapter.start(service)
        base = adapter.url.replace("0.0.0.0", "127.0.0.1")
        try:
            async with aiohttp.ClientSession(base) as http:
                yield Web(http, service, fake, adapter)
        finally:
            await adapter.close()


async def test_imagine_streams_queued_started_progress_then_done_and_serves_the_images(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a red fox", "count": 2, "seed": 7})
        assert status == 202 and body["position"] == 1
        job_id = body["job_id"]
        stream = await web.events(job_id)
        names = [name for name, _ in stream]
        assert names[0] == "queued" and names[1] == "started" and names[-1] == "done"
        assert set(names[2:-1]) == {"progress"}
        percents = [data["percent"] for name, data in stream if name == "progress"]
        assert percents == sorted(percents) and percents[-1] == 100
        assert any(data["preview_url"] for name, data in stream if name == "progress")
        done = stream[-1][1]
        assert done["seed"] == "7" and len(done["image_urls"]) == 2  # seeds are strings: exact in JavaScript

        status, job = await web.get(f"/api/jobs/{job_id}")
        assert status == 200
        assert job["status"] == "done" and job["progress"] == 100 and job["seed"] == "7" and job["error"] is None
        assert job["prompt"] == "a red fox" and job["user"] == "ada" and job["position"] is None
        for i, url in enumerate(job["image_urls"]):
            async with web.http.get(url) as response:
                assert response.status == 200 and await response.read() == png(7 + i)
        async with web.http.get(job["grid_url"]) as response:
            assert response.status == 200 and response.content_type == "image/png"
        assert job["preview_url"] is None  # the grid replaces it
        status, body = await web.get(f"/api/jobs/{job_id}/preview.png")
        assert status == 404 and body["error"].startswith("That job has finished, so it has no preview any more")
        # a late listener hears where the job stands: the latest of each kind of event, in order
        progress = ("progress", {**stream[-2][1], "preview_url": None})
        assert await web.events(job_id) == [stream[0], stream[1], progress, stream[-1]]


async def test_a_typed_command_line_sets_the_options_and_a_bad_one_gets_the_usage_line(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        status, body, _ = await web.post(
            "/api/imagine", {"user": "ada", "command": "/imagine a fox --count 3 --cfg 2 --temperature 0 --seed 9"}
        )
        assert status == 202
        _, job = await web.get(f"/api/jobs/{body['job_id']}")
        assert (job["prompt"], job["count"], job["cfg"], job["temperature"], job["seed"]) == ("a fox", 3, 2.0, 0.0, "9")
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "command": "/imagine a fox --count many"})
        assert status == 400 and body["error"].endswith(f"\n{USAGE}")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"prompt": "a fox"}, '"user"'),
        ({"user": " ", "prompt": "a fox"}, '"user"'),
        ({"user": "ada"}, '"prompt"'),
        ({"user": "ada", "prompt": "   "}, "prompt is empty"),
        ({"user": "ada", "prompt": "a fox", "count": 99}, "count must be a whole number from 1 to 16"),
        ({"user": "ada", "prompt": "a fox", "count": "4"}, '"count" must be a whole number'),
        ({"user": "ada", "prompt": "a fox", "cfg": 11}, "cfg must be between 1 and 10"),
        ({"user": "ada", "prompt": "a fox", "temperature": True}, '"temperature" must be a number'),
        ({"user": "ada", "prompt": "a fox", "seed": -1}, "seed must be a whole number"),
    ],
)
async def test_invalid_requests_are_400_with_a_sentence(tmp_path: Path, body: Any, says: str) -> None:
    async with serving(tmp_path) as web:
        status, answer, _ = await web.post("/api/imagine", body)
        assert status == 400 and says in answer["error"], answer
        assert web.generator.submitted == []


async def test_unknown_jobs_are_404_on_every_job_endpoint(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        for path in ("", "/grid.png", "/images/0.png", "/preview.png", "/events"):
            status, body = await web.get(f"/api/jobs/nope{path}")
            assert status == 404 and "There is no job nope" in body["error"], path
        for action, body in [("reroll", {}), ("upscale", {"index": 0}), ("vary", {"index": 0}), ("cancel", {})]:
            status, body, _ = await web.post(f"/api/jobs/nope/{action}", {"user": "ada", **body})
            assert status == 404 and "There is no job nope" in body["error"], action
        status, body = await web.get("/api/nothing-here")
        assert status == 404 and body["error"].startswith("There is nothing at /api/nothing-here")
        async with web.http.delete("/api/imagine") as response:
            assert response.status == 405 and "not allowed" in (await response.json())["error"]


async def test_reroll_upscale_and_vary_make_new_jobs_from_a_finished_one(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        first = await web.imagine(count=2, seed=5)
        assert (await web.events(first))[-1][0] == "done"

        status, body, _ = await web.post(f"/api/jobs/{first}/reroll", {"user": "bo"})
        assert status == 202 and body["position"] >= 0
        assert (await web.events(body["job_id"]))[-1][0] == "done"
        _, reroll = await web.get(f"/api/jobs/{body['job_id']}")
        assert (reroll["kind"], reroll["prompt"], reroll["count"]) == ("reroll", "a red fox", 2)
        assert (reroll["parent_id"], reroll["user"]) == (first, "bo")

        status, body, _ = await web.post(f"/api/jobs/{first}/upscale", {"user": "ada", "index": 1})
        assert status == 202
        stream = await web.events(body["job_id"])
        assert [name for name, _ in stream] == ["started", "done"] and len(stream[-1][1]["image_urls"]) == 1
        async with web.http.get(stream[-1][1]["image_urls"][0]) as response:
            assert response.status == 200  # upscaled to [images] upscale_px
            upscaled = await response.read()
        async with web.http.get(stream[-1][1]["grid_url"]) as response:
            assert response.status == 200 and await response.read() == upscaled  # one image: its own grid

        status, body, _ = await web.post(f"/api/jobs/{first}/vary", {"user": "ada", "index": 1, "strength": "strong"})
        assert status == 202
        assert (await web.events(body["job_id"]))[-1][0] == "done"
        _, variation = await web.get(f"/api/jobs/{body['job_id']}")
        assert (variation["kind"], variation["parent_index"], variation["strength"]) == ("variation", 1, "strong")

        for action, extra, says in [
            ("upscale", {"index": 2}, '"index" must be a whole number from 0 to 1'),
            ("vary", {"index": -1}, '"index" must be'),
            ("vary", {"index": "1"}, '"index" must be a whole number from 0 to 1 (U1 is 0); you gave "1".'),
            ("vary", {"index": 0, "strength": "wild"}, '"strength" must be "subtle" or "strong"'),
        ]:
            status, answer, _ = await web.post(f"/api/jobs/{first}/{action}", {"user": "ada", **extra})
            assert status == 400 and says in answer["error"], (action, extra)


async def test_a_job_without_images_yet_is_409_for_images_upscale_and_vary(tmp_path: Path) -> None:
    fake = FakeGenerator()
    fake.hold.clear()
    async with serving(tmp_path, generator=fake) as web:
        job_id = await web.imagine()
        for path in ("/grid.png", "/images/0.png"):
            status, body = await web.get(f"/api/jobs/{job_id}{path}")
            assert status == 409 and "no images yet" in body["error"]
        status, body = await web.get(f"/api/jobs/{job_id}/preview.png")
        assert status == 404 and "no preview yet" in body["error"]
        for action in ("upscale", "vary"):
            status, body, _ = await web.post(f"/api/jobs/{job_id}/{action}", {"user": "ada", "index": 0})
            assert status == 409 and "no images yet" in body["error"]
        _, job = await web.get(f"/api/jobs/{job_id}")
        assert job["status"] in ("queued", "running") and job["grid_url"] is None and job["image_urls"] == []
        fake.hold.set()


async def test_cancel_ends_a_waiting_job_only_for_its_owner(tmp_path: Path) -> None:
    fake = FakeGenerator(max_batch_images=4)
    fake.hold.clear()
    ada = {"Authorization": "Bearer ada's"}  # the admin token, so a second identity beside this machine's
    async with serving(tmp_path, generator=fake, admin_token="ada's") as web:
        running_job = await web.imagine(count=4)
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox", "count": 4}, headers=ada)
        waiting = body["job_id"]
        _, job = await web.get(f"/api/jobs/{waiting}")
        assert job["status"] == "queued" and job["position"] == 1

        status, body, _ = await web.post(f"/api/jobs/{waiting}/cancel", {"user": "ada"})  # typing her name
        assert status == 403 and "Only the person who asked" in body["error"]
        status, body, _ = await web.post(f"/api/jobs/{waiting}/cancel", {"user": "ada"}, headers=ada)
        assert status == 200 and body["status"] == "cancelled" and body["cancelling"] is False
        assert [name for name, _ in await web.events(waiting)] == ["queued", "cancelled"]
        status, body, _ = await web.post(f"/api/jobs/{waiting}/cancel", {"user": "ada"}, headers=ada)
        assert status == 409 and body["error"] == "That job has already finished."

        status, body, _ = await web.post(f"/api/jobs/{running_job}/cancel", {"user": "someone"})
        assert status == 200 and body["cancelling"] is True
        fake.hold.set()
        assert (await web.events(running_job))[-1][0] == "cancelled"


async def test_rate_limited_requests_are_429_with_retry_after(tmp_path: Path) -> None:
    async with serving(tmp_path, admin_token="b0ss", limits={"jobs_per_period": 1, "period_s": 600}) as web:
        await web.imagine()
        status, body, headers = await web.post("/api/imagine", {"user": "ada", "prompt": "again"})
        assert status == 429 and "try again in" in body["error"]
        assert 590 <= int(headers["Retry-After"]) <= 600
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "again"},
                                         headers={"Authorization": "Bearer b0ss"})  # fmt: skip
        assert status == 202, body  # someone else (here the admin token's holder) is not held up


async def test_too_many_waiting_jobs_is_429_too(tmp_path: Path) -> None:
    held = FakeGenerator()
    held.hold.clear()
    limits = {"max_queued_per_user": 1, "max_running_per_user": 1}
    async with serving(tmp_path, generator=held, limits=limits) as web:
        await web.imagine()  # runs (the fake generator holds it)
        await until(lambda: len(held.submitted) == 1, "the first job to start")
        await web.imagine()  # waits
        status, body, headers = await web.post("/api/imagine", {"user": "ada", "prompt": "a third"})
        assert status == 429 and body["error"].startswith("You already have 1 job waiting")
        assert int(headers["Retry-After"]) >= 1


async def test_banned_users_and_blocked_prompts_are_403(tmp_path: Path) -> None:
    async with serving(tmp_path, bot={"admins": ["web:boss"]}, blocklist={"words": ["gore"]}) as web:
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "some GORE please"})
        assert status == 403 and '"GORE"' in body["error"]
        await web.service.admin.ban(BOSS, "local", "spam")  # web bans go by identity: "local" is this machine
        status, body, _ = await web.post("/api/imagine", {"user": "mallory", "prompt": "a fox"})
        assert status == 403 and body["error"].startswith("You are banned from making images here (spam)")


async def test_a_public_bind_needs_a_token_and_the_api_checks_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JANUS_BOT_WEB_TOKEN"):
        WebAdapter(WebSettings(host="0.0.0.0"), tmp_path, None)
    async with serving(tmp_path, token="s3cret", host="0.0.0.0") as web:
        status, body, headers = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox"})
        assert status == 401 and "needs an access token" in body["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer guess"}
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox"}, headers=wrong)
        assert status == 401 and "token is wrong" in body["error"]
        assert (await web.get("/api/jobs/nope", headers=wrong))[0] == 401
        async with web.http.get("/metrics") as response:
            assert response.status == 401
        right = {"Authorization": "Bearer s3cret"}
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox"}, headers=right)
        assert status == 202
        assert (await web.get(f"/api/jobs/{body['job_id']}", headers=right))[0] == 200
        assert (await web.get("/healthz"))[0] == 200  # health checks and the page need no token
        async with web.http.get("/") as response:
            assert response.status == 200
        assert "(API needs the bearer token" in web.adapter.where


async def test_healthz_and_metrics(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        status, health = await web.get("/healthz")
        assert status == 200
        assert health == {
            "status": "ok", "generator_up": True, "model_loaded": True, "model": "fake", "device": "cpu",
            "queue_depth": 0, "running": 0, "paused": False,
        }  # fmt: skip
        job_id = await web.imagine(count=3)
        await web.events(job_id)
        async with web.http.get("/metrics") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            text = await response.text()
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        assert samples["janus_bot_up"] == "1"
        assert samples['janus_bot_jobs{state="queued"}'] == "0" and samples["janus_bot_queue_depth"] == "0"
        assert samples['janus_bot_jobs_ended_total{state="done"}'] == "1"
        assert samples["janus_bot_images_generated_total"] == "3"
        assert samples["janus_bot_step_seconds_count"] == "3" and float(samples["janus_bot_step_seconds_sum"]) > 0
        assert float(samples["janus_bot_images_per_second"]) > 0
        assert samples["janus_bot_generator_restarts_total"] == "0"
        assert "# TYPE janus_bot_jobs_ended_total counter" in text


@pytest.mark.slow
async def test_healthz_is_503_while_the_generator_restarts_after_a_crash(tmp_path: Path, tiny_dir: Path) -> None:
    config = settings(tmp_path, web={"port": 0}, model={"name": str(tiny_dir), "device": "cpu"})
    generator = generator_process(config)
    async with App(config, LocalQueue(generator)) as app:
        adapter = WebAdapter(config.web, config.bot.data_dir, None)
        await adapter.start(app.service)
        try:
            async with aiohttp.ClientSession(adapter.url) as http:
                web = Web(http, app.service, FakeGenerator(), adapter)
                assert (await web.get("/healthz"))[0] == 200
                pid = generator.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                seen: list[int] = []
                async with asyncio.timeout(60):
                    while 503 not in seen or seen[-1] != 200:  # down while it restarts, then up again
                        status, health = await web.get("/healthz")
                        if seen[-1:] != [status]:
                            seen.append(status)
                            assert health["generator_up"] is (status == 200), health
                        await asyncio.sleep(0.01)
                assert seen == [200, 503, 200] and generator.pid != pid
                async with http.get("/metrics") as response:
                    assert "janus_bot_generator_restarts_total 1" in await response.text()
        finally:
            await adapter.close()


async def test_the_page_and_its_files_are_served(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        for path, kind in [("/", "text/html"), ("/static/app.js", "javascript"), ("/static/style.css", "text/css")]:
            async with web.http.get(path) as response:
                assert response.status == 200 and kind in response.content_type, path
        async with web.http.get("/") as response:
            assert "<title>janus-bot playground</title>" in await response.text()


async def test_jobs_of_other_platforms_are_not_visible(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        handle = await web.service.submit(Requester("discord", "g1", "c1", "ada"), "a fox")
        await handle.final()
        status, body = await web.get(f"/api/jobs/{handle.job.id}")
        assert status == 404


async def test_a_finished_job_from_an_earlier_run_still_streams_its_result(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        job_id = await web.imagine(count=1)
        await web.events(job_id)
    async with serving(tmp_path) as web:  # a new adapter that never followed the job
        stream = await web.events(job_id)
        assert [name for name, _ in stream] == ["done"]
        assert (await web.get(f"/api/jobs/{job_id}"))[1]["status"] == "done"


async def test_the_web_page_runs_when_no_chat_platform_is_configured() -> None:
    adapters = configured_adapters(Settings(), {})
    assert [a.platform for a in adapters] == ["web"]
    public = Settings.model_validate({"web": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="web.host: 0.0.0.0 serves other machines"):
        configured_adapters(public, {})


async def test_run_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from janus_bot.cli import main

    assert main(["run", "--web-port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "janus-bot: --web-port: 70000 is not a port; give 0 to 65535"


async def test_a_port_taken_or_a_host_not_of_this_machine_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with running(settings(tmp_path)) as (service, _, _):
            said = []
            for host, at in (("127.0.0.1", port), ("192.0.2.1", 0)):  # 192.0.2.1: a documentation address
                with pytest.raises(ConfigError) as info:
                    await WebAdapter(WebSettings(host=host, port=at), tmp_path, "token").start(service)
                said.append(str(info.value))
    assert said[0].startswith(f"web.port: cannot listen on 127.0.0.1:{port} (")
    assert said[0].endswith("address already in use); pick another with --web-port")
    assert said[1].startswith("web.host: cannot listen on 192.0.2.1 (")
    assert said[1].endswith("); give an address of this machine, such as 127.0.0.1")


async def test_a_taken_port_is_found_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from janus_bot.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"^web.port: cannot listen on 127.0.0.1:{port} "):
            await WebAdapter(WebSettings(port=port), tmp_path).check()
        await WebAdapter(WebSettings(port=0), tmp_path).check()  # any free port: nothing to check
        code = await asyncio.to_thread(main, ["run", "--data-dir", str(tmp_path / "data"), "--web-port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and "generator[" not in err  # said before the generator (and its model) started
    assert err.splitlines()[-1].startswith(f"janus-bot: web.port: cannot listen on 127.0.0.1:{port} (")


async def test_web_jobs_left_unfinished_are_followed_after_a_restart_and_marked_delivered(tmp_path: Path) -> None:
    config = settings(tmp_path, web={"port": 0})
    stuck = FakeGenerator()
    stuck.hold.clear()
    async with serving(tmp_path, generator=stuck) as web:
        job_id = await web.imagine(count=2)
    adapter = WebAdapter(config.web, config.bot.data_dir)
    async with running(config, FakeGenerator(), on_recovered=adapter.recovered) as (service, _, store):
        await adapter.start(service)  # the recovered job may already have ended: delivery waits for start
        try:
            async with aiohttp.ClientSession(adapter.url) as http:
                web = Web(http, service, FakeGenerator(), adapter)
                assert [name for name, _ in await web.events(job_id)][-1] == "done"
                _, job = await web.get(f"/api/jobs/{job_id}")
                assert job["status"] == "done" and len(job["image_urls"]) == 2
            for _ in range(100):
                stored = await store.job(job_id)
                if stored is not None and stored.delivered:
                    break
                await asyncio.sleep(0.01)
            assert stored is not None and stored.delivered
        finally:
            await adapter.close()


async def test_run_flags_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import app
    from janus_bot.cli import main

    seen: list[Settings] = []

    async def run(config: Settings) -> None:
        seen.append(config)

    monkeypatch.setattr(app, "serve", run)
    file = tmp_path / "config.toml"
    file.write_text('[model]\nname = "from-file"\n[bot]\ndata_dir = "file-data"\n[web]\nport = 9000\n')
    flags = ["--model", "flag", "--data-dir", str(tmp_path / "d"), "--web-port", "0"]
    assert await asyncio.to_thread(main, ["run", "-c", str(file)]) == 0  # main runs its own event loop
    assert await asyncio.to_thread(main, ["run", "-c", str(file), *flags]) == 0
    assert (seen[0].model.name, seen[0].bot.data_dir, seen[0].web.port, seen[0].web.enabled) == (
        "from-file", Path("file-data"), 9000, False
    )  # fmt: skip
    assert (seen[1].model.name, seen[1].bot.data_dir, seen[1].web.port, seen[1].web.enabled) == (
        "flag", tmp_path / "d", 0, True
    )  # fmt: skip


async def test_a_quiet_stream_sends_heartbeats_and_ends_after_the_final_event() -> None:
    tracked = Tracked("j")
    await tracked.record(Queued("j", 2))
    got: list[str] = []

    async def listen() -> None:
        async for name, _ in tracked.stream(heartbeat=0.01):
            got.append(name)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.05)
    await tracked.record(Done("j", 1, b"grid", [b"png"]))
    await asyncio.wait_for(listener, 5)
    assert got[0] == "queued" and got[-1] == "done" and "" in got[1:-1]
