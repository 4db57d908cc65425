"""The Slack adapter's pure parts: Block Kit payloads, button ids, admin parsing and when Slack is switched on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.adapters import configured_adapters
from bot.adapters.slack import SlackAdapter
from bot.adapters.slack.admin import channel_ids, user_id
from bot.adapters.slack.blocks import (
    DESCRIBE_SHORTCUT,
    PICTURE_SHORTCUT,
    SECTION_CHARS,
    Button,
    described_blocks,
    done_blocks,
    ended_blocks,
    escape,
    info_text,
    parse_button,
    remix_view,
    waiting_blocks,
)
from bot.adapters.slack.messages import Shown
from bot.commandline import setting_value
from bot.config import ConfigError, Secrets
from bot.jobs import REGIONS, Job, Kind, Options, Refused, Requester, Strength
from tests.bot.helpers import settings

JOB = Job("0123abcd", Requester("slack", "T1", "C1", "U1"), "a <b> & c", Options(16, 5.0, 1.0), 42, 0.0)
DESCRIBE = Job("0123abcd", Requester("slack", "T1", "C1", "U1"), "", Options(3, 1.0, 0.7), 42, 0.0, kind=Kind.DESCRIBE,
               prompts=("a red & <b> fox", "a fox\nin snow", "a fox at dusk"))  # fmt: skip


def test_every_button_carries_the_job_id_and_parses_back() -> None:
    blocks = done_blocks(JOB, "F1")
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["type"] == "button"]
    assert len(buttons) == 2 + 16 + 16 + 2
    assert all(len(b["elements"]) <= 25 for b in blocks if b["type"] == "actions")  # Slack's limit per block
    assert len({b["action_id"] for b in buttons}) == len(buttons)  # unique within the message
    parsed = [parse_button(b["action_id"], b["value"]) for b in buttons]
    assert parsed[:2] == [Button("reroll", JOB.id), Button("remix", JOB.id)]
    assert parsed[2] == Button("upscale", JOB.id, 0) and parsed[17] == Button("upscale", JOB.id, 15)
    assert parsed[18] == Button("vary", JOB.id, 0, Strength.SUBTLE)
    assert parsed[-2:] == [Button("info", JOB.id), Button("delete", JOB.id)]
    menu = next(e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["type"] == "static_select")
    assert len(menu["options"]) == 16 and len({o["value"] for o in menu["options"]}) == 16
    assert parse_button(menu["action_id"], menu["options"][3]["value"]) == Button("vary", JOB.id, 3, Strength.STRONG)
    assert {"type": "image", "slack_file": {"id": "F1"}, "alt_text": JOB.prompt} in blocks
    assert "a &lt;b&gt; &amp; c" in blocks[0]["text"]["text"]


def test_waiting_and_upscaled_messages() -> None:
    waiting = waiting_blocks(JOB, "⏳ Queued, position 2.", "F9")
    assert [b["type"] for b in waiting] == ["section", "image", "actions"]
    assert parse_button(waiting[-1]["elements"][0]["action_id"], JOB.id) == Button("cancel", JOB.id)
    upscaled = Job("u1", JOB.requester, "x", Options(1, 5.0, 1.0), 1, 0.0, kind=Kind.UPSCALE, parent_index=2)
    assert "(image 3, upscaled)" in done_blocks(upscaled, "F2")[0]["text"]["text"]
    [actions] = [b for b in done_blocks(upscaled, "F2") if b["type"] == "actions"]  # no U or V: the image alone
    *buttons, regions = actions["elements"]
    assert [parse_button(e["action_id"], e["value"]) for e in buttons] == [
        Button(verb, "u1") for verb in ("remix", "info", "delete")
    ]
    assert regions["type"] == "static_select" and regions["placeholder"]["text"] == "Vary (Region)…"
    assert [parse_button(regions["action_id"], o["value"]) for o in regions["options"]] == [
        Button("region", "u1", 2, region=name) for name in REGIONS
    ]


def test_a_grid_of_sixteen_has_two_region_menus_within_slacks_limits() -> None:
    menus = [e for b in done_blocks(JOB, "F1") if b["type"] == "actions" for e in b["elements"]
             if e["type"] == "static_select" and "pick:region" in e["action_id"]]  # fmt: skip
    assert [m["placeholder"]["text"] for m in menus] == ["Vary (Region) 1-8…", "Vary (Region) 9-16…"]
    assert len({m["action_id"] for m in menus}) == 2  # unique within the message
    for menu in menus:
        options = [o for group in menu["option_groups"] for o in group["options"]]
        assert len(options) == 72 <= 100 and all(len(o["value"]) <= 150 for o in options)
    last = menus[1]["option_groups"][-1]
    assert last["label"]["text"] == "Image 16"
    assert parse_button(menus[1]["action_id"], last["options"][4]["value"]) == Button("region", JOB.id, 15,
                                                                                      region="centre")  # fmt: skip


@pytest.mark.parametrize(
    ("action", "value"),
    [("other:reroll", "j"), ("imagine:reroll", ""), ("imagine:upscale", "j"), ("imagine:reroll:1", "j"),
     ("imagine:vary:x", "j"), ("imagine:vary:1:wild", "j"), ("imagine:explode", "j"), ("imagine:pick:vary", ":1"),
     ("imagine:info:1", "j"), ("imagine:delete:0", "j"), ("imagine:pick:region", "j:1:middle"),
     ("imagine:pick:region:0", "j:x:centre"), ("imagine:pick:region", ":1:centre")],
)  # fmt: skip
def test_buttons_this_bot_did_not_make_are_ignored(action: str, value: str) -> None:
    assert parse_button(action, value) is None


def test_remix_modal_and_info() -> None:
    negative = Job("0123abce", JOB.requester, "a <cat>", Options(2, 5.0, 1.0, None, "dogs & wolves"), 2**63 - 1, 0.0,
                   kind=Kind.VARIATION, parent_id=JOB.id, parent_index=15, strength=Strength.STRONG, model="m")
    view = remix_view(negative, "C1", "171.5")
    assert view["title"]["text"] == "Remix: vary image 16" and len(view["title"]["text"]) <= 24  # Slack's limit
    assert "strong variation of image 16" in str(view["blocks"][0])
    inputs = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert (inputs["prompt"]["initial_value"], inputs["negative"]["initial_value"]) == ("a <cat>", "dogs & wolves")
    assert '"channel": "C1"' in view["private_metadata"] and '"thread": "171.5"' in view["private_metadata"]
    assert "initial_value" not in {b["block_id"]: b["element"] for b in remix_view(JOB, "C1", None)["blocks"]
                                   if b["type"] == "input"}["negative"]  # fmt: skip
    info = info_text(negative)
    assert "*Prompt:* a &lt;cat&gt;" in info and "*Not (--no):* dogs &amp; wolves" in info
    assert f"*Seed:* `{2**63 - 1}`" in info and "waited -, ran -" in info  # never started
    assert f"*Made from:* strong variations of image 16 of job `{JOB.id}`" in info


def test_where_a_job_is_shown_reads_back_with_or_without_its_grid() -> None:
    assert Shown.parse("C1 171.1") == Shown("C1", "171.1")  # as earlier versions kept it
    assert Shown.parse("C1 171.1 170.0") == Shown("C1", "171.1", "170.0")
    assert Shown.parse(str(Shown("C1", "171.1", None, "F9"))) == Shown("C1", "171.1", None, "F9")
    assert Shown.parse(str(Shown("C1", "171.1", "170.0", "F9"))) == Shown("C1", "171.1", "170.0", "F9")


def test_admin_arguments() -> None:
    assert user_id("<@U0BOB|bob>") == user_id("<@U0BOB>") == user_id("U0BOB") == "U0BOB"
    with pytest.raises(Refused, match="mention them"):
        user_id("@bob")
    assert channel_ids("<#C1A|art> <#G2B|>,C3C<#C4D>") == ["C1A", "G2B", "C3C", "C4D"]
    with pytest.raises(Refused, match="is not a channel"):
        channel_ids("#art")
    assert [setting_value(v) for v in ("2", "2.5", "true", "words", "default", "")] == [2, 2.5, True, "words", None,
                                                                                     None]
    assert escape("<&>") == "&lt;&amp;&gt;"


def _with(tmp_path: Path, **env: str) -> list[object]:
    config = settings(tmp_path).model_copy(update={"secrets": Secrets.from_env(env)})
    return configured_adapters(config, env)


def test_slack_runs_when_its_bot_token_and_an_app_token_or_signing_secret_are_set(tmp_path: Path) -> None:
    socket = _with(tmp_path, SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xapp-1", SLACK_SIGNING_SECRET="s")
    assert [(type(a), getattr(a, "mode", None)) for a in socket] == [(SlackAdapter, "socket")]
    http = _with(tmp_path, JANUS_BOT_SLACK_BOT_TOKEN="xoxb-1", JANUS_BOT_SLACK_SIGNING_SECRET="s")
    assert [getattr(a, "mode", None) for a in http] == ["http"]
    both = _with(tmp_path, DISCORD_TOKEN="d", SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xapp-1")
    assert [a.platform for a in both] == ["discord", "slack"]  # type: ignore[attr-defined]
    assert all(not isinstance(a, SlackAdapter) for a in _with(tmp_path, SLACK_BOT_TOKEN="xoxb-1"))


def test_a_mode_without_its_secret_is_a_config_error(tmp_path: Path) -> None:
    config = settings(tmp_path, slack={"mode": "http"})
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        SlackAdapter(config, "xoxb-1", app_token="xapp-1")
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        SlackAdapter(settings(tmp_path, slack={"mode": "socket"}), "xoxb-1", signing_secret="s")


def test_imagine_buttons_carry_the_job_and_the_prompts_index_and_long_prompts_are_cut_whole() -> None:
    blocks = described_blocks(DESCRIBE, DESCRIBE.prompts or ())
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert [b["text"]["text"] for b in buttons] == ["Imagine 1", "Imagine 2", "Imagine 3", "ℹ️ Info", "🗑️ Delete"]
    assert [parse_button(b["action_id"], b["value"]) for b in buttons[:3]] == [
        Button("prompt", DESCRIBE.id, i) for i in range(3)]
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert sections == ["*Prompts for a picture* - <@U1>", "*1.* a red &amp; &lt;b&gt; fox", "*2.* a fox in snow",
                        "*3.* a fox at dusk"]  # fmt: skip
    assert parse_button("imagine:prompt", DESCRIBE.id) is None  # Imagine without a prompt index is none of ours

    long = described_blocks(DESCRIBE, ["&" * SECTION_CHARS])  # escaped, five times as long: cut, never mid-escape
    text = [b["text"]["text"] for b in long if b["type"] == "section"][1]
    assert len(text) <= SECTION_CHARS and text.endswith("&amp;…")
    assert [b["type"] for b in described_blocks(DESCRIBE, [])][-1] == "actions"  # Slack refuses an empty one
    assert all(b["elements"] for b in described_blocks(DESCRIBE, []) if b["type"] == "actions")
    assert all(b["type"] != "actions" for b in ended_blocks(DESCRIBE, "❌ failed"))  # no prompt of its own to retry

    info = info_text(DESCRIBE)
    assert info.startswith("*Prompts:*\n1. a red &amp; &lt;b&gt; fox\n2. a fox in snow\n3. a fox at dusk\n")
    assert "*Prompts:* 3 · *Temperature:* 0.7" in info and "cfg" not in info and "*Made from:* a picture" in info


def test_the_manifest_asks_for_what_the_adapter_uses() -> None:
    manifest = yaml.safe_load((Path(__file__).parents[3] / "slack-manifest.yml").read_text())
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/imagine", "/imagine-admin"]
    imagine, admin = manifest["features"]["slash_commands"]
    assert "[--no TEXT]" in imagine["usage_hint"] and "channels #a #b" in admin["usage_hint"]
    assert admin["should_escape"]  # channels arrive as <#C123|name>, users as <@U123|name>
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "files:write", "users:read", "files:read"} <= scopes  # files:read: pictures
    shortcuts = manifest["features"]["shortcuts"]
    assert [(s["name"], s["type"], s["callback_id"]) for s in shortcuts] == [
        ("Vary with janus", "message", PICTURE_SHORTCUT), ("Describe with janus", "message", DESCRIBE_SHORTCUT)]
    assert all(len(s["description"]) <= 80 for s in shortcuts)
    assert manifest["settings"]["interactivity"]["is_enabled"] and manifest["settings"]["socket_mode_enabled"]
