"""`janus-bot` itself: the commands when none is given, its version, and a command's help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def janus_bot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "janus_bot", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_janus_bot_alone_lists_the_commands_and_how_to_start() -> None:
    shown = janus_bot()
    assert shown.returncode == 0 and shown.stderr == ""
    assert "imagine " in shown.stdout and "run " in shown.stdout and "worker " in shown.stdout
    assert "Start with `janus-bot run`" in shown.stdout


def test_version_and_unknown_commands() -> None:
    shown = janus_bot("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == "janus-bot 0.1.0"
    wrong = janus_bot("imagin")
    assert wrong.returncode == 2 and "invalid choice: 'imagin'" in wrong.stderr.splitlines()[-1]


def test_run_help_says_what_it_starts_which_tokens_it_reads_and_where_the_page_is() -> None:
    shown = janus_bot("run", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    for said in ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET",
                 "http://127.0.0.1:8080/", "config.example.toml", "JANUS_BOT_REDIS_URL"):
        assert said in text, said
