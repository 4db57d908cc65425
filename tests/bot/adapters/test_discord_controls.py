"""Creative controls in Discord at the wire: negative prompts, remix modals, info, delete and channel rules, with
real discord.py against the local Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.jobs import Kind, Status, Strength
from tests.bot.adapters.fake_discord import EPHEMERAL, FakeDiscord, Interaction, Message, fake_discord
from tests.bot.adapters.test_discord import delivered, discord_bot, finished, job_id, note, original, shown

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with fake_discord() as server:
        yield server

SEED_MAX = 2**63 - 1


def ids(message: Message, job: str, *actions: str) -> list[str]:
    """Which of these `imagine:<action>:<job>` buttons the message has, in its order."""
    wanted = {f"imagine:{action}:{job}" for action in actions}
    return [i for i in message.custom_ids if i in wanted]


async def answer(discord: FakeDiscord, interaction: Interaction) -> Message:
    """What the bot said on an interaction: its reply (callback type 4) or its first followup."""

    def said() -> Message | None:
        if interaction.callbacks and interaction.callbacks[0]["type"] == 4:
            return interaction.original
        return interaction.followups[0] if interaction.followups else None

    return await discord.wait_for(said)


async def embedded(discord: FakeDiscord, interaction: Interaction) -> dict[str, Any]:
    """The one embed the bot answered an interaction with, once it has."""
    await discord.wait_for(lambda: interaction.original and interaction.original.embeds)
    assert interaction.original is not None
    [embed] = interaction.original.embeds
    return embed


def fields(embed: dict[str, Any]) -> dict[str, str]:
    """An embed's fields, by name."""
    return {field["name"]: field["value"] for field in embed.get("fields", [])}


