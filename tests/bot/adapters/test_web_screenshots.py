"""docs/images/screenshots.py still runs: the real bot on the demo model, its page in chromium."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from tests.bot.adapters.test_web_browser import CHROMIUM

SCRIPT = Path(__file__).resolve().parents[3] / "docs" / "images" / "screenshots.py"


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test installs it)")
def test_the_screenshot_script_writes_the_page_and_a_2x2_grid(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("screenshots", SCRIPT)
    assert spec is not None and spec.loader is not None
    screenshots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screenshots)
    assert screenshots.main([str(tmp_path)]) == 0
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (98, 98)  # four 48 px pictures with a 2 px gutter, as Discord and Slack get them
    with Image.open(tmp_path / "playground.png") as page:
        assert page.width == 900 and page.height > 800
