"""The playground in a real browser: Debian's chromium driven by Playwright, the real generator process."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bot.adapters.web import WebAdapter
from bot.app import App
from bot.jobs import Status
from bot.local_queue import LocalQueue
from tests.bot.helpers import FakeGenerator, paced_generator, running, settings

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
    # Paced steps: unpaced, a tiny job could end before any preview was drawn on a busy machine (CI once saw none).
    async with App(config, LocalQueue(paced_generator(tiny_dir))) as app, async_playwright() as playwright:
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

            await page.fill("#user", "Ａｄａ\u200b")  # full-width letters and a zero-width space: shown as "Ada"
            await page.fill("#command", "/imagine a lighthouse at dusk --count 4 --seed 1")
            await page.press("#command", "Enter")
            first = page.locator(".job").nth(0)
            await expect(first.locator(".who")).to_have_text(re.compile(r"^Ada · \d"))  # the name, then the time
            await expect(first).to_have_attribute("data-job-id", re.compile(r"^[0-9a-f]{16}$"))
            await expect(first.locator(".pictures img")).to_have_count(4)
            await expect(first.locator(".status")).to_have_text("Done: 4 images, seed 1.")
            statuses = await page.evaluate("window.statuses")
            assert "Queued: position 1" in statuses, statuses
            assert any(s.startswith("Generating… ") and s != "Generating… 0%" for s in statuses), statuses
            assert await page.evaluate("window.sawPreview")
            await expect(first.locator(".pictures img").last).to_have_js_property("complete", True)
            assert await first.locator(".pictures img").last.evaluate("img => img.naturalWidth") > 0

            await first.locator('button[data-action="reroll"]').click()
            reroll = page.locator(".job").nth(1)
            await expect(reroll.locator(".pictures img")).to_have_count(4)
            await expect(reroll.locator(".status")).to_contain_text("Done: 4 images, seed ")
            assert await reroll.locator(".status").text_content() != "Done: 4 images, seed 1."

            await first.locator('button[data-action="upscale"][data-index="0"]').click()
            upscaled = page.locator(".job").nth(2)
            await expect(upscaled.locator(".status")).to_have_text("Done: 1 image, seed 1.")
            await expect(upscaled.locator(".pictures img")).to_have_js_property("complete", True)
            assert await upscaled.locator(".pictures img").evaluate("img => img.naturalWidth") == 192
            made_from = [f'button[data-action="{action}"]' for action in ("reroll", "remix", "upscale", "vary")]
            assert await upscaled.locator(", ".join(made_from)).count() == 0  # one finished picture: info, delete

            await page.fill("#command", "/imagine a fox --count 99")
            await page.press("#command", "Enter")
            await expect(page.locator(".refused").last).to_contain_text("count must be a whole number from 1 to 16")
            await page.fill("#command", "/help")
            await page.press("#command", "Enter")
            await expect(page.locator(".refused", has_text="Only /imagine works here")).to_be_visible()

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
    fake = FakeGenerator(steps=4, step_delay=0.05)
    async with running(config, fake) as (service, _, _), async_playwright() as pw:
        adapter = WebAdapter(config.web, config.bot.data_dir, token="s3cret")
        await adapter.start(service)
        browser = await pw.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(CHROMIUM), args=ARGS, headless=True
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            await page.goto(adapter.url)
            await expect(page.locator("#token-field")).to_be_visible()  # the page learns at once that it needs one
            await page.fill("#user", "ada")
            await page.fill("#command", "a red fox")
            await page.press("#command", "Enter")
            await expect(page.locator(".refused").last).to_contain_text("needs an access token")
            await page.fill("#token", "s3cret")
            await page.press("#token", "Tab")  # "change" stores it
            fake.hold.clear()
            await page.fill("#command", "a fox to cancel")
            await page.press("#command", "Enter")
            held = page.locator(".job").nth(0)
            await expect(held.locator(".status")).to_have_text("Queued: position 1")
            await held.locator('button[data-action="cancel"]').click()  # the token's holder asked for it: theirs
            await expect(held.locator('button[data-action="cancel"]')).to_be_visible()
            fake.hold.set()  # the fake generator hears of the cancel at its next step
            await expect(held.locator(".status")).to_have_text("Cancelled.")
            assert await page.locator(".refused").count() == 1  # only the first try, without the token
            await page.fill("#command", "/imagine a red fox --count 2")
            await page.press("#command", "Enter")
            job = page.locator(".job").nth(1)
            await expect(job.locator(".status")).to_have_text(re.compile(r"Done: 2 images, seed \d+\."))
            await expect(job.locator(".pictures img").last).to_have_js_property("complete", True)
            assert await job.locator(".pictures img").last.evaluate("img => img.naturalWidth") > 0  # with the token
        finally:
            await browser.close()
            await adapter.close()


# Another site's page, as the operator might visit any: a text/plain fetch (no preflight), a JSON fetch
# (preflighted) and a form posting text/plain into a frame, all at the bot's API.
ATTACK = """<!doctype html>
<form id="form" method="post" enctype="text/plain" action="TARGETapi/imagine" target="sink">
  <input name='{"user": "eve", "prompt": "a fox", "x": "' value='"}'>
</form>
<iframe name="sink"></iframe>
<script>
(async () => {
  const body = JSON.stringify({ user: "eve", prompt: "a fox" });
  window.fetched = [];
  for (const init of [{ mode: "no-cors", headers: { "Content-Type": "text/plain" } },
                      { headers: { "Content-Type": "application/json" } }]) {
    try { await fetch("TARGETapi/imagine", { method: "POST", body, ...init }); window.fetched.push("sent"); }
    catch (error) { window.fetched.push("blocked"); }
  }
  document.querySelector("iframe").onload = () => { window.posted = true; };
  document.getElementById("form").submit();
})();
</script>
"""


async def test_another_site_in_the_browser_starts_nothing_and_a_rebound_name_reads_nothing(tmp_path: Path) -> None:
    from aiohttp import web
    from playwright.async_api import async_playwright

    config = settings(tmp_path / "data", web={"port": 0})
    fake = FakeGenerator()
    async with running(config, fake) as (service, _, store), async_playwright() as pw:
        adapter = WebAdapter(config.web, config.bot.data_dir)
        await adapter.start(service)
        port = adapter.url.rsplit(":", 1)[1].strip("/")
        page_text = ATTACK.replace("TARGET", adapter.url)

        async def attack(request: web.Request) -> web.Response:
            return web.Response(text=page_text, content_type="text/html")

        other = web.Application()
        other.router.add_get("/", attack)
        runner = web.AppRunner(other)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        other_url = f"http://127.0.0.1:{runner.addresses[0][1]}/"  # another port: another origin, the same site
        browser = await pw.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(CHROMIUM), headless=True,
            args=[*ARGS, "--host-resolver-rules=MAP rebind.test 127.0.0.1"],  # what DNS rebinding achieves
        )  # fmt: skip
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(other_url)
            await page.wait_for_function("window.posted && window.fetched.length === 2")
            sink = page.frame(name="sink")
            assert sink is not None and "Requests from other sites are refused" in await sink.content()
            assert fake.submitted == [] and await store.jobs(*Status) == []

            rebound = await page.goto(f"http://rebind.test:{port}/healthz")
            assert rebound is not None and rebound.status == 421
            assert "does not answer to the name 'rebind.test'" in await page.content()
        finally:
            await browser.close()
            await runner.cleanup()
            await adapter.close()
