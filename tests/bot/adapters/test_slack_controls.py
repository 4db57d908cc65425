"""Creative controls in Slack at the wire: --no, remix modals (views.open, view_submission), info, delete and
channel rules, with real slack-bolt against the fake Slack over signed HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.jobs import Job, Kind, Status, Strength
from tests.bot.adapters.fake_slack import CHANNEL, Message, Running, running_slack

pytestmark = pytest.mark.asyncio

SEED_MAX = 2**63 - 1
ADMIN = {"user": "U0ADMIN", "command": "/imagine-admin"}


async def done_job(bot: Running, prompt: str) -> Job:
    """The finished job with this prompt, once the adapter has shown it."""

    async def find() -> Job | None:
        return next((j for j in await bot.store.jobs(Status.DONE) if j.prompt == prompt and j.delivered), None)

    found: Job = await bot.slack.until(find)
    return found


async def shown(bot: Running, prompt: str) -> Message:
    """The finished message of the job with this prompt."""
    found: Message = await bot.slack.until(
        lambda: next((m for m in bot.slack.posted() if m.text == f"{prompt}: done"), None)
    )
    return found


async def told(bot: Running, count: int) -> str:
    """The `count`-th ephemeral answer through the response_url, once it comes."""
    await bot.slack.until(lambda: len(bot.slack.responses) >= count)
    response = bot.slack.responses[count - 1]
    assert response["response_type"] == "ephemeral" and response.get("replace_original") is False
    return str(response["text"])


async def opened(bot: Running, count: int) -> dict[str, Any]:
    """The `count`-th modal the bot opened."""
    await bot.slack.until(lambda: len(bot.slack.views) >= count)
    return bot.slack.views[count - 1]


async def test_no_takes_a_negative_prompt_and_seeds_are_exact(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        answer = await bot.command(f"a garden --no plants, &lt;people&gt; --count 2 --seed {SEED_MAX}")
        assert answer["text"] == "Queued, position 1."
        message = await shown(bot, "a garden")
        sent = bot.generator.submitted[0]
        assert (sent.negative, sent.seed, sent.count) == ("plants, <people>", SEED_MAX, 2)
        assert "*a garden* --no plants, &lt;people&gt; - <@U0ALICE>" in message.blocks[0]["text"]["text"]
        assert f"seed {SEED_MAX}" in str(message.blocks)  # exactly, past 2^53

        said = (await bot.command("a garden --no"))["text"]
        assert said.startswith("--no needs a value.\nUsage: /imagine <prompt>") and "[--no TEXT]" in said


async def test_remix_opens_a_prefilled_modal_whose_submission_rerolls_in_the_jobs_channel(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        await bot.command("a garden --no plants --count 2")
        grid = await shown(bot, "a garden")
        parent = await done_job(bot, "a garden")
        assert list(grid.buttons())[:2] == ["🔄 Reroll", "✏️ Remix"]

        await bot.click(grid, "✏️ Remix", user="U0BOB")
        [call] = bot.slack.called("views.open")
        assert call["trigger_id"] == "1.2.4"  # the click's, within Slack's 3 seconds
        view = await opened(bot, 1)
        assert view["type"] == "modal" and view["callback_id"] == "imagine:remix" and view["title"]["text"] == "Remix"
        inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
        assert inputs["prompt"]["element"]["initial_value"] == "a garden" and not inputs["prompt"].get("optional")
        assert inputs["negative"]["element"]["initial_value"] == "plants" and inputs["negative"]["optional"]
        assert inputs["prompt"]["element"]["max_length"] == 1000

        assert await bot.submit(view, {"prompt": "a winter garden", "negative": "snowmen"}, user="U0BOB") == {}
        remixed = await shown(bot, "a winter garden")
        assert remixed.channel == CHANNEL and remixed.thread_ts is None
        job = await done_job(bot, "a winter garden")
        assert (job.kind, job.parent_id, job.options.negative, job.requester.user) == (Kind.REROLL, parent.id,
                                                                                       "snowmen", "U0BOB")  # fmt: skip
        assert job.requester.channel == CHANNEL and job.seed != parent.seed

        await bot.submit(view, {"negative": None})  # the negative emptied: dropped; the prompt as it was
        plain = await bot.slack.until(lambda: [j for j in bot.generator.submitted if j.prompt == "a garden"][1:])
        assert plain[0].negative is None


async def test_remix_of_a_variation_or_an_upscale_varies_that_image(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        await bot.command("a red fox --count 2")
        grid = await shown(bot, "a red fox")
        parent = await done_job(bot, "a red fox")
        await bot.click(grid, "V2")
        varied = await bot.slack.until(lambda: [m for m in bot.slack.posted()[1:] if m.text.endswith(": done")])
        await bot.click(varied[0], "✏️ Remix")
        view = await opened(bot, 1)
        assert view["title"]["text"] == "Remix: vary image 2"
        await bot.submit(view, {"prompt": "a blue fox"})
        job = await done_job(bot, "a blue fox")
        assert (job.kind, job.parent_id, job.parent_index, job.strength) == (Kind.VARIATION, parent.id, 1,
                                                                             Strength.SUBTLE)  # fmt: skip
        assert bot.generator.submitted[-1].prefix is not None

        await bot.click(grid, "U1")
        upscaled = await bot.slack.until(lambda: [m for m in bot.slack.posted() if "upscaled" in str(m.blocks)
                                                  and m.text.endswith(": done")])  # fmt: skip
        assert set(upscaled[0].buttons()) == {"✏️ Remix", "ℹ️ Info", "🗑️ Delete"}
        await bot.click(upscaled[0], "✏️ Remix")
        view = await opened(bot, 2)
        assert view["title"]["text"] == "Remix: vary image 1"
        await bot.submit(view, {"prompt": "a grey fox"})
        job = await done_job(bot, "a grey fox")
        assert (job.kind, job.parent_id, job.parent_index, job.strength) == (Kind.VARIATION, parent.id, 0,
                                                                             Strength.STRONG)  # fmt: skip


async def test_a_refused_remix_keeps_the_modal_open_with_the_sentence(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        bot.slack.admins.add("U0ADMIN")
        await bot.command("block kraken", **ADMIN)
        await bot.command("a calm sea --count 1")
        await bot.click(await shown(bot, "a calm sea"), "✏️ Remix")
        answer = await bot.submit(await opened(bot, 1), {"prompt": "a kraken attacks"})
        assert answer["response_action"] == "errors" and "not allowed here" in answer["errors"]["prompt"]
        assert len(bot.generator.submitted) == 1


async def test_remix_works_over_socket_mode_too(tmp_path: Path) -> None:
    async with running_slack(tmp_path, mode="socket") as bot:
        slack = bot.slack
        await slack.envelope("slash_commands", slack.command("a heron --count 1"))
        grid = await shown(bot, "a heron")
        assert "payload" not in await slack.envelope("interactive", slack.click(grid, "✏️ Remix"))
        view = await opened(bot, 1)
        ack = await slack.envelope("interactive", slack.submission(view, {"prompt": "x" * 1001}))
        assert ack["payload"]["response_action"] == "errors"  # Slack's own check would stop this; the bot's too
        assert ack["payload"]["errors"]["prompt"].startswith("The prompt is 1001 characters long")
        assert "payload" not in await slack.envelope("interactive", slack.submission(view, {"prompt": "an egret"}))
        await shown(bot, "an egret")


async def test_info_is_ephemeral_and_says_everything_about_the_job(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        await bot.command(f"a lighthouse --no fog --count 2 --cfg 7.5 --temperature 0.5 --seed {SEED_MAX}")
        grid = await shown(bot, "a lighthouse")
        job = await done_job(bot, "a lighthouse")
        await bot.click(grid, "ℹ️ Info", user="U0BOB")  # anyone may look
        info = await told(bot, 1)
        assert "*Prompt:* a lighthouse" in info and "*Not (--no):* fog" in info
        assert f"*Seed:* `{SEED_MAX}`" in info
        assert "*Images:* 2 · *cfg:* 7.5 · *Temperature:* 0.5 · *Model:* `fake`" in info
        assert f"*By:* <@U0ALICE> <!date^{int(job.created_at)}^" in info
        assert "waited " in info and ", ran " in info and f"`{job.id}`" in info and "Made from" not in info
        assert len(bot.generator.submitted) == 1  # looking starts nothing

        await bot.click(grid, "🔄 Reroll")
        rerolled = await bot.slack.until(lambda: [m for m in bot.slack.posted()[1:] if m.text.endswith(": done")])
        await bot.click(rerolled[0], "ℹ️ Info")
        assert f"*Made from:* reroll of job `{job.id}`" in await told(bot, 2)


async def test_delete_removes_the_message_and_its_grid_for_the_requester_or_an_admin(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        await bot.command("a private sketch --count 1")
        grid = await shown(bot, "a private sketch")
        job = await done_job(bot, "a private sketch")
        grid_file = grid.image()
        assert grid_file is not None

        await bot.click(grid, "🗑️ Delete", user="U0BOB")
        assert await told(bot, 1) == "Only the person who asked for that job, or an admin, can delete it."
        assert grid.ts in bot.slack.messages

        await bot.click(grid, "🗑️ Delete")
        assert (await told(bot, 2)).startswith("Deleted *a private sketch*")
        assert grid.ts not in bot.slack.messages and bot.slack.files[grid_file].deleted
        assert [(c["channel"], c["ts"]) for c in bot.slack.called("chat.delete")] == [(CHANNEL, grid.ts)]
        tombstone = (await bot.service.status(job.id)).job  # type: ignore[union-attr]
        assert tombstone.deleted_by == "slack:U0ALICE" and tombstone.status is Status.DONE

        for label in ("🔄 Reroll", "U1", "V1", "✏️ Remix", "ℹ️ Info", "🗑️ Delete"):  # buttons on a stale copy
            before = len(bot.slack.responses)
            await bot.click(grid, label, user="U0BOB")
            assert "deleted" in await told(bot, before + 1), label
        assert len(bot.generator.submitted) == 1 and bot.slack.views == []

        await bot.command("an unwelcome picture --count 1", user="U0CAROL")
        other = await shown(bot, "an unwelcome picture")
        bot.slack.admins.add("U0ADMIN")
        await bot.click(other, "🗑️ Delete", user="U0ADMIN")
        await bot.slack.until(lambda: other.ts not in bot.slack.messages)
        audit = (await bot.command("audit", **ADMIN))["text"]
        assert "<@U0ADMIN> delete" in audit and "<@U0ALICE> delete" not in audit  # an admin's deletion is audited


async def test_channel_rules_are_set_listed_and_cleared_by_admins(tmp_path: Path) -> None:
    async with running_slack(tmp_path) as bot:
        bot.slack.admins.add("U0ADMIN")
        assert (await bot.command("channels", **ADMIN))["text"] == "The bot works in every channel here."
        said = (await bot.command("channels #art", **ADMIN))["text"]  # not picked from Slack's list: no mention
        assert said == '"#art" is not a channel; type # and pick it from the list Slack shows.'
        # As Slack sends channels with "escape channels" on, the name or not.
        said = (await bot.command("channels &lt;#C0ART|art&gt; &lt;#C0FUN|&gt;", **ADMIN))["text"]
        assert said == "The bot now works only in <#C0ART>, <#C0FUN> here."
        assert (await bot.command("channels", **ADMIN))["text"] == "The bot works only in <#C0ART>, <#C0FUN> here."
        assert "/imagine-admin is for workspace admins" in (await bot.command("channels clear",
                                                                              command="/imagine-admin"))["text"]

        refused = await bot.command("a cat in general")
        assert refused == {"text": "The bot works only in <#C0ART>, <#C0FUN> here; use it there.",
                           "response_type": "ephemeral"}  # fmt: skip
        assert bot.generator.submitted == []

        assert (await bot.command("channels clear", **ADMIN))["text"] == "The bot works in every channel here again."
        await bot.command("a cat anywhere --count 1")
        await shown(bot, "a cat anywhere")
        audit = (await bot.command("audit", **ADMIN))["text"]
        assert "<@U0ADMIN> channels-clear" in audit and "<@U0ADMIN> channels to=" in audit
