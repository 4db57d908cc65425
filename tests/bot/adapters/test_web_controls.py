"""The web API's creative controls over real sockets: negative prompts, remix, info, delete, exact seeds, history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.adapters.web import WebAdapter
from bot.adapters.web.about import demo_examples, model_name
from bot.config import ConfigError, WebSettings
from bot.jobs import Requester
from generator import protocol as wire
from tests.bot.adapters.test_web import Web, serving
from tests.bot.helpers import PNG_SIZE, FakeGenerator

pytestmark = pytest.mark.asyncio

ADMIN = {"Authorization": "Bearer b0ss"}
BIG_SEED = 1247650969592046033  # above 2**53: JavaScript's numbers would round it to ...6000


async def finished(web: Web, **body: Any) -> dict[str, Any]:
    """A job made through the API and followed to its end; its JSON."""
    status, answer, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a red fox", **body})
    assert status == 202, answer
    await web.events(answer["job_id"])
    status, job = await web.get(f"/api/jobs/{answer['job_id']}")
    assert status == 200, job
    return job


async def test_a_negative_prompt_reaches_the_generator_and_the_job_from_the_field_or_no(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        job = await finished(web, negative="  trees, fog ")
        assert job["negative"] == "trees, fog" and web.generator.submitted[-1].negative == "trees, fog"
        typed = {"user": "ada", "command": "/imagine a fox --no trees --count 2"}
        status, body, _ = await web.post("/api/imagine", typed)
        assert status == 202, body
        await web.events(body["job_id"])
        _, typed = await web.get(f"/api/jobs/{body['job_id']}")
        assert (typed["prompt"], typed["negative"], typed["count"]) == ("a fox", "trees", 2)
        assert web.generator.submitted[-1].negative == "trees"
        plain = await finished(web)
        assert plain["negative"] is None and web.generator.submitted[-1].negative is None
        for body, says in [
            ({"negative": 7}, '"negative" must be text such as "trees, fog"; you gave 7.'),
            ({"negative": "x" * 2000}, "The negative prompt is 2000 characters long"),
        ]:
            status, answer, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox", **body})
            assert status == 400 and answer["error"].startswith(says), answer
        status, answer, _ = await web.post("/api/imagine", {"user": "ada", "command": "a fox --no trees",
                                                            "negative": "fog"})  # fmt: skip
        assert status == 400 and answer["error"] == 'Give the negative prompt either in "negative" or as --no in ' \
                                                    '"command", not both.'  # fmt: skip


async def test_reroll_and_vary_take_an_edited_prompt_and_negative(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        first = await finished(web, count=2, negative="trees")
        status, body, _ = await web.post(f"/api/jobs/{first['job_id']}/reroll",
                                         {"user": "ada", "prompt": "a blue fox", "negative": "snow"})  # fmt: skip
        assert status == 202, body
        await web.events(body["job_id"])
        _, reroll = await web.get(f"/api/jobs/{body['job_id']}")
        assert (reroll["kind"], reroll["prompt"], reroll["negative"]) == ("reroll", "a blue fox", "snow")

        status, body, _ = await web.post(f"/api/jobs/{first['job_id']}/vary",
                                         {"user": "ada", "index": 1, "prompt": "a fox at night", "negative": ""})
        assert status == 202, body
        await web.events(body["job_id"])
        _, variation = await web.get(f"/api/jobs/{body['job_id']}")
        assert (variation["prompt"], variation["negative"]) == ("a fox at night", None)  # "" drops it
        sent = web.generator.submitted[-1]
        assert sent.prompt == "a fox at night" and sent.negative is None and sent.prefix  # the kept rows

        status, body, _ = await web.post(f"/api/jobs/{first['job_id']}/reroll", {"user": "ada"})
        await web.events(body["job_id"])
        _, kept = await web.get(f"/api/jobs/{body['job_id']}")
        assert (kept["prompt"], kept["negative"]) == ("a red fox", "trees")  # no remix: the job's own

        for action, extra, says in [
            ("reroll", {"prompt": "  "}, "The prompt is empty"),
            ("reroll", {"prompt": 3}, '"prompt" must be text such as "a red fox"; you gave 3.'),
            ("vary", {"index": 0, "negative": ["a"]}, '"negative" must be text'),
        ]:
            status, answer, _ = await web.post(f"/api/jobs/{first['job_id']}/{action}", {"user": "ada", **extra})
            assert status == 400 and answer["error"].startswith(says), (action, answer)


async def test_a_job_says_everything_about_itself(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        first = await finished(web, count=2, cfg=3, temperature=0.5, seed=42, negative="trees")
        assert first["seed"] == "42" and first["negative"] == "trees"
        assert (first["count"], first["cfg"], first["temperature"], first["model"]) == (2, 3.0, 0.5, "fake")
        assert first["model_name"] == "fake"  # a hub id's or a directory's last part
        assert first["user"] == "ada" and first["made_from"] is None
        assert first["created_at"] <= first["started_at"] <= first["finished_at"]
        assert first["waited_s"] == pytest.approx(first["started_at"] - first["created_at"])
        assert first["ran_s"] == pytest.approx(first["finished_at"] - first["started_at"])
        status, body, _ = await web.post(f"/api/jobs/{first['job_id']}/vary", {"user": "bo", "index": 1,
                                                                                "strength": "strong"})  # fmt: skip
        await web.events(body["job_id"])
        _, variation = await web.get(f"/api/jobs/{body['job_id']}")
        assert variation["made_from"] == f"strong variations of image 2 of job {first['job_id']}"
        status, body, _ = await web.post(f"/api/jobs/{first['job_id']}/upscale", {"user": "bo", "index": 0})
        await web.events(body["job_id"])
        _, upscale = await web.get(f"/api/jobs/{body['job_id']}")
        assert upscale["made_from"] == f"upscale of image 1 of job {first['job_id']}" and upscale["seed"] == "42"
        status, body, _ = await web.post(f"/api/jobs/{first['job_id']}/reroll", {"user": "bo"})
        _, reroll = await web.get(f"/api/jobs/{body['job_id']}")
        assert reroll["made_from"] == f"reroll of job {first['job_id']}" and reroll["user"] == "bo"


async def test_seeds_are_strings_out_and_digits_or_safe_integers_in(tmp_path: Path) -> None:
    async with serving(tmp_path, limits={"max_queued_per_user": 10}) as web:
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox", "seed": str(BIG_SEED)})
        assert status == 202, body
        stream = await web.events(body["job_id"])
        assert stream[-1][1]["seed"] == str(BIG_SEED) and web.generator.submitted[-1].seed == BIG_SEED
        _, job = await web.get(f"/api/jobs/{body['job_id']}")
        assert job["seed"] == str(BIG_SEED)
        command = {"user": "ada", "command": f"/imagine a fox --seed {BIG_SEED}"}
        status, body, _ = await web.post("/api/imagine", command)
        assert status == 202 and (await web.get(body["url"]))[1]["seed"] == str(BIG_SEED)
        for seed in (2**53 - 1, "0", str(wire.SEED_MAX)):
            status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox", "seed": seed})
            assert status == 202 and (await web.get(body["url"]))[1]["seed"] == str(seed), body
        for seed, says in [
            (BIG_SEED, f'"seed" above 9007199254740991 must be a string of digits, such as "{BIG_SEED}": '
                       "JavaScript and many JSON readers round larger numbers."),
            ("12a", '"seed" must be a whole number or a string of digits, such as "42"; you gave "12a".'),
            ("-1", '"seed" must be a whole number or a string of digits'),
            (" 7", '"seed" must be a whole number or a string of digits'),
            (1.5, '"seed" must be a whole number or a string of digits'),
            (str(wire.SEED_MAX + 1), f"seed must be a whole number from 0 to {wire.SEED_MAX}"),
        ]:
            status, answer, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox", "seed": seed})
            assert status == 400 and answer["error"].startswith(says), (seed, answer)


async def test_delete_leaves_a_tombstone_that_every_url_of_the_job_names(tmp_path: Path) -> None:
    async with serving(tmp_path, admin_token="b0ss") as web:
        mine = await finished(web, count=2)
        theirs = await finished(web, count=2)
        job_id = mine["job_id"]
        async with web.http.delete(f"/api/jobs/{job_id}") as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        assert body["deleted"] is True and body["job_id"] == job_id and body["image_urls"] == []
        gone = f"Job {job_id} was deleted by the person who asked for it; start a new one with /imagine."
        for path in ("", "/grid.png", "/images/0.png", "/preview.png", "/events"):
            status, answer = await web.get(f"/api/jobs/{job_id}{path}")
            assert (status, answer["error"]) == (410, gone), path
        for action, extra in [("reroll", {}), ("upscale", {"index": 0}), ("vary", {"index": 0}), ("cancel", {})]:
            status, answer, _ = await web.post(f"/api/jobs/{job_id}/{action}", {"user": "ada", **extra})
            assert (status, answer["error"]) == (410, gone), action
        async with web.http.delete(f"/api/jobs/{job_id}") as response:
            assert response.status == 410

        status, body, _ = await web.post("/api/imagine", {"user": "eve", "prompt": "a fox"}, headers=ADMIN)
        await web.events(body["job_id"])
        async with web.http.delete(f"/api/jobs/{body['job_id']}") as response:
            assert response.status == 403
            assert (await response.json())["error"] == "Only the person who asked for that job, or an admin, can " \
                                                       "delete it."  # fmt: skip
        async with web.http.delete(f"/api/jobs/{theirs['job_id']}", headers=ADMIN) as response:
            assert response.status == 200
        status, answer = await web.get(f"/api/jobs/{theirs['job_id']}")
        assert status == 410 and answer["error"].startswith(f"Job {theirs['job_id']} was deleted by an admin")
        audit = await web.service.admin.audit_log(Requester("web", "web", "web", "admin", True))
        assert [(entry.action, entry.detail.get("job_id")) for entry in audit][:1] == [("delete", theirs["job_id"])]


async def test_delete_needs_no_body_but_refuses_other_sites_and_running_jobs(tmp_path: Path) -> None:
    held = FakeGenerator()
    held.hold.clear()
    async with serving(tmp_path, generator=held) as web:
        job_id = await web.imagine()
        async with web.http.delete(f"/api/jobs/{job_id}") as response:
            assert response.status == 409
            assert (await response.json())["error"] == "That job is still being made; cancel it first."
        cross = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        async with web.http.delete(f"/api/jobs/{job_id}", headers=cross) as response:
            assert response.status == 403 and "other sites" in (await response.json())["error"]
        async with web.http.delete(f"/api/jobs/{job_id}", data="x", headers={"Content-Type": "text/plain"}) as got:
            assert got.status == 415
        async with web.http.delete(f"/api/jobs/{job_id}", json={"user": "ada"}) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "DELETE takes no request body; send none."
        held.hold.set()


async def test_history_pages_through_ones_own_jobs_and_admins_see_everyones(tmp_path: Path) -> None:
    async with serving(tmp_path, admin_token="b0ss", limits={"max_queued_per_user": 10}) as web:
        mine = [await web.imagine(prompt=f"fox {i}") for i in range(5)]
        for job_id in mine:
            await web.events(job_id)
        status, body, _ = await web.post("/api/imagine", {"user": "eve", "prompt": "eve's"}, headers=ADMIN)
        evess = body["job_id"]
        await web.events(evess)
        async with web.http.delete(f"/api/jobs/{mine[2]}") as response:
            assert response.status == 200

        status, page = await web.get("/api/jobs?limit=2")
        assert status == 200 and [job["job_id"] for job in page["jobs"]] == [mine[4], mine[3]]
        assert page["jobs"][0]["prompt"] == "fox 4" and page["jobs"][0]["image_urls"]
        status, older = await web.get(page["older_url"])
        assert [job["job_id"] for job in older["jobs"]] == [mine[1]]  # the deleted one is left out
        status, oldest = await web.get(older["older_url"])
        assert [job["job_id"] for job in oldest["jobs"]] == [mine[0]] and oldest["older_url"] is None

        status, answer = await web.get("/api/jobs?everyone=1")
        assert status == 403 and answer["error"] == "Only an admin sees everyone's jobs; send the admin token " \
                                                    "(JANUS_BOT_WEB_ADMIN_TOKEN)."  # fmt: skip
        status, gallery = await web.get("/api/jobs?everyone=1", headers=ADMIN)
        assert status == 200
        assert [job["job_id"] for job in gallery["jobs"]] == [evess, mine[4], mine[3], mine[1], mine[0]]
        assert [job["user"] for job in gallery["jobs"]][:2] == ["eve", "ada"]
        for query, says in [
            ("limit=0", '"limit" must be a whole number from 1 to 100; you gave "0".'),
            ("limit=x", '"limit" must be a whole number from 1 to 100'),
            ("before=yesterday", '"before" must be a time in seconds since 1970 (a job\'s "created_at")'),
            ("everyone=maybe", '"everyone" must be 1 or 0'),
            ("user=eve", '"user" is not something the job list takes; send only "before", "limit" and "everyone".'),
        ]:
            status, answer = await web.get(f"/api/jobs?{query}")
            assert status == 400 and answer["error"].startswith(says), (query, answer)


async def test_a_cancelled_or_failed_jobs_pictures_say_why_there_are_none(tmp_path: Path) -> None:
    held = FakeGenerator()
    held.hold.clear()
    async with serving(tmp_path, generator=held) as web:
        job_id = await web.imagine()
        status, body, _ = await web.post(f"/api/jobs/{job_id}/cancel", {"user": "ada"})
        held.hold.set()
        await web.events(job_id)
        for path in ("/grid.png", "/images/0.png"):
            status, answer = await web.get(f"/api/jobs/{job_id}{path}")
            assert (status, answer["error"]) == (409, "That job was cancelled, so it has no images; start a new one "
                                                      "with /imagine.")  # fmt: skip
        status, answer, _ = await web.post(f"/api/jobs/{job_id}/vary", {"user": "ada", "index": 0})
        assert status == 409 and answer["error"].startswith("That job was cancelled")
        failed = await web.imagine(prompt="please fail")
        await web.events(failed)
        status, answer = await web.get(f"/api/jobs/{failed}/grid.png")
        assert (status, answer["error"]) == (409, "That job failed (The fake generator was told to fail.), so it has "
                                                  "no images; start a new one with /imagine.")  # fmt: skip


async def test_the_api_root_lists_the_endpoints_and_static_says_where_the_page_is(tmp_path: Path) -> None:
    async with serving(tmp_path, token="s3cret") as web:
        status, index = await web.get("/api/")  # documentation: no token needed
        assert status == 200
        listed = {f"{e['method']} {e['path']}" for e in index["endpoints"]}
        assert {"POST /api/imagine", "GET /api/jobs", "GET /api/jobs/{id}", "DELETE /api/jobs/{id}",
                "POST /api/jobs/{id}/vary", "GET /api/about", "GET /healthz"} <= listed  # fmt: skip
        assert all(e["does"].endswith(".") for e in index["endpoints"])
        assert "seeds are strings" in index["notes"]["seeds"].lower()
        status, answer = await web.get("/api")
        assert status == 200 and answer == index
        for path in ("/static/", "/static"):
            status, answer = await web.get(path)
            assert status == 404 and answer["error"] == "There is no page at /static/; the playground is at /.", path
        status, answer = await web.get("/static/nothing.js")
        assert status == 404 and answer["error"].startswith("There is nothing at /static/nothing.js;")
        assert "GET /api/ lists the API" in answer["error"]


class DemoGenerator(FakeGenerator):
    """The fake generator, reporting the shipped demo model's directory as its model."""

    async def start(self) -> wire.Ready:
        return wire.Ready("/opt/janus-bot/generator/demo_model", "cpu", PNG_SIZE, self.grid_size,
                          self.max_batch_images)  # fmt: skip


