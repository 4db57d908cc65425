"""The generator process holds none of the bot's secrets: it runs the model's code, not the chat platforms'."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bot.generator_client import GeneratorProcess

pytestmark = pytest.mark.asyncio

SHOW_ENV = """
import json, os, sys
from pathlib import Path

from generator.protocol import Ready, dumps

Path(sys.argv[-1]).write_text(json.dumps(sorted(os.environ)))
print(dumps(Ready("env", "cpu", 96, 6, 16)), flush=True)
sys.stdin.read()
"""


async def test_the_generator_process_gets_no_bot_secret(tmp_path: Path) -> None:
    script, seen = tmp_path / "show-env", tmp_path / "env.json"
    script.write_text(f"#!{sys.executable}\n{SHOW_ENV}")
    script.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "DISCORD_TOKEN": "d", "SLACK_BOT_TOKEN": "s", "SLACK_APP_TOKEN": "a",
           "SLACK_SIGNING_SECRET": "x", "JANUS_BOT_WEB_TOKEN": "w", "WEB_TOKEN": "w2", "HF_TOKEN": "hub",
           "HF_HOME": "/cache"}  # fmt: skip
    generator = GeneratorProcess(python=str(script), extra_args=[str(seen)], env=env, shutdown_grace=1)
    await generator.start()
    await generator.close()
    names = set(json.loads(seen.read_text()))
    assert {"PATH", "HF_TOKEN", "HF_HOME", "PYTHONPATH"} <= names  # the hub's token is the model's business
    assert not names & {"DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET",
                        "JANUS_BOT_WEB_TOKEN", "WEB_TOKEN"}
