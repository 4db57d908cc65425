"""The Slack adapter in HTTP mode, at the wire: signed requests in, Web API calls out to a fake Slack."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from bot.adapters.slack.adapter import SlackAdapter
from bot.adapters.slack.app import NOT_ADMIN
from bot.commandline import USAGE
from bot.config import ConfigError
from bot.jobs import Status
from bot.store import Store
from tests.bot.adapters.fake_slack import BOT_TOKEN, CHANNEL, SIGNING_SECRET, FakeSlack, running_slack
from tests.bot.helpers import FakeGenerator, running, settings

pytestmark = pytest.mark.asyncio


async def all_delivered(store: Store, count: int) -> bool:
    """Whether `count` jobs are done and each was marked delivered."""
    done = await store.jobs(Status.DONE)
    return len(done) == count and all(job.delivered for job in done)


async def test_imagine_acks_with_the_position_then_edits_one_message_and_uploads_the_grid(tmp_path: Path) -> None:
    fake = FakeGenerator(steps=4, step_delay=0.02)
    async with running_slack(tmp_path, generator=fake) as bot:
        answer = await bot.command("a lighthouse &amp; a boat --count 2 --seed 7")  # Slack escapes &, < and >
        assert answer == {"text": "Queued, position 1.", "response_type": "ephemeral"}
        done = await bot.slack.final(": done")
        assert [m.ts for m in bot.slack.posted()] == [done.ts]  # one message, edited in place
        assert done.channel == CHANNEL and done.thread_ts is None
        statuses = [block[0]["text"]["text"] for block in done.edits[:-1]]
        assert "Queued, position 1." in statuses[0] and "Cancel" in str(done.edits[0])
        assert any("Generating… 50%" in s for s in statuses)
        previews = [f for f in bot.slack.files.values() if f.channel is None]
        await bot.slack.until(lambda: previews and all(p.deleted for p in previews))  # shown by id, then removed
        assert any(b["type"] == "image" and b["slack_file"]["id"] == previews[0].id for e in done.edits for b in e)

        job = (await bot.store.jobs(Status.DONE))[0]
        grid = bot.slack.files[done.image() or ""]
        assert (grid.channel, grid.thread_ts) == (CHANNEL, done.ts)  # shared in the job message's thread
        assert grid.data == await bot.store.read_file(job.grid_path or "")
        assert set(done.buttons()) == {"🔄 Reroll", "✏️ Remix", "U1", "U2", "V1", "V2", "ℹ️ Info", "🗑️ Delete"}
        assert {b["value"] for b in done.buttons().values()} == {job.id}
        assert "seed 7" in str(done.blocks)
        assert (fake.submitted[0].prompt, fake.submitted[0].count, fake.submitted[0].seed) == (
            "a lighthouse & a boat",
            2,
            7,
        )
        await bot.slack.until(lambda: all_delivered(bot.store, 1))


async def test_a_prompt_cannot_notify_the_channel_or_hide_a_link(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        # As Slack sends what was typed: "<!channel> look at <https://evil.example|this>", with & < > escaped.
        await bot.command("&lt;!channel&gt; look at &lt;https://evil.example|this&gt; --count 1")
        done = await bot.slack.final(": done")
        escaped = "&lt;!channel&gt; look at &lt;https://evil.example|this&gt;"
        texts = [call["text"] for call in bot.slack.calls_of("chat.postMessage", "chat.update")]
        assert texts and all(text.startswith(f"{escaped}: ") for text in texts)  # the fallback text, as the blocks
        mrkdwn = [b["text"]["text"] for blocks in done.edits for b in blocks if b["type"] == "section"]
        assert mrkdwn and all(text.startswith(f"*{escaped}*") for text in mrkdwn)


async def test_forged_stale_unsigned_and_replayed_requests_get_401_and_start_nothing(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        body = bot.slack.form(bot.slack.command("a cat"))
        forged = bot.slack.signed(body, secret="not-the-secret")
        stale = bot.slack.signed(body, at=time.time() - 6 * 60)
        unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
        tampered = bot.slack.signed(body.replace("a+cat", "a+dog"))
        for headers in (forged, stale, unsigned, {**tampered, "X-Slack-Signature": "v0=00"}):
            assert (await bot.post(body, headers)).status == 401
        ssl_check = bot.slack.form({"ssl_check": "1", "token": "legacy"})
        assert (await bot.post(ssl_check, unsigned)).status == 200  # Slack's certificate check, which does nothing
        signed = bot.slack.signed(body)
        assert (await bot.post(body, signed)).status == 200
        assert (await bot.post(body, signed)).status == 401  # the same request again is a replay
        await bot.slack.final(": done")
        assert len(bot.generator.submitted) == 1


async def test_buttons_reroll_upscale_vary_and_cancel_by_the_job_id_they_carry(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        await bot.command("a cat --count 2 --seed 5")
        first = await bot.slack.final(": done")
        parent = bot.generator.submitted[0]

        await bot.click(first, "U2")
        upscaled = await bot.slack.until(lambda: [m for m in bot.slack.posted()[1:] if m.text.endswith(": done")])
        assert "(image 2, upscaled)" in str(upscaled[0].blocks)
        assert set(upscaled[0].buttons()) == {"✏️ Remix", "ℹ️ Info", "🗑️ Delete"}  # one image: no U or V
        upscaled_file = bot.slack.files[upscaled[0].image() or ""]
        assert upscaled_file.thread_ts == upscaled[0].ts and upscaled_file.data.startswith(b"\x89PNG")

        await bot.click(first, "V1")
        await bot.slack.until(lambda: len(bot.generator.submitted) == 2)
        variation = bot.generator.submitted[1]
        assert variation.prompt == "a cat" and variation.prefix is not None
        assert variation.prefix[0] == bot.generator.tokens(parent, 0)[: len(variation.prefix[0])]

        await bot.click(first, "V2 strong")  # from the menu
        await bot.slack.until(lambda: len(bot.generator.submitted) == 3)
        strong = bot.generator.submitted[2].prefix
        assert strong is not None and len(strong[0]) < len(variation.prefix[0])  # fewer rows kept

        await bot.slack.until(lambda: len([m for m in bot.slack.posted() if m.text.endswith(": done")]) == 4)
        bot.generator.hold.clear()
        await bot.click(first, "🔄 Reroll")
        waiting = await bot.slack.until(lambda: bot.slack.posted()[4:])
        assert bot.generator.submitted[-1].prompt == "a cat" and bot.generator.submitted[-1].seed != 5
        await bot.click(waiting[0], "Cancel")
        await bot.slack.until(lambda: bot.generator.cancels)
        bot.generator.hold.set()
        cancelled = await bot.slack.final(": cancelled")
        assert "Cancelled." in str(cancelled.blocks) and set(cancelled.buttons()) == {"🔄 Try again"}


async def test_refusals_are_ephemeral_sentences_and_post_nothing(tmp_path: Path) -> None:
    async with running_slack(tmp_path, generator=FakeGenerator(max_batch_images=4)) as bot:
        assert (await bot.command("a cat --count two"))["text"] == f'--count needs a whole number, not "two".\n{USAGE}'
        assert (await bot.command(""))["text"].startswith("Say what to draw.")
        too_many = await bot.command("a cat --count 8")
        assert too_many == {"text": "This bot makes at most 4 images per job; ask for 4 or fewer.",
                            "response_type": "ephemeral"}  # fmt: skip
        bot.slack.admins.add("U0ADMIN")
        banned = await bot.command("ban <@U0BOB|bob> spam", user="U0ADMIN", command="/imagine-admin")
        assert banned["text"] == "<@U0BOB> can no longer make images here."
        refused = await bot.command("a cat", user="U0BOB")
        assert refused["text"].startswith("You are banned from making images here (spam)")
        assert bot.slack.posted() == [] and bot.generator.submitted == []

        await bot.command("a cat --count 1", user="U0BOB2")
        done = await bot.slack.final(": done")
        await bot.click(done, "U1", user="U0BOB")  # a banned user's click is refused through the response_url
        await bot.slack.until(lambda: bot.slack.responses)
        assert bot.slack.responses[-1]["response_type"] == "ephemeral"
        assert bot.slack.responses[-1]["text"].startswith("You are banned")


async def test_admin_commands_for_workspace_admins_and_bot_admins_only(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        assert (await bot.command("settings", command="/imagine-admin"))["text"] == NOT_ADMIN
        bot.slack.admins.add("U0ADMIN")  # users.info says so
        admin = {"user": "U0ADMIN", "command": "/imagine-admin"}
        assert "`defaults.count` = `4`" in (await bot.command("settings", **admin))["text"]
        assert (await bot.command("set defaults.count 2", **admin))["text"] == "`defaults.count` is now `2` here."
        assert "less than or equal to 16" in (await bot.command("set defaults.count 99", **admin))["text"]
        assert "Blocked `dragon`" in (await bot.command("block dragon", **admin))["text"]
        assert "not allowed here" in (await bot.command("a red dragon"))["text"]
        assert (await bot.command("pause", **admin))["text"] == "Only the bot's admins can do that."
        owner = {"user": "U0OWNER", "command": "/imagine-admin"}  # slack:U0OWNER in [bot] admins
        assert (await bot.command("pause", **owner))["text"].startswith("Paused")
        await bot.command("a cat")
        assert "waiting, position 1" in (await bot.command("queue", **admin))["text"]
        assert (await bot.command("resume", **owner))["text"].startswith("Resumed")
        await bot.slack.final(": done")
        assert bot.generator.submitted[0].count == 2  # the workspace default set above
        audit = (await bot.command("audit", **admin))["text"]
        assert "<@U0OWNER> resume" in audit and "<@U0ADMIN> set key=defaults.count" in audit
        assert "not an /imagine-admin subcommand" in (await bot.command("frobnicate", **admin))["text"]
        assert len(bot.slack.called("users.info")) == 3  # looked up once per user, then cached
        bot.slack.fail("users.info", "missing_scope", needed="users:read")
        refused = (await bot.command("settings", user="U0NEW", command="/imagine-admin"))["text"]
        assert refused.startswith(NOT_ADMIN) and "missing the users:read permission" in refused


async def test_slack_api_errors_are_retried_or_reported_with_the_missing_scope(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_slack(tmp_path) as bot:
        bot.slack.fail("chat.postMessage", "ratelimited", status=429)
        await bot.command("a cat --count 1")
        await bot.slack.final(": done")
        first, second = [call.at for call in bot.slack.calls if call.method == "chat.postMessage"]
        assert second - first >= 1.0  # retried after the second Retry-After asked for

        bot.slack.fail("files.getUploadURLExternal", "missing_scope", times=10, needed="files:write",
                       provided="commands,chat:write")  # fmt: skip
        with caplog.at_level(logging.ERROR):
            await bot.command("a dog --count 1")
            await bot.slack.until(lambda: bot.slack.responses)
        assert "files:write" in bot.slack.responses[-1]["text"]
        assert "missing scope files:write" in caplog.text
        dog = (await bot.store.jobs(Status.DONE))[-1]
        assert dog.prompt == "a dog" and not dog.delivered  # shown again after a restart, once fixed

        bot.generator.hold.clear()
        bot.slack.fail("chat.postMessage", "channel_not_found")
        await bot.command("a bird")
        await bot.slack.until(lambda: len(bot.slack.responses) == 2)
        assert bot.slack.responses[-1]["text"].startswith("I cannot post in this channel")
        bot.generator.hold.set()
        cancelled = await bot.slack.until(lambda: bot.store.jobs(Status.CANCELLED))  # no one would see it
        assert [job.prompt for job in cancelled] == ["a bird"]


async def test_restart_edits_the_old_messages_of_unfinished_and_undelivered_jobs_and_old_buttons_work(
    tmp_path: Path,
) -> None:
    async with FakeSlack() as slack:
        async with running_slack(tmp_path, slack=slack) as bot:
            slack.fail("files.getUploadURLExternal", "missing_scope", times=50, needed="files:write")
            await bot.command("a dog --count 1")
            dog = await slack.final(": done")
            assert dog.image() is None and "files:write" in str(dog.blocks)
            slack.heal()  # the app is reinstalled with the scope
            await bot.command("a fox --count 1")
            fox = (await slack.until(lambda: [m for m in slack.posted() if m.text == "a fox: done"]))[0]
            bot.generator.hold.clear()
            await bot.command("an owl --count 1")
            owl = (await slack.until(lambda: slack.posted()[2:]))[0]
            owl_job = (await bot.store.jobs(Status.QUEUED, Status.RUNNING))[0]
            await slack.until(lambda: bot.service.message(owl_job.id))  # kept before the restart
        assert "owl" in owl.text and "done" not in owl.text  # left waiting by the restart
        async with running_slack(tmp_path, slack=slack) as bot:
            await slack.until(lambda: owl.text == "an owl: done")  # the same messages, edited in place
            await slack.until(lambda: dog.image())
            assert len(slack.posted()) == 3 and slack.files[owl.image() or ""].thread_ts == owl.ts
            await bot.click(fox, "🔄 Reroll")  # a button from before the restart
            await slack.until(lambda: [m for m in slack.posted()[3:] if m.text == "a fox: done"])
            await slack.until(lambda: all_delivered(bot.store, 4))


async def test_a_job_whose_message_was_deleted_is_shown_in_a_new_one(tmp_path: Path) -> None:
    async with FakeSlack() as slack:
        async with running_slack(tmp_path, slack=slack) as bot:
            bot.generator.hold.clear()
            await bot.command("a newt --count 1")
            slack.delete((await slack.until(lambda: slack.posted()))[0])
        async with running_slack(tmp_path, slack=slack) as bot:
            newt = await slack.final(": done")
            assert newt.channel == CHANNEL and newt.image() is not None
            await slack.until(lambda: all_delivered(bot.store, 1))


async def test_a_port_already_taken_stops_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with FakeSlack() as slack, running(settings(tmp_path, slack={
            "mode": "http", "host": "127.0.0.1", "port": port, "api_url": slack.api_url})) as (service, _, _):
            adapter = SlackAdapter(service.settings, BOT_TOKEN, app_token=None, signing_secret=SIGNING_SECRET)
            with pytest.raises(ConfigError) as info:
                await adapter.start(service)
            await adapter.close()
    message = str(info.value)
    assert message.startswith(f"slack.port: cannot listen on 127.0.0.1:{port} (") and "\n" not in message
    assert message.endswith("address already in use); pick another in [slack]")


async def test_a_refused_token_and_a_taken_port_are_said_before_the_model_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with FakeSlack() as slack:  # no service, no generator: check() needs neither
            config = settings(tmp_path, slack={"mode": "http", "host": "127.0.0.1", "port": port,
                                               "api_url": slack.api_url})
            with pytest.raises(ConfigError, match=r"^slack\.port: cannot listen on 127\.0\.0\.1:\d+ \("):
                await SlackAdapter(config, BOT_TOKEN, app_token=None, signing_secret=SIGNING_SECRET).check()
            with pytest.raises(ConfigError, match="^SLACK_BOT_TOKEN: "):
                await SlackAdapter(config, "xoxb-wrong", app_token=None, signing_secret=SIGNING_SECRET).check()
            free = settings(tmp_path, slack={"mode": "http", "host": "127.0.0.1", "port": 0, "api_url": slack.api_url})
            await SlackAdapter(free, BOT_TOKEN, app_token=None, signing_secret=SIGNING_SECRET).check()
