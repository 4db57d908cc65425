"""Image prompts and Vary (Region) on the playground in a real browser (Debian's chromium through Playwright): a
rectangle dragged on a picture with a mouse and with a finger, the same chosen from the selects, a picture picked,
dropped or refused, and another site's multipart form that starts nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.adapters.web import WebAdapter
from bot.jobs import REGIONS, Status
from tests.bot.adapters.test_web_browser import ARGS, ARTIFACTS, CHROMIUM, TIMEOUT_MS
from tests.bot.adapters.test_web_page import MANY, Browser, browsing
from tests.bot.helpers import FakeGenerator, running, settings

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test installs it)"),
]

DEMO_CELL = 1 / 6  # the demo model's 48 px pictures are 6x6 cells


def picture_file(path: Path, size: tuple[int, int] = (300, 200)) -> Path:
    """A picture to start from: wider than tall (the model sees its centre square), yellow with a blue corner."""
    image = Image.new("RGB", size, (250, 200, 0))
    image.paste((0, 0, 255), (0, 0, size[0] // 4, size[1] // 4))
    image.save(path, format="PNG")
    return path


async def drag(page: Any, frame: Any, start: tuple[float, float], end: tuple[float, float]) -> list[float]:
    """Drag the mouse across `frame` from one fraction of it to another; the rectangle as fractions of the frame,
    measured from where the pointer went."""
    box = await frame.bounding_box()
    x0, y0 = box["x"] + box["width"] * start[0], box["y"] + box["height"] * start[1]
    x1, y1 = box["x"] + box["width"] * end[0], box["y"] + box["height"] * end[1]
    await page.mouse.move(x0, y0)
    await page.mouse.down()
    await page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    await page.mouse.move(x1, y1, steps=4)
    await page.mouse.up()
    return [min(start[0], end[0]), min(start[1], end[1]), max(start[0], end[0]), max(start[1], end[1])]


async def touch_drag(page: Any, frame: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    """The same with a finger: touch events through the DevTools protocol, which chromium turns into pointer
    events of type "touch" (and would turn into scrolling, were it not for touch-action: none)."""
    box = await frame.bounding_box()
    cdp = await page.context.new_cdp_session(page)
    points = [(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t) for t in (0, 0.3, 0.6, 1)]
    for i, (fx, fy) in enumerate(points):
        kind = "touchStart" if i == 0 else "touchMove"
        await cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
            {"x": box["x"] + box["width"] * fx, "y": box["y"] + box["height"] * fy}]})  # fmt: skip
    await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    await cdp.detach()


def within_a_cell(region: list[float], expected: list[float], cell: float) -> bool:
    return all(abs(a - b) < cell for a, b in zip(region, expected, strict=True))


async def newest(b: Browser, cards: int) -> tuple[Any, dict[str, Any]]:
    """The card the page added after `cards` others, once done, and its job's JSON."""
    from playwright.async_api import expect

    card = b.page.locator(".job").nth(cards)
    await expect(card.locator(".status")).to_contain_text("Done: ")
    status, job = await b.job(await card.get_attribute("data-job-id"))
    assert status == 200, job
    return card, job


