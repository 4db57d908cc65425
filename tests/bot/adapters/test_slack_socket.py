"""The Slack adapter in Socket Mode, at the wire: envelopes over a local websocket, acknowledged by id."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.adapters import PlatformUnreachable
from bot.adapters.slack.adapter import SlackAdapter
from bot.adapters.slack.app import NOT_ADMIN
from bot.config import ConfigError
from tests.bot.adapters.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack, running_slack
from tests.bot.helpers import free_port, running, settings

pytestmark = pytest.mark.asyncio


async def test_slash_commands_and_buttons_arrive_as_envelopes_and_are_acknowledged_by_id(tmp_path: Path) -> None:
    async with running_slack(tmp_path, mode="socket") as bot:
        slack = bot.slack
        assert slack.connections == 1 and bot.adapter.port is None  # no HTTP endpoint in Socket Mode
        assert len(slack.called("apps.connections.open")) == 1  # the fake answers only the app token

        ack = await slack.envelope("slash_commands", slack.command("a heron --count 2"))
        assert ack["payload"] == {"text": "Queued, position 1.", "response_type": "ephemeral"}
        done = await slack.final(": done")
        assert set(done.buttons()) == {"🔄 Reroll", "✏️ Remix", "U1", "U2", "V1", "V2", "ℹ️ Info", "🗑️ Delete"}
        assert slack.files[done.image() or ""].thread_ts == done.ts

        ack = await slack.envelope("interactive", slack.click(done, "U1"))
        assert "payload" not in ack  # a plain acknowledgement; the work goes on after it
        await slack.until(lambda: [m for m in slack.posted()[1:] if m.text.endswith(": done")])

        ack = await slack.envelope("slash_commands", slack.command("pause", command="/imagine-admin"))
        assert ack["payload"]["text"] == NOT_ADMIN


async def test_reconnects_when_slack_asks_or_drops_the_connection(tmp_path: Path) -> None:
    async with running_slack(tmp_path, mode="socket") as bot:
        slack = bot.slack
        await slack.disconnect()  # {"type": "disconnect"}: Slack rotates connections every few hours
        assert len(slack.called("apps.connections.open")) == 2
        ack = await slack.envelope("slash_commands", slack.command("a crane --count 1"))
        assert ack["payload"]["text"] == "Queued, position 1."
        await slack.final(": done")

        await slack.drop()  # the connection closes without warning
        ack = await slack.envelope("slash_commands", slack.command("an egret --count 1"))
        assert ack["payload"]["text"] == "Queued, position 1."
        await slack.until(lambda: [m for m in slack.posted() if m.text == "an egret: done"])


@pytest.mark.parametrize(("bot_token", "app_token", "named"), [("xoxb-wrong", APP_TOKEN, "SLACK_BOT_TOKEN"),
                                                               (BOT_TOKEN, "xapp-wrong", "SLACK_APP_TOKEN")])
async def test_a_token_slack_refuses_stops_start_with_one_line_naming_it(
    tmp_path: Path, bot_token: str, app_token: str, named: str
) -> None:
    async with FakeSlack() as slack, running(
        settings(tmp_path, slack={"mode": "socket", "api_url": slack.api_url})
    ) as (service, _, _):
        adapter = SlackAdapter(service.settings, bot_token, app_token=app_token, signing_secret=None)
        with pytest.raises(ConfigError, match=f"^{named}: Slack refused this token \\(invalid_auth\\)") as info:
            await adapter.start(service)
        assert "\n" not in str(info.value) and "wrong" not in str(info.value)
        await adapter.close()


async def test_slack_out_of_reach_stops_start_with_one_line(tmp_path: Path) -> None:
    api_url = f"http://127.0.0.1:{free_port()}/api/"
    async with running(settings(tmp_path, slack={"mode": "socket", "api_url": api_url})) as (service, _, _):
        adapter = SlackAdapter(service.settings, BOT_TOKEN, app_token=APP_TOKEN, signing_secret=None)
        with pytest.raises(PlatformUnreachable, match="^Slack cannot be reached \\(.*\\); check this machine's network$"
                           ) as info:
            await adapter.start(service)
        assert "\n" not in str(info.value) and BOT_TOKEN not in str(info.value)
        await adapter.close()