async def test_a_negative_option_goes_to_the_generator_and_is_shown_with_the_job(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    async with discord_bot(tmp_path) as bot:
        options = {o["name"]: o for o in next(c for c in discord.commands if c["name"] == "imagine")["options"]}
        assert (options["negative"]["type"], options["negative"]["required"]) == (3, False)
        assert options["negative"]["max_length"] == 1000  # as long as a prompt may be

        grid = await finished(discord, original(await discord.imagine(
            discord.user("alice"), "a garden", negative="plants, **people** <@123456789012345678>")))  # fmt: skip
        negative = "plants, **people** <@123456789012345678>"
        assert bot.generator.submitted[0].negative == negative
        assert "--no plants, \\*\\*people\\*\\* <@\u200b123456789012345678>" in grid.content  # escaped like the prompt
        assert (await delivered(bot.service, job_id(grid))).options.negative == negative


async def test_remix_opens_a_prefilled_modal_and_its_submission_rerolls_with_the_edited_text(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a garden", negative="plants")))
        job = job_id(grid)
        assert ids(grid, job, "reroll", "remix") == [f"imagine:reroll:{job}", f"imagine:remix:{job}"]  # side by side

        opened = await discord.press(grid, f"imagine:remix:{job}", bob)
        await discord.wait_for(lambda: opened.modal)
        assert opened.callbacks[0]["type"] == 9 and opened.modal is not None  # a modal, not a message
        assert opened.modal["custom_id"] == f"imagine:remix:{job}" and opened.modal["title"] == "Remix"
        inputs = opened.inputs()
        assert (inputs["prompt"]["value"], inputs["prompt"]["required"]) == ("a garden", True)
        assert (inputs["negative"]["value"], inputs["negative"]["required"]) == ("plants", False)
        assert inputs["prompt"]["max_length"] == inputs["negative"]["max_length"] == 1000

        submitted = await discord.submit(opened, bob, {"prompt": "a winter garden", "negative": "snowmen"})
        remixed = await finished(discord, original(submitted))
        assert submitted.callbacks[0]["type"] == 5 and not remixed.ephemeral  # thinking, then a public message
        new = await delivered(bot.service, job_id(remixed))
        assert (new.kind, new.parent_id, new.prompt, new.options.negative) == (Kind.REROLL, job, "a winter garden",
                                                                                 "snowmen")  # fmt: skip
        assert new.requester.user == bob["id"] and new.seed != (await bot.service.status(job)).job.seed  # type: ignore[union-attr]
        assert "**a winter garden** --no snowmen - Reroll by" in remixed.content

        # An emptied negative drops it; the prompt left as it was keeps it.
        dropped = await discord.submit(opened, bob, {"negative": ""})
        plain = await delivered(bot.service, job_id(await finished(discord, original(dropped))))
        assert (plain.prompt, plain.options.negative) == ("a garden", None)
        assert bot.generator.submitted[-1].negative is None


async def test_remix_of_a_variation_or_an_upscale_varies_that_image_under_the_new_prompt(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a red fox")))
        job = job_id(grid)

        varied = await finished(discord, original(await discord.press(grid, f"imagine:vary:{job}:1", alice)))
        variation = job_id(varied)  # the first button of a grid is U1 of that grid
        assert ids(varied, variation, "reroll", "remix") == [f"imagine:reroll:{variation}",
                                                             f"imagine:remix:{variation}"]  # fmt: skip
        opened = await discord.press(varied, f"imagine:remix:{variation}", alice)
        await discord.wait_for(lambda: opened.modal)
        assert opened.modal is not None and opened.modal["title"] == "Remix: vary image 2 (subtle)"
        remixed = await finished(discord, original(await discord.submit(opened, alice, {"prompt": "a blue fox"})))
        new = await delivered(bot.service, job_id(remixed))
        assert (new.kind, new.parent_id, new.parent_index, new.strength) == (Kind.VARIATION, job, 1, Strength.SUBTLE)
        assert new.prompt == "a blue fox"
        sent = bot.generator.submitted[-1]
        assert sent.prompt == "a blue fox" and sent.prefix is not None and len(sent.prefix[0]) == 12  # kept rows

        upscaled = await finished(discord, original(await discord.press(grid, f"imagine:upscale:{job}:3", alice)))
        upscale = next(iter(upscaled.files)).removesuffix(".png")
        assert upscaled.custom_ids == [f"imagine:vary:{job}:3", f"imagine:strong:{job}:3", f"imagine:remix:{upscale}",
                                       f"imagine:info:{upscale}", f"imagine:delete:{upscale}",
                                       f"imagine:region:{job}:3"]  # fmt: skip
        opened = await discord.press(upscaled, f"imagine:remix:{upscale}", alice)
        await discord.wait_for(lambda: opened.modal)
        assert opened.modal is not None and opened.modal["title"] == "Remix: vary image 4 (strong)"
        remixed = await finished(discord, original(await discord.submit(opened, alice, {"prompt": "a grey fox"})))
        new = await delivered(bot.service, job_id(remixed))
        assert (new.kind, new.parent_id, new.parent_index, new.strength) == (Kind.VARIATION, job, 3, Strength.STRONG)


async def test_a_remix_the_bot_refuses_is_an_ephemeral_sentence(discord: FakeDiscord, tmp_path: Path) -> None:
    alice = discord.user("alice")
    async with discord_bot(tmp_path, blocklist={"words": ["kraken"]}) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a calm sea")))
        opened = await discord.press(grid, f"imagine:remix:{job_id(grid)}", alice)
        await discord.wait_for(lambda: opened.modal)
        refused = await discord.submit(opened, alice, {"prompt": "a kraken attacks"})
        said = await note(discord, refused)
        assert said.ephemeral and 'contains "kraken"' in said.content
        assert refused.original is not None and refused.original.deleted  # the public "thinking…" is gone
        assert len(bot.generator.submitted) == 1


async def test_info_is_an_ephemeral_reply_with_everything_about_the_job(discord: FakeDiscord, tmp_path: Path) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(
            alice, "a lighthouse", negative="fog", seed=str(SEED_MAX), count=2, cfg=7.5, temperature=0.5)))  # fmt: skip
        job = await delivered(bot.service, job_id(grid))
        assert f"seed {SEED_MAX}" in grid.content  # exactly: past the 2^53 a float holds

        info = await discord.press(grid, f"imagine:info:{job.id}", bob)  # anyone may look
        embed = await embedded(discord, info)
        assert info.callbacks[0]["type"] == 4 and info.callbacks[0]["data"]["flags"] == EPHEMERAL
        assert info.original is not None and info.original.ephemeral
        assert embed["description"] == "a lighthouse"
        shown = fields(embed)
        assert shown["Not (--no)"] == "fog"
        assert shown["Seed"] == f"`{SEED_MAX}`"
        assert (shown["Images"], shown["cfg"], shown["Temperature"], shown["Model"]) == ("2", "7.5", "0.5", "fake")
        assert shown["By"] == f"<@{alice['id']}>" and shown["When"] == f"<t:{int(job.created_at)}:f>"
        assert shown["Waited"].endswith(" s") and shown["Ran"].endswith(" s")
        assert job.id in embed["footer"]["text"]
        assert "Made from" not in shown
        assert not grid.deleted and len(bot.generator.submitted) == 1  # looking starts nothing

        strong = await discord.press(grid, f"imagine:pick:strong:{job.id}", bob, values=["1"])
        varied = await finished(discord, original(strong))
        shown = fields(await embedded(discord, await discord.press(varied, f"imagine:info:{job_id(varied)}", alice)))
        assert shown["Made from"] == f"Variations (strong) of image 2 of job `{job.id}`"
        assert shown["By"] == f"<@{bob['id']}>"
        rerolled = await finished(discord, original(await discord.press(grid, f"imagine:reroll:{job.id}", bob)))
        shown = fields(await embedded(discord, await discord.press(rerolled, f"imagine:info:{job_id(rerolled)}", bob)))
        assert shown["Made from"] == f"Reroll of job `{job.id}`"


async def test_delete_is_for_the_requester_and_admins_and_old_copies_say_it_was_deleted(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    alice, bob, carol = discord.user("alice"), discord.user("bob"), discord.user("carol")
    async with discord_bot(tmp_path) as bot:
        grid = await finished(discord, original(await discord.imagine(alice, "a private sketch")))
        job = job_id(grid)
        assert ids(grid, job, "info", "delete") == [f"imagine:info:{job}", f"imagine:delete:{job}"]

        refused = await discord.press(grid, f"imagine:delete:{job}", bob)
        said = await note(discord, refused)
        assert refused.callbacks[0]["type"] == 6  # deferred update: the job's message stays as it is
        assert said.ephemeral and "Only the person who asked for that job, or an admin, can delete it." in said.content
        assert not grid.deleted

        pressed = await discord.press(grid, f"imagine:delete:{job}", alice)
        said = await note(discord, pressed)
        assert said.ephemeral and "Deleted" in said.content
        assert grid.deleted  # the message with the grid is gone
        gone = (await bot.service.status(job)).job  # type: ignore[union-attr]
        assert gone.deleted_by == f"discord:{alice['id']}" and gone.status is Status.DONE  # a tombstone

        for action in ("reroll", "upscale", "remix", "info", "delete"):  # buttons on a copy of the old message
            suffix = ":0" if action == "upscale" else ""
            copy = discord.old_message(f"imagine:{action}:{job}{suffix}")
            said = await answer(discord, await discord.press(copy, f"imagine:{action}:{job}{suffix}", bob))
            assert said.ephemeral and "deleted" in said.content, action
        assert len(bot.generator.submitted) == 1

        other = await finished(discord, original(await discord.imagine(carol, "an unwelcome picture")))
        pressed = await discord.press(other, f"imagine:delete:{job_id(other)}", bob, admin=True)
        assert "Deleted" in (await note(discord, pressed)).content and other.deleted
        audit = await shown(discord, await discord.admin(bob, "audit"))
        assert f"<@{bob['id']}> delete" in audit.content and job_id(other) in audit.content  # an admin's is audited
        assert f"<@{alice['id']}> delete" not in audit.content  # one's own is not


async def test_channel_rules_are_set_listed_and_cleared_by_admins(discord: FakeDiscord, tmp_path: Path) -> None:
    alice, bob = discord.user("alice"), discord.user("bob")
    art = discord.art_channel_id
    async with discord_bot(tmp_path) as bot:

        async def admin(by: dict[str, Any], *path: str, is_admin: bool = True, **options: Any) -> str:
            interaction = await discord.admin(by, *path, admin=is_admin, **options)
            reply = await shown(discord, interaction)
            assert reply.ephemeral
            return reply.content

        assert "Only server admins" in await admin(bob, "channels", "set", is_admin=False, channels=f"<#{art}>")
        assert await admin(alice, "channels", "list") == "The bot works in every channel here."
        said = await admin(alice, "channels", "set", channels="#art")  # typed, not picked: no mention
        assert said == '"\\#art" is not a channel; type # and pick it from the list, or give its id.'  # md escaped
        elsewhere = discord.channel_id + 7  # a channel the fake does not have: ids are taken as they are
        said = await admin(alice, "channels", "set", channels=f"<#{art}> <#{elsewhere}>")
        assert said == f"The bot now works only in <#{art}>, <#{elsewhere}> here."
        assert await admin(alice, "channels", "list") == f"The bot works only in <#{art}>, <#{elsewhere}> here."

        refused = await discord.imagine(bob, "a cat in general")
        said_to_bob = await note(discord, refused)
        assert said_to_bob.ephemeral
        assert said_to_bob.content == (f"The bot works only in <#{art}>, <#{elsewhere}> here; "
                                       "use it there.")  # fmt: skip
        assert refused.original is not None and refused.original.deleted
        there = await finished(discord, original(await discord.imagine(bob, "a cat in art", channel_id=art)))
        assert there.channel_id == art

        assert await admin(alice, "channels", "clear") == "The bot works in every channel here again."
        await finished(discord, original(await discord.imagine(bob, "a cat anywhere")))
        audit = await admin(alice, "audit")
        assert "channels-clear" in audit and "channels" in audit
        assert len(bot.generator.submitted) == 2
