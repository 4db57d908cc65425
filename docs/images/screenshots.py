"""Take the README's pictures from the running bot: `.venv/bin/python docs/images/screenshots.py [OUT_DIR]`.

Starts `janus-bot run` on the built-in demo model (a free port, a temporary data directory, no chat tokens), drives
the page with Playwright and Debian's chromium (/usr/bin/chromium, or $CHROMIUM), and writes to OUT_DIR (default:
this directory) playground.png, the page with a finished grid, its buttons and the demo model's example chips, and
grid.png, a finished 2x2 grid's PNG as the chat platforms get it. Fixed seeds, so the pictures change only when the
model or the page does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
PAGE_PROMPT = "/imagine a yellow triangle on a purple background --seed 3"  # place and size open: 4 pictures differ
GRID_PROMPT = "two small yellow squares on a purple background"
TOKENS = ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "WEB_TOKEN", "WEB_ADMIN_TOKEN")


def start_bot(data: Path) -> tuple[subprocess.Popen[str], str]:
    """`janus-bot run` on the demo model; the process and the page's URL from its banner."""
    config = data / "config.toml"
    config.write_text('[web]\nconsole_name = "ada"\n')
    env = {k: v for k, v in os.environ.items() if not k.removeprefix("JANUS_BOT_").startswith(TOKENS)}
    command = [sys.executable, "-m", "janus_bot", "run", "-c", str(config), "--data-dir", str(data / "data"),
               "--web-port", "0"]  # fmt: skip
    bot = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert bot.stdout is not None
    for line in bot.stdout:  # the banner comes once the model is loaded and the page listens
        if found := re.search(r"web: (http://\S+)", line):
            return bot, found.group(1)
    raise SystemExit(f"janus-bot run ended (exit code {bot.wait()}) before it served the page")


def grid_png(url: str) -> bytes:
    """A finished 2x2 grid through the API, as Discord and Slack receive it."""
    body = f'{{"user": "ada", "prompt": "{GRID_PROMPT}", "count": 4, "seed": "11"}}'.encode()
    request = urllib.request.Request(f"{url}api/imagine", body, {"Content-Type": "application/json"})
    job = urllib.request.urlopen(request).read().decode()
    job_id = re.search(r'"job_id": "([0-9a-f]+)"', job).group(1)  # type: ignore[union-attr]
    for _ in range(600):
        status = urllib.request.urlopen(f"{url}api/jobs/{job_id}").read().decode()
        if '"status": "done"' in status:
            return urllib.request.urlopen(f"{url}api/jobs/{job_id}/grid.png").read()  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise SystemExit("the grid was not done within a minute")


def playground_png(url: str, out: Path) -> None:
    """The page after one /imagine: the intro with the demo chips, the command, the finished grid and its buttons."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 900, "height": 1100}, device_scale_factor=1, color_scheme="light")
        page.goto(url)
        expect(page.locator("#demo .chip").first).to_be_visible()
        page.fill("#command", PAGE_PROMPT)
        page.press("#command", "Enter")
        card = page.locator(".job").last
        expect(card.locator(".status")).to_contain_text("Done:", timeout=60_000)
        expect(card.locator(".pictures img").last).to_have_js_property("complete", True)
        page.locator("#command").blur()
        page.evaluate("window.scrollTo(0, 0)")
        page.add_style_tag(content="header, #composer { position: static; } * { transition: none !important; }")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else HERE
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="janus-bot-screenshots-") as tmp:
        bot, url = start_bot(Path(tmp))
        try:
            playground_png(url, out_dir / "playground.png")  # first: the page shows this user's earlier jobs too
            (out_dir / "grid.png").write_bytes(grid_png(url))
        finally:
            bot.terminate()
            bot.wait(30)
    print(f"wrote {out_dir / 'playground.png'} and {out_dir / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
