"""The playground in a real browser: Debian's chromium driven by Playwright, the real generator process."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bot.adapters.web import WebAdapter
from bot.app import App
from tests.bot.helpers import FakeGenerator, running, settings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"
TIMEOUT_MS = 120_000

# Every text a job card's status line shows, as it changes (progress can be quicker than a poll).
WATCH_STATUS = """
new MutationObserver(() => {
  window.statuses = window.statuses || [];
  for (const line of document.querySelectorAll(".job .status")) {
    if (window.statuses.at(-1) !== line.textContent) window.statuses.push(line.textContent);
  }
  for (const img of document.querySelectorAll(".job .preview")) {
    if (img.src && !img.hidden) window.sawPreview = true;
  }
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium (scripts/test installs it)",
    ),
]


async def test_imagine_reroll_and_upscale_in_the_browser(tmp_path: Path, tiny_dir: Path) -> None:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=TIMEOUT_MS)

    config = settings(
        tmp_path / "data",
        model={"name": str(tiny_dir), "device": "cpu"},
        images={"upscale_px": 192},
        web={"port": 0},
    )
    async with App(config) as app, async_playwright() as playwright:
        adapter = WebAdapter.from_settings(config)
        await adapter.start(app.service)
        browser = await playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(CHROMIUM), args=ARGS, headless=True,
            viewport={"width": 900, "height": 1400},
        )  # fmt: skip
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.add_init_script(WATCH_STATUS)
            await page.goto(adapter.url)
            await expect(page.locator("#model")).to_contain_text("on cpu")

            await page.fill("#user", "ada")
            await page.fill("#command", "/imagine a lighthouse at dusk --count 4 --seed 1")
            await page.press("#command", "Enter")
            first = page.locator(".job").nth(0)
            await expect(first.locator("img.grid")).to_be_visible()
            await expect(first.locator(".status")).to_have_text("Done: 4 images, seed 1.")
            statuses = await page.evaluate("window.statuses")
            assert "Queued: position 1" in statuses, statuses
            assert any(s.startswith("Generating… ") and s != "Generating… 0%" for s in statuses), statuses
            assert await page.evaluate("window.sawPreview")
            assert await first.locator("img.grid").evaluate("img => img.naturalWidth") > 0

            await first.locator('button[data-action="reroll"]').click()
            reroll = page.locator(".job").nth(1)
            await expect(reroll.locator("img.grid")).to_be_visible()
            await expect(reroll.locator(".status")).to_contain_text("Done: 4 images, seed ")
            assert await reroll.locator(".status").text_content() != "Done: 4 images, seed 1."

            await first.locator('button[data-action="upscale"][data-index="0"]').click()
            upscaled = page.locator(".job").nth(2)
            await expect(upscaled.locator("img.grid")).to_be_visible()
            await expect(upscaled.locator(".status")).to_have_text("Done: 1 image, seed 1.")
            assert await upscaled.locator("img.grid").evaluate("img => img.naturalWidth") == 192
            assert await upscaled.locator("button").count() == 0

            await page.fill("#command", "/imagine a fox --count 99")
            await page.press("#command", "Enter")
            await expect(page.locator(".refused").last).to_contain_text("count must be a whole number from 1 to 16")

            ARTIFACTS.mkdir(exist_ok=True)
            await page.add_style_tag(content="header, #composer { position: static; }")  # one full-page picture
            await page.screenshot(path=ARTIFACTS / "web-playground.png", full_page=True)
        finally:
            await browser.close()
            await adapter.close()


async def test_the_page_asks_for_the_token_and_sends_it(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=TIMEOUT_MS)
    config = settings(tmp_path / "data", web={"port": 0})
    async with running(config, FakeGenerator(steps=4, step_delay=0.05)) as (service, _, _), async_playwright() as pw:
        adapter = WebAdapter(config.web, config.bot.data_dir, token="s3cret")
        await adapter.start(service)
        browser = await pw.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(CHROMIUM), args=ARGS, headless=True
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            await page.goto(adapter.url)
            await expect(page.locator("#token-field")).to_be_hidden()
            await page.fill("#user", "ada")
            await page.fill("#command", "a red fox")
            await page.press("#command", "Enter")
            await expect(page.locator(".refused").last).to_contain_text("needs an access token")
            await expect(page.locator("#token-field")).to_be_visible()
            await page.fill("#token", "s3cret")
            await page.press("#token", "Tab")  # "change" stores it
            await page.fill("#command", "/imagine a red fox --count 2")
            await page.press("#command", "Enter")
            job = page.locator(".job").nth(0)
            await expect(job.locator(".status")).to_have_text(re.compile(r"Done: 2 images, seed \d+\."))
            assert await job.locator("img.grid").evaluate("img => img.naturalWidth") > 0  # fetched with the token
        finally:
            await browser.close()
            await adapter.close()