async def test_a_rectangle_dragged_on_a_picture_makes_that_part_again(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, real=True, limits=MANY) as b:
        page = b.page
        first = await b.send("/imagine a large red circle at the top on a blue background --count 4 --seed 3")
        await expect(first.locator(".status")).to_have_text("Done: 4 images, seed 3.")
        first_id = await first.get_attribute("data-job-id")
        region_button = first.locator('button[data-action="region"]')
        await region_button.click()
        await expect(region_button).to_have_attribute("aria-pressed", "true")
        await expect(first.locator(".region-bar")).to_be_visible()

        # a mouse: the second picture, under the remix editor's text
        await first.locator('button[data-action="remix"]').click()
        await first.locator(".remix textarea").fill("a large red circle at the top on a green background")
        await first.locator(".remix input").fill("circles")
        picture = first.locator(".picture").nth(1)
        dragged = await drag(page, picture, (0.2, 0.45), (0.85, 0.95))
        await expect(page.locator("#viewer")).to_be_hidden()  # dragging is not a click that opens it
        await expect(picture.locator(".region-box")).to_be_visible()
        await expect(first.locator('select[aria-label="Image"]')).to_have_value("1")
        go = first.locator('button[data-action="vary-region"]')
        await expect(go).to_have_text("Vary (Region) of image 2")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "web-vary-region.png")
        await go.click()
        card, job = await newest(b, 1)
        assert (job["kind"], job["parent_id"], job["parent_index"]) == ("region", first_id, 1)
        assert within_a_cell(job["region"], dragged, DEMO_CELL), (job["region"], dragged)
        assert (job["prompt"], job["negative"]) == ("a large red circle at the top on a green background", "circles")
        await expect(card.locator(".who")).to_contain_text(f"Vary (Region) of image 2 of job {first_id}, the region ")
        await expect(card.locator(".from-picture .region-box")).to_be_visible()  # what it started from, marked
        await expect(card.locator(".pictures img")).to_have_count(4)
        await expect(region_button).to_have_attribute("aria-pressed", "false")  # made: the mode ends
        await expect(first.locator(".region-box:visible")).to_have_count(0)

        # a finger on the third picture, the remix editor closed: the job's own text
        await first.locator('button[data-action="remix"]').click()
        await region_button.click()
        await touch_drag(page, first.locator(".picture").nth(2), (0.9, 0.1), (0.4, 0.6))
        await expect(first.locator('select[aria-label="Image"]')).to_have_value("2")
        await first.locator('button[data-action="vary-region"]').click()
        _, job = await newest(b, 2)
        assert (job["kind"], job["parent_index"], job["prompt"], job["negative"]) == (
            "region", 2, "a large red circle at the top on a blue background", None)  # fmt: skip
        assert within_a_cell(job["region"], [0.4, 0.1, 0.9, 0.6], DEMO_CELL), job["region"]

        # the keyboard's way: a named part of a chosen image, on a region job's own pictures
        region_card = page.locator(".job").nth(1)
        await region_card.locator('button[data-action="region"]').click()
        await region_card.locator('select[aria-label="Part"]').select_option(label="the top left")
        await region_card.locator('select[aria-label="Image"]').select_option(label="image 4")
        await expect(region_card.locator(".picture").nth(3).locator(".region-box")).to_be_visible()
        await region_card.locator('button[data-action="vary-region"]').click()
        _, job = await newest(b, 3)
        assert (job["kind"], job["parent_index"], job["region"]) == ("region", 3, list(REGIONS["top left"]))
        await page.locator(".job").nth(3).locator('button[data-action="info"]').click()
        await expect(page.locator(".job").nth(3).locator('.info [data-field="region"]')).to_have_text(
            "the top left (0, 0, 0.5, 0.5)")  # fmt: skip

        # ↻ on a Vary (Region) card: the real generator makes the same part of the same image again
        await page.locator(".job").nth(3).locator('button[data-action="reroll"]').click()
        card, job = await newest(b, 4)
        assert (job["kind"], job["parent_index"], job["region"]) == ("region", 3, list(REGIONS["top left"]))
        await expect(card.locator(".status")).to_contain_text("Done: 4 images")


