"""Describe in Slack at the wire: the "Describe with janus" message shortcut reads a shared picture (or one of the
bot's own grids) into prompts, answered in the message's thread with "Imagine k" buttons that start anyone's own
/imagine of a prompt, with real slack-bolt against the fake Slack over signed HTTP and Socket Mode."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.adapters.slack.app import NOTHING_TO_DESCRIBE
from bot.adapters.slack.blocks import DESCRIBE_SHORTCUT
from bot.jobs import Job, Kind, Status
from generator import protocol as wire
from tests.bot.adapters.fake_slack import BOT_TOKEN, CHANNEL, FakeSlack, Message, Running, running_slack
from tests.bot.adapters.test_discord_regions import picture
from tests.bot.adapters.test_slack_controls import done_job, shown, told
from tests.bot.adapters.test_slack_regions import finished, whispered
from tests.bot.helpers import FakeGenerator

pytestmark = pytest.mark.asyncio


class CancellableReader(FakeGenerator):
    """The fake generator, ending a describe job cancelled while it waited (as the engine does) instead of reading
    it."""

    async def _describe(self, msg: wire.Describe) -> None:
        await self.hold.wait()
        if msg.job_id in self._cancelled:
            self._events.put_nowait(wire.JobCancelled(msg.job_id))
            return
        await super()._describe(msg)


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def numbered(message: Message) -> list[str]:
    """The numbered prompt sections of a describe job's message, in order."""
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
    return [s for s in sections if s.startswith("*") and s.split(".", 1)[0].lstrip("*").isdigit()]


async def prompts_of(bot: Running, job: Job) -> Message:
    """The message showing a describe job's prompts, once it does."""
    found: Message = await bot.slack.until(lambda: next(
        (m for m in bot.slack.posted() if "Imagine 1" in m.buttons() and m.buttons()["Imagine 1"]["value"] == job.id),
        None))  # fmt: skip
    return found


async def test_the_shortcut_answers_in_the_messages_thread_and_imagine_k_is_the_pressers_own_imagine(
    tmp_path: Path,
) -> None:
    async with running_slack(tmp_path) as bot:
        slack = bot.slack
        sent = picture(kind="JPEG")
        shared = slack.share("cat.jpg", sent, mimetype="image/jpeg", text="what is this?")
        bot.generator.hold.clear()
        await bot.shortcut(shared, DESCRIBE_SHORTCUT)
        [waiting] = await slack.until(lambda: slack.posted())
        assert (waiting.channel, waiting.thread_ts) == (CHANNEL, shared["ts"])  # in the picture's thread
        assert waiting.blocks[0]["text"]["text"].startswith("*Prompts for a picture* - <@U0ALICE>\n⏳")
        assert set(waiting.buttons()) == {"Cancel"}  # queued like any job, and cancellable
        bot.generator.hold.set()

        [job] = await finished(bot, Kind.DESCRIBE)
        done = await prompts_of(bot, job)
        assert done.ts == waiting.ts and done.text == "Prompts for a picture: done"  # the same message, edited
        assert job.requester.user == "U0ALICE" and job.prompts is not None and len(job.prompts) == 4
        assert numbered(done) == [f"*{i}.* {prompt}" for i, prompt in enumerate(job.prompts, start=1)]
        assert list(done.buttons()) == ["Imagine 1", "Imagine 2", "Imagine 3", "Imagine 4", "ℹ️ Info", "🗑️ Delete"]
        assert {b["value"] for b in done.buttons().values()} == {job.id}
        [info] = slack.called("files.info")
        assert info["file"] == shared["files"][0]["id"]
        [download] = slack.downloads
        assert download["authorization"] == f"Bearer {BOT_TOKEN}" and download["sent"] == len(sent)
        [read] = bot.generator.described
        assert size(read.image) == (32, 32) and bot.generator.submitted == []  # read, nothing drawn
        assert slack.called("chat.postEphemeral") == [] and slack.responses == []

        await bot.click(done, "Imagine 2", user="U0BOB")
        made = await done_job(bot, job.prompts[1])
        assert (made.kind, made.prompt, made.requester.user) == (Kind.IMAGINE, job.prompts[1], "U0BOB")
        assert made.parent_id is None and made.source is None and made.options.count == 4  # as if bob typed it
        assert [g.prompt for g in bot.generator.submitted] == [job.prompts[1]]
        grid = await shown(bot, job.prompts[1])
        assert grid.thread_ts == shared["ts"] and "- <@U0BOB>" in grid.blocks[0]["text"]["text"]
        assert set(done.buttons()) >= {"Imagine 1", "Imagine 4"}  # the prompts stay for the next presser

        done.blocks = [b for b in done.blocks if b["type"] != "section"]  # the buttons go by the job, not the text
        await bot.click(done, "Imagine 1", user="U0CAROL")
        await done_job(bot, job.prompts[0])

        await bot.click(done, "ℹ️ Info", user="U0BOB")
        said = await told(bot, 1)
        assert said.startswith("*Prompts:*\n" + "\n".join(f"{i}. {p}" for i, p in enumerate(job.prompts, start=1)))
        assert "*Prompts:* 4 · *Temperature:*" in said and "*Made from:* a picture" in said and "cfg" not in said

        await bot.click(done, "🗑️ Delete")  # the one who asked
        assert await told(bot, 2) == "Deleted *Prompts for a picture*: its prompts are gone."
        assert done.ts not in slack.messages and [c["ts"] for c in slack.called("chat.delete")] == [done.ts]
        await bot.click(done, "Imagine 3", user="U0BOB")  # a copy of the message, after the job was deleted
        assert await told(bot, 3) == "That job was deleted; start a new one with /imagine."
        assert len(bot.generator.submitted) == 2


