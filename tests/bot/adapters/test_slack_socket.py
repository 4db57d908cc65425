"""The Slack adapter in Socket Mode, at the wire: envelopes over a local websocket, acknowledged by id."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.adapters.slack.app import NOT_ADMIN
from tests.bot.adapters.fake_slack import running_slack

pytestmark = pytest.mark.asyncio


async def test_slash_commands_and_buttons_arrive_as_envelopes_and_are_acknowledged_by_id(tmp_path: Path) -> None:
    async with running_slack(tmp_path, mode="socket") as bot:
        slack = bot.slack
        assert slack.connections == 1 and bot.adapter.port is None  # no HTTP endpoint in Socket Mode
        assert len(slack.called("apps.connections.open")) == 1  # the fake answers only the app token

        ack = await slack.envelope("slash_commands", slack.command("a heron --count 2"))
        assert ack["payload"] == {"text": "Queued, position 1.", "response_type": "ephemeral"}
        done = await slack.final(": done")
        assert set(done.buttons()) == {"🔄 Reroll", "U1", "U2", "V1", "V2"}
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
