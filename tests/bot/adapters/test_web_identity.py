"""Web identity: limits, cancelling and admin rights go by a credential; the typed name is only shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.adapters.web import WebAdapter
from bot.config import ConfigError, WebSettings
from tests.bot.adapters.test_web import serving

pytestmark = pytest.mark.asyncio

ADMIN = {"Authorization": "Bearer b0ss"}
ONE_JOB = {"jobs_per_period": 1, "period_s": 600}


async def test_new_names_do_not_dodge_the_limits(tmp_path: Path) -> None:
    async with serving(tmp_path, limits=ONE_JOB) as web:
        await web.imagine(user="eve")
        for name in ("eve2", "EVE", "eve\u200b", "Ｅｖｅ"):
            status, body, _ = await web.post("/api/imagine", {"user": name, "prompt": "a fox"})
            assert status == 429 and "try again in" in body["error"], (name, body)


async def test_names_are_normalised_and_control_characters_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture)\
        -> None:  # fmt: skip
    async with serving(tmp_path) as web:
        status, body, _ = await web.post("/api/imagine", {"user": " Ｅｖｅ\u200b\u2060  Smith ", "prompt": "a fox"})
        assert status == 202 and body["user"] == "Eve Smith"
        _, job = await web.get(f"/api/jobs/{body['job_id']}")
        assert job["user"] == "Eve Smith"
        caplog.set_level(logging.DEBUG)
        for name in ("ada\nERROR forged line", "ada\r", "tab\there", "\x1b[31mred", "nul\x00"):
            status, body, _ = await web.post("/api/imagine", {"user": name, "prompt": "a fox"})
            assert status == 400, (name, body)
            assert body["error"].startswith('"user" has a control character (such as a new line or a tab) in it.')
        for name in ("\u200b", "\u200b \u2060", "x" * 65, 7):
            status, body, _ = await web.post("/api/imagine", {"user": name, "prompt": "a fox"})
            assert status == 400 and body["error"] == 'Give your name in "user", 1 to 64 characters on one line.'
        status, body, _ = await web.post("/api/imagine", '{"user": "\\ud800", "prompt": "a fox"}')
        assert status == 400 and "half of a character" in body["error"], body
    assert "forged" not in caplog.text  # the name was refused before anything could write it


async def test_typing_someone_elses_name_cancels_nothing_and_the_admin_token_can(tmp_path: Path) -> None:
    async with serving(tmp_path, admin_token="b0ss") as web:
        web.generator.hold.clear()
        status, body, _ = await web.post("/api/imagine", {"user": "alice", "prompt": "a fox"}, headers=ADMIN)
        alices = body["job_id"]
        status, body, _ = await web.post(f"/api/jobs/{alices}/cancel", {"user": "alice"})
        assert status == 403 and "Only the person who asked" in body["error"], body
        _, job = await web.get(f"/api/jobs/{alices}")
        assert job["status"] in ("queued", "running") and job["user"] == "alice"

        mine = await web.imagine(user="mallory")  # this machine's console, no token
        status, body, _ = await web.post(f"/api/jobs/{mine}/cancel", {"user": "anyone"}, headers=ADMIN)
        assert status == 200, body  # the admin token is an admin of the web server
        status, body, _ = await web.post(f"/api/jobs/{alices}/cancel", {"user": "alice"}, headers=ADMIN)
        assert status == 200, body
        web.generator.hold.set()


async def test_a_typed_name_never_makes_a_bot_admin_but_the_admin_token_listed_does(tmp_path: Path) -> None:
    bot = {"admins": ["discord:owner", "web:alice", "web:admin"]}
    async with serving(tmp_path, admin_token="b0ss", bot=bot, limits=ONE_JOB) as web:
        await web.imagine(user="alice")
        status, body, _ = await web.post("/api/imagine", {"user": "alice", "prompt": "again"})
        assert status == 429, body  # "alice" is only a name: the limits still apply
        for _ in range(3):  # web:admin in [bot] admins: the admin token's holder is a bot admin, exempt
            status, body, _ = await web.post("/api/imagine", {"user": "alice", "prompt": "a fox"}, headers=ADMIN)
            assert status == 202, body


async def test_the_access_token_is_one_identity_and_the_admin_token_another(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give the admin a token of their own"):
        WebAdapter(WebSettings(), tmp_path, "same", "same")
    async with serving(tmp_path, token="s3cret", admin_token="b0ss", limits=ONE_JOB) as web:
        user = {"Authorization": "Bearer s3cret"}
        status, _, _ = await web.post("/api/imagine", {"user": "eve", "prompt": "a fox"}, headers=user)
        assert status == 202
        status, _, _ = await web.post("/api/imagine", {"user": "bob", "prompt": "a fox"}, headers=user)
        assert status == 429
        status, body, _ = await web.post("/api/imagine", {"user": "eve", "prompt": "a fox"}, headers=ADMIN)
        assert status == 202, body
        status, body, _ = await web.post("/api/imagine", {"user": "eve", "prompt": "a fox"})
        assert status == 401 and "needs an access token" in body["error"]


async def test_with_only_an_admin_token_this_machine_needs_none(tmp_path: Path) -> None:
    async with serving(tmp_path, admin_token="b0ss") as web:
        await web.imagine()
        status, body, _ = await web.post("/api/imagine", {"user": "ada", "prompt": "a fox"},
                                         headers={"Authorization": "Bearer guess"})  # fmt: skip
        assert status == 401 and body["error"] == "That token is wrong; send the admin token " \
                                                  "(JANUS_BOT_WEB_ADMIN_TOKEN), or none."  # fmt: skip
