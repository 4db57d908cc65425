"""The deployment files: the systemd unit passes systemd's own check and runs the command this checkout has."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
UNIT = ROOT / "deploy" / "janus-bot.service"


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing; the CI machine has systemd")
        pytest.skip("systemd-analyze is not installed here")
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    installed = "/opt/janus-bot/.venv/bin/janus-bot"
    assert f"ExecStart={installed} run --config /etc/janus-bot/config.toml" in text
    here = Path(sys.executable).with_name("janus-bot")  # this checkout's, installed by scripts/install
    assert here.exists()
    unit = tmp_path / "janus-bot.service"
    unit.write_text(text.replace(installed, str(here)))
    checked = verify(unit)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    assert "Failed to parse service restart specifier" in verify(broken).stderr  # the check reads the file


def test_the_unit_restarts_after_a_platform_outage_but_not_after_a_config_mistake() -> None:
    text = UNIT.read_text()
    assert "Restart=on-failure" in text and "RestartPreventExitStatus=2" in text  # janus-bot's exit codes
    assert "EnvironmentFile=/etc/janus-bot/env" in text and "TOKEN=" not in text  # secrets never in the unit