async def test_about_names_the_model_and_for_the_demo_says_what_it_draws(tmp_path: Path) -> None:
    async with serving(tmp_path, generator=DemoGenerator()) as web:
        status, about = await web.get("/api/about")
        assert status == 200
        model = about["model"]
        assert model["name"] == "janus-bot demo model" and model["demo"] is True and model["device"] == "cpu"
        assert model["path"] == "/opt/janus-bot/generator/demo_model"
        assert "circles, squares or triangles" in model["draws"]
        assert model["examples"] == demo_examples() and len(model["examples"]) >= 4
        assert about["defaults"] == {"count": 4, "cfg": 5.0, "temperature": 1.0}
    async with serving(tmp_path / "real") as web:
        _, about = await web.get("/api/about")
        assert about["model"] == {"name": "fake", "path": "fake", "device": "cpu", "demo": False, "draws": None,
                                  "examples": []}  # fmt: skip


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("deepseek-community/Janus-Pro-7B", "Janus-Pro-7B"),
        ("/srv/models/Janus-Pro-1B/", "Janus-Pro-1B"),
        ("C:\\models\\Janus-1.3B", "Janus-1.3B"),
        ("/home/ada/janus-bot/generator/demo_model", "janus-bot demo model"),
    ],
)
async def test_a_models_name_is_the_last_part_of_its_id_or_path(model: str, name: str) -> None:
    assert model_name(model) == name


async def test_about_tells_the_page_who_it_is_and_the_consoles_name(tmp_path: Path) -> None:
    async with serving(tmp_path, admin_token="b0ss", web={"console_name": "Ada at the console"}) as web:
        _, about = await web.get("/api/about")
        assert about["you"] == {"identity": "local", "console": True, "admin": False, "name": "Ada at the console"}
        _, about = await web.get("/api/about", headers=ADMIN)
        assert about["you"] == {"identity": "admin", "console": False, "admin": True, "name": None}
    async with serving(tmp_path / "token", token="s3cret", bot={"admins": ["web:token"]}) as web:
        _, about = await web.get("/api/about", headers={"Authorization": "Bearer s3cret"})
        assert about["you"] == {"identity": "token", "console": False, "admin": True, "name": None}
    async with serving(tmp_path / "default") as web:
        _, about = await web.get("/api/about")
        assert about["you"]["console"] is True and about["you"]["name"]  # the login name, or "operator"
    with pytest.raises(ConfigError, match="web.console_name: give a name of 1 to 64 characters on one line"):
        WebAdapter(WebSettings(console_name="ada\nERROR"), tmp_path)