async def test_the_shortcut_reads_the_bots_own_grid_from_its_message_or_its_thread(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        slack = bot.slack
        await bot.command("a red fox --count 2")
        grid = await shown(bot, "a red fox")
        grid_file = grid.image()
        assert grid_file is not None

        await bot.shortcut(grid.payload(), DESCRIBE_SHORTCUT, user="U0BOB")  # its message shows the grid by id
        [job] = await finished(bot, Kind.DESCRIBE)
        answer = await prompts_of(bot, job)
        assert answer.thread_ts == grid.ts and job.requester.user == "U0BOB"
        assert slack.called("files.info")[-1]["file"] == grid_file
        assert size(bot.generator.described[0].image) == size(slack.files[grid_file].data)  # the whole grid

        # The grid as shared in the job message's thread: a file of the bot's, in a reply.
        reply = {"type": "message", "subtype": "file_share", "user": "U0BOT", "ts": f"{float(grid.ts) + 0.5:.6f}",
                 "thread_ts": grid.ts, "files": [slack.file_object(slack.files[grid_file])], "text": ""}  # fmt: skip
        await bot.shortcut(reply, DESCRIBE_SHORTCUT)
        second = [j for j in await finished(bot, Kind.DESCRIBE, 2) if j.id != job.id][0]
        assert (await prompts_of(bot, second)).thread_ts == grid.ts  # the thread it is in
        assert len(bot.generator.described) == 2 and len(bot.generator.submitted) == 1


async def test_a_message_without_a_picture_gets_an_ephemeral_sentence_where_the_shortcut_was_used(
    tmp_path: Path,
) -> None:
    async with running_slack(tmp_path) as bot:
        words = {"type": "message", "user": "U0BOB", "ts": "1700000000.000300", "text": "just words", "team": "T0TEAM"}
        await bot.shortcut(words, DESCRIBE_SHORTCUT)
        said = await whispered(bot, 1)
        assert (said["channel"], said["user"], said["text"]) == (CHANNEL, "U0ALICE", NOTHING_TO_DESCRIBE)
        assert "thread_ts" not in said  # the channel, where the message is

        await bot.shortcut({**words, "ts": "1700000000.000400", "thread_ts": words["ts"]}, DESCRIBE_SHORTCUT)
        assert (await whispered(bot, 2))["thread_ts"] == words["ts"]  # a reply: in its thread

        bot.slack.fail("chat.postEphemeral", "channel_not_found")  # a private channel the bot is not in
        await bot.shortcut(words, DESCRIBE_SHORTCUT, user="U0BOB")
        assert await told(bot, 1) == NOTHING_TO_DESCRIBE  # through the shortcut's response_url instead
        assert bot.slack.posted() == [] and bot.generator.described == []


async def test_files_that_are_not_pictures_get_the_cores_sentence_only_the_user_sees(tmp_path: Path) -> None:
    limit = 64 * 1024
    images = {"images": {"max_upload_mb": limit / 2**20, "max_upload_megapixels": 0.01}}
    async with running_slack(tmp_path, sections=images) as bot:
        slack = bot.slack

        async def refused(message: dict[str, Any], count: int) -> str:
            await bot.shortcut(message, DESCRIBE_SHORTCUT)
            said = await whispered(bot, count)
            assert (said["channel"], said["user"]) == (CHANNEL, "U0ALICE")
            return str(said["text"])

        notes = slack.share("notes.txt", b"these are my notes, not a picture", mimetype="text/plain")
        assert await refused(notes, 1) == "That file is not a picture; send a PNG, JPEG, WebP or GIF."
        named = slack.share("fake.png", b"not a picture either")  # named and labelled like one
        assert await refused(named, 2) == "That file is not a picture; send a PNG, JPEG, WebP or GIF."

        huge = slack.share("huge.png", bytes(5 * 2**20))  # Slack says how big it is: never fetched
        assert await refused(huge, 3) == "That file is 5.0 MB; send a picture of at most 0.0625 MB."
        assert huge["files"][0]["id"] not in {d["file"] for d in slack.downloads}

        bomb = slack.share("bomb.gif", picture(200, kind="GIF"), mimetype="image/gif")  # small, unpacks big
        assert await refused(bomb, 4) == "That picture is 200x200 pixels; send one of at most 0.01 megapixels."
        assert slack.posted() == [] and bot.generator.described == [] and slack.responses == []


async def test_a_waiting_describe_job_can_be_cancelled_and_ends_without_buttons(tmp_path: Path) -> None:
    async with running_slack(tmp_path, generator=CancellableReader()) as bot:
        bot.generator.hold.clear()
        await bot.shortcut(bot.slack.share("owl.png", picture()), DESCRIBE_SHORTCUT)
        [waiting] = await bot.slack.until(lambda: bot.slack.posted())
        await bot.click(waiting, "Cancel")
        await bot.slack.until(lambda: bot.generator.cancels)
        bot.generator.hold.set()
        cancelled = await bot.slack.final(": cancelled")
        assert cancelled.ts == waiting.ts and cancelled.text == "Prompts for a picture: cancelled"
        assert "Cancelled." in cancelled.blocks[0]["text"]["text"] and cancelled.buttons() == {}  # nothing to retry
        assert await bot.store.jobs(Status.CANCELLED) and bot.generator.submitted == []


async def test_a_describe_job_left_by_a_restart_is_answered_in_its_message_and_its_buttons_work(
    tmp_path: Path,
) -> None:
    async with FakeSlack() as slack:
        async with running_slack(tmp_path, slack=slack) as bot:
            slack.admins.add("U0ADMIN")
            bot.generator.hold.clear()
            shared = slack.share("fox.png", picture())
            await bot.shortcut(shared, DESCRIBE_SHORTCUT)
            [waiting] = await slack.until(lambda: slack.posted())
            [job] = await bot.store.jobs(Status.QUEUED, Status.RUNNING)
            await slack.until(lambda: bot.service.message(job.id))  # kept before the restart
            queue = (await bot.command("queue", user="U0ADMIN", command="/imagine-admin"))["text"]
            assert f"`{job.id}` <@U0ALICE>" in queue and queue.endswith(": Prompts for a picture")
        assert "done" not in waiting.text

        async with running_slack(tmp_path, slack=slack) as bot:
            done = await prompts_of(bot, job)
            assert done.ts == waiting.ts and done.thread_ts == shared["ts"]  # the same message, edited in place
            [described] = await finished(bot, Kind.DESCRIBE)
            assert described.prompts is not None

            await bot.click(done, "Imagine 3", user="U0CAROL")  # a button from the restarted bot's message
            made = await done_job(bot, described.prompts[2])
            assert made.requester.user == "U0CAROL" and made.kind is Kind.IMAGINE

            stray = Message(CHANNEL, done.ts, done.text, [{"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Imagine 9"}, "action_id": "imagine:prompt:8",
                 "value": job.id}]}])  # fmt: skip
            await bot.click(stray, "Imagine 9")
            assert await told(bot, 1) == "That job has no prompt 9; describe the picture again for new ones."
            assert [g.prompt for g in bot.generator.submitted] == [described.prompts[2]]


async def test_the_shortcut_and_imagine_k_work_over_socket_mode_too(tmp_path: Path) -> None:
    async with running_slack(tmp_path, mode="socket") as bot:
        slack = bot.slack
        shared = slack.share("cat.png", picture())
        assert "payload" not in await slack.envelope("interactive", slack.shortcut(shared, DESCRIBE_SHORTCUT))
        [job] = await finished(bot, Kind.DESCRIBE)
        done = await prompts_of(bot, job)
        assert done.thread_ts == shared["ts"] and job.prompts is not None
        assert "payload" not in await slack.envelope("interactive", slack.click(done, "Imagine 4", user="U0BOB"))
        made = await done_job(bot, job.prompts[3])
        assert made.requester.user == "U0BOB"