async def test_a_picture_picked_or_dropped_on_the_page_is_started_from(tmp_path: Path) -> None:
    from playwright.async_api import expect

    fake = FakeGenerator(steps=4, step_delay=0.01)
    async with browsing(tmp_path, generator=fake, limits=MANY) as b:
        page = b.page
        await page.fill("#user", "ada")
        await expect(page.locator("#attachment")).to_be_hidden()
        await page.set_input_files("#picture", picture_file(tmp_path / "yellow.png"))
        await expect(page.locator("#attachment")).to_be_visible()
        await expect(page.locator("#upload-name")).to_have_text("yellow.png")
        await expect(page.locator("#upload-thumb")).to_have_js_property("complete", True)
        await expect(page.locator("#upload-region")).to_have_value("0,0.5,1,1")  # the bottom half unless chosen
        dragged = await drag(page, page.locator("#upload-pick"), (0.1, 0.3), (0.7, 0.8))
        await expect(page.locator("#upload-region option:checked")).to_have_text(
            "the part from 10%, 30% to 70%, 80%")  # fmt: skip
        await page.fill("#command", "/imagine a fox in the snow --count 2")
        await page.press("#command", "Enter")
        await expect(page.locator(".message.user .sent-picture")).to_have_count(1)
        card, job = await newest(b, 0)
        assert (job["kind"], job["from_picture"], job["count"]) == ("imagine", True, 2)
        assert within_a_cell(job["region"], dragged, 0.02), (job["region"], dragged)  # as drawn
        sent = fake.submitted[-1]
        assert sent.image is not None and sent.region == job["region"]
        with Image.open(io.BytesIO(sent.image)) as kept:
            assert kept.size == (300, 200) and kept.getpixel((0, 0)) == (0, 0, 255)
        await expect(card.locator(".who")).to_contain_text("a picture, the region 0.1,0.3,0.7,0.8 made again")
        await expect(card.locator(".from-picture img")).to_have_js_property("complete", True)
        await expect(page.locator("#attachment")).to_be_hidden()  # sent: the next prompt starts from nothing

        # dropped on the page, with a named part chosen
        await page.evaluate("""async (url) => {
          const data = new DataTransfer();
          data.items.add(new File([await (await fetch(url)).blob()], "dropped.png", { type: "image/png" }));
          for (const type of ["dragenter", "dragover", "drop"]) {
            document.querySelector("#timeline").dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true,
              dataTransfer: data }));
          }
        }""", job["source_url"])
        await expect(page.locator("#upload-name")).to_have_text("dropped.png")
        await page.locator("#upload-region").select_option(label="the right half")
        await expect(page.locator("#upload-pick .region-box")).to_be_visible()
        await page.fill("#command", "a fox")
        await page.press("#command", "Enter")
        _, job = await newest(b, 1)
        assert job["region"] == list(REGIONS["right half"]) and fake.submitted[-1].image is not None

        # what is not a picture: the bot says so, and the attachment stays to be replaced
        (tmp_path / "notes.png").write_text("not a picture at all")
        await page.set_input_files("#picture", tmp_path / "notes.png")
        await page.fill("#command", "a fox")
        await page.press("#command", "Enter")
        await expect(page.locator(".refused").last).to_have_text(
            "That file is not a picture; send a PNG, JPEG, WebP or GIF.")  # fmt: skip
        await expect(page.locator("#attachment")).to_be_visible()
        await page.click("#detach")
        await expect(page.locator("#attachment")).to_be_hidden()
        assert len(fake.submitted) == 2


# Another site's page posting a picture to the bot in a multipart form, a file put into its input by script
# (what a file the visitor is lured into picking would be).
ATTACK = """<!doctype html>
<form id="form" method="post" enctype="multipart/form-data" action="TARGETapi/imagine" target="sink">
  <input name="user" value="eve"><input name="prompt" value="a fox"><input type="file" name="image">
</form>
<iframe name="sink"></iframe>
<script>
(async () => {
  const data = new DataTransfer();
  data.items.add(new File([await (await fetch("/pic.png")).blob()], "fox.png", { type: "image/png" }));
  document.querySelector("input[type=file]").files = data.files;
  document.querySelector("iframe").onload = () => { window.posted = true; };
  document.getElementById("form").submit();
})();
</script>
"""


async def test_another_sites_multipart_form_with_a_picture_starts_nothing(tmp_path: Path) -> None:
    from aiohttp import web
    from playwright.async_api import async_playwright

    config = settings(tmp_path / "data", web={"port": 0})
    fake = FakeGenerator()
    png = picture_file(tmp_path / "fox.png").read_bytes()
    async with running(config, fake) as (service, _, store), async_playwright() as pw:
        adapter = WebAdapter(config.web, config.bot.data_dir)
        await adapter.start(service)
        page_text = ATTACK.replace("TARGET", adapter.url)

        async def attack(request: web.Request) -> web.Response:
            return web.Response(text=page_text, content_type="text/html")

        async def image(request: web.Request) -> web.Response:
            return web.Response(body=png, content_type="image/png")

        other = web.Application()
        other.router.add_get("/", attack)
        other.router.add_get("/pic.png", image)
        runner = web.AppRunner(other)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        browser = await pw.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(CHROMIUM), args=ARGS, headless=True
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(f"http://127.0.0.1:{runner.addresses[0][1]}/")
            await page.wait_for_function("window.posted")
            sink = page.frame(name="sink")
            assert sink is not None and "Requests from other sites are refused" in await sink.content()
            assert fake.submitted == [] and await store.jobs(*Status) == []
            assert not (config.bot.data_dir / "images").exists() or not any((config.bot.data_dir / "images").iterdir())
        finally:
            await browser.close()
            await runner.cleanup()
            await adapter.close()
