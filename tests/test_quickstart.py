"""README's first command, followed from the repository, brings the playground up on the built-in model."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_COMMAND = "./scripts/install && .venv/bin/janus-bot run"
START_TIMEOUT_S = 600  # a first run may build the built-in model
SECRETS = ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "WEB_TOKEN")


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


@pytest.mark.slow
def test_readme_first_command_serves_the_playground(tmp_path: Path) -> None:
    commands = re.findall(r"^    (\S.*)$", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert commands[:2] == [FIRST_COMMAND, "./scripts/test"]
    # scripts/test has just run ./scripts/install; run the rest from a folder of its own, with only the port
    # changed (to a free one) so it cannot clash with anything else on the machine.
    (tmp_path / "config.toml").write_text("[web]\nport = 0\n")
    env = {k: v for k, v in os.environ.items() if k.removeprefix("JANUS_BOT_") not in SECRETS}
    command = [str(Path(sys.executable).with_name("janus-bot")), "run"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                seen.append(out.get(timeout=1))
            except queue.Empty:
                continue
            url = (match := re.match(r"  web: (http://\S+/)", seen[-1])) and match.group(1)
        assert url, "".join(seen[-30:])
        assert "janus-bot is running: " in "".join(seen)
        with urllib.request.urlopen(f"{url}healthz", timeout=30) as response:
            health = json.load(response)
        assert health["status"] == "ok" and health["model_loaded"] and health["queue_depth"] == 0, health
        with urllib.request.urlopen(url, timeout=30) as response:
            assert "<title>janus-bot playground</title>" in response.read().decode()
        # 986 characters (under the 1000 of any prompt) that the model's prompt tokens cannot hold: refused at
        # once, not after its wait in the queue.
        long = json.dumps({"user": "ada", "prompt": "an old lighthouse at dusk with seagulls over the harbour, " * 17})
        request = urllib.request.Request(f"{url}api/imagine", long.encode(), {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400
        assert json.load(refused.value)["error"].startswith("The prompt is too long for this model (")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(seen[-30:])
