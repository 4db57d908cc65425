"""The playground's controls in a real browser (Debian's chromium through Playwright): negative prompts, remix,
info, delete, exact seeds, history, pictures, the strength control, the demo model's chips and the console's name."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.adapters.web import WebAdapter
from bot.adapters.web.about import demo_examples
from bot.app import App
from tests.bot.adapters.test_web_browser import ARGS, CHROMIUM, TIMEOUT_MS
from tests.bot.helpers import FakeGenerator, running, settings

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test installs it)"),
]

BIG_SEED = 1247650969592046033  # above 2**53: a JavaScript number would make it 1247650969592046000
MANY = {"jobs_per_period": 100, "max_queued_per_user": 20}


@dataclass
class Browser:
    page: Any  # playwright's Page
    adapter: WebAdapter
    http: aiohttp.ClientSession

    async def job(self, job_id: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"/api/jobs/{job_id}", headers=headers or {}) as response:
            return response.status, await response.json()

    async def pictures(self, job_id: str) -> list[bytes]:
        _, job = await self.job(job_id)
        out = []
        for url in job["image_urls"]:
            async with self.http.get(url) as response:
                out.append(await response.read())
        return out

    async def send(self, command: str) -> Any:
        """Type a command, press Enter; the new job's card."""
        cards = await self.page.locator(".job").count()
        await self.page.fill("#command", command)
        await self.page.press("#command", "Enter")
        card = self.page.locator(".job").nth(cards)
        await card.wait_for()
        return card


@contextlib.asynccontextmanager
async def browsing(
    tmp_path: Path, *, real: bool = False, token: str | None = None, admin_token: str | None = None,
    generator: FakeGenerator | None = None, **sections: dict[str, Any],
) -> AsyncIterator[Browser]:  # fmt: skip
    """The page in chromium against a running bot: the built-in demo model when `real`, else the fake generator."""
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=TIMEOUT_MS)
    config = settings(tmp_path / "data", web={"port": 0, **sections.pop("web", {})}, **sections)
    async with contextlib.AsyncExitStack() as stack:
        if real:
            service = (await stack.enter_async_context(App(config))).service
        else:
            fake = generator or FakeGenerator(steps=4, step_delay=0.01)
            service, _, _ = await stack.enter_async_context(running(config, fake))
        adapter = WebAdapter(config.web, config.bot.data_dir, token, admin_token)
        await adapter.start(service)
        stack.push_async_callback(adapter.close)
        playwright = await stack.enter_async_context(async_playwright())
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(CHROMIUM), args=ARGS, headless=True,
            viewport={"width": 1000, "height": 1200}, accept_downloads=True,
        )  # fmt: skip
        stack.push_async_callback(context.close)
        page = context.pages[0] if context.pages else await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        http = await stack.enter_async_context(aiohttp.ClientSession(adapter.url, headers=headers))
        await page.goto(adapter.url)
        yield Browser(page, adapter, http)


async def test_the_console_gets_a_name_and_the_demo_model_says_what_it_draws(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, real=True, web={"console_name": "Ada"}) as b:
        page = b.page
        await expect(page.locator("#model")).to_contain_text("janus-bot demo model on cpu")
        await expect(page.locator("#model .badge")).to_have_text("demo")
        await expect(page.locator("#user")).to_have_value("Ada")
        await expect(page.locator("#name-note")).to_contain_text("this machine's console")
        await expect(page.locator("#demo")).to_contain_text("circles, squares or triangles")
        chips = page.locator("#demo button.chip")
        assert await chips.all_text_contents() == demo_examples()
        await expect(page.locator("#command")).to_have_attribute("placeholder",
                                                                   f"/imagine {demo_examples()[0]} --count 4")
        await chips.nth(0).click()  # no name typed, no token: it just works
        card = page.locator(".job").nth(0)
        await expect(card.locator(".status")).to_contain_text("Done: 4 images, seed ")
        await expect(card.locator(".prompt")).to_have_text(demo_examples()[0])
        await expect(card.locator(".who")).to_contain_text("Ada")


async def test_pictures_are_shown_large_pixelated_when_small_and_open_full_size_and_download(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, real=True) as b:
        page = b.page
        card = await b.send("/imagine a large red circle at the top on a blue background --count 4 --seed 3")
        await expect(card.locator(".status")).to_have_text("Done: 4 images, seed 3.")
        pictures = card.locator(".pictures img")
        await expect(pictures).to_have_count(4)
        for i in range(4):
            img = pictures.nth(i)
            await expect(img).to_have_js_property("complete", True)
            natural, shown = await img.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width]")
            assert natural == 48 and shown >= 192, (natural, shown)  # 48 px pictures at four times or more
            assert await img.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
        await pictures.nth(1).click()
        viewer = page.locator("#viewer")
        await expect(viewer).to_be_visible()
        big = viewer.locator("img")
        await expect(big).to_have_js_property("complete", True)
        assert await big.evaluate("img => img.getBoundingClientRect().width") >= 384
        job_id = await card.get_attribute("data-job-id")
        assert await viewer.locator("a.open").get_attribute("href") == f"/api/jobs/{job_id}/images/1.png"
        async with page.expect_download() as info:
            await viewer.locator("a.download").click()
        download = await info.value
        assert download.suggested_filename == f"janus-{job_id}-2.png"
        assert Path(await download.path()).read_bytes() == (await b.pictures(job_id))[1]
        await page.keyboard.press("Escape")
        await expect(viewer).to_be_hidden()


async def test_a_seed_above_2_to_the_53_is_shown_exactly_and_typed_back_gives_the_same_pictures(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, real=True) as b:
        first = await b.send(f"/imagine two small yellow squares on a purple background --count 2 --seed {BIG_SEED}")
        await expect(first.locator(".status")).to_have_text(f"Done: 2 images, seed {BIG_SEED}.")
        await first.locator('button[data-action="info"]').click()
        await expect(first.locator('.info [data-field="seed"]')).to_have_text(str(BIG_SEED))

        made = await b.send("/imagine a green triangle in the bottom left on a white background --count 2")
        await expect(made.locator(".status")).to_contain_text("Done: 2 images, seed ")
        await made.locator('button[data-action="info"]').click()
        seed = await made.locator('.info [data-field="seed"]').text_content()
        await made.locator('button[data-action="reuse"]').click()  # the command, with the seed, into the composer
        command = await b.page.input_value("#command")
        assert command.endswith(f"--seed {seed}") and "--count 2" in command, command
        again = await b.send(command)
        await expect(again.locator(".status")).to_have_text(f"Done: 2 images, seed {seed}.")
        made_id, again_id = await made.get_attribute("data-job-id"), await again.get_attribute("data-job-id")
        assert await b.pictures(again_id) == await b.pictures(made_id)
        typed_id = await first.get_attribute("data-job-id")
        assert (await b.job(typed_id))[1]["seed"] == str(BIG_SEED)


async def test_negative_remix_info_and_the_strength_control(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, limits=MANY) as b:
        page = b.page
        await page.fill("#user", "ada")
        first = await b.send("/imagine a fox --no trees, fog --count 2")
        await expect(first.locator(".status")).to_contain_text("Done: 2 images")
        await expect(first.locator(".prompt")).to_have_text("a fox --no trees, fog")
        first_id = await first.get_attribute("data-job-id")
        assert (await b.job(first_id))[1]["negative"] == "trees, fog"

        await first.locator('button[data-action="info"]').click()
        info = first.locator(".info")
        await expect(info).to_be_visible()
        for field, text in [("prompt", "a fox"), ("negative", "trees, fog"), ("count", "2"), ("cfg", "5"),
                            ("temperature", "1"), ("model", "fake"), ("user", "ada"), ("job", first_id)]:
            await expect(info.locator(f'[data-field="{field}"]')).to_have_text(text)
        await expect(info.locator('[data-field="waited"]')).to_have_text(re.compile(r"^\d+\.\d s$"))
        await expect(info.locator('[data-field="ran"]')).to_have_text(re.compile(r"^\d+\.\d s$"))
        await expect(info.locator('[data-field="made_from"]')).to_have_count(0)  # a new job

        await first.locator('button[data-action="remix"]').click()  # edit in place
        remix = first.locator(".remix")
        await expect(remix.locator("textarea")).to_have_value("a fox")
        await expect(remix.locator("input")).to_have_value("trees, fog")
        await remix.locator("textarea").fill("a blue fox")
        await remix.locator("input").fill("snow")
        await first.locator('button[data-action="reroll"]').click()
        reroll = page.locator(".job").nth(1)
        await expect(reroll.locator(".status")).to_contain_text("Done: 2 images")
        await expect(reroll.locator(".prompt")).to_have_text("a blue fox --no snow")
        _, job = await b.job(await reroll.get_attribute("data-job-id"))
        assert (job["kind"], job["prompt"], job["negative"], job["parent_id"]) == ("reroll", "a blue fox", "snow",
                                                                                   first_id)  # fmt: skip

        await remix.locator("input").fill("")  # an empty negative drops it
        strong = first.locator('.strength input[value="strong"]')
        await strong.check()  # a visible control: no Shift-click needed (touch screens have none)
        await first.locator('button[data-action="vary"][data-index="1"]').click()
        variation = page.locator(".job").nth(2)
        await expect(variation.locator(".status")).to_contain_text("Done: 2 images")
        _, job = await b.job(await variation.get_attribute("data-job-id"))
        assert (job["kind"], job["strength"], job["parent_index"]) == ("variation", "strong", 1)
        assert (job["prompt"], job["negative"]) == ("a blue fox", None)
        await expect(variation.locator(".who")).to_contain_text(f"strong variations of image 2 of job {first_id}")

        await first.locator('button[data-action="remix"]').click()  # closed: the job's own text again
        await expect(remix).to_be_hidden()
        await first.locator('.strength input[value="subtle"]').check()
        await first.locator('button[data-action="vary"][data-index="0"]').click()
        subtle = page.locator(".job").nth(3)
        await expect(subtle.locator(".status")).to_contain_text("Done: 2 images")
        _, job = await b.job(await subtle.get_attribute("data-job-id"))
        assert (job["strength"], job["prompt"], job["negative"]) == ("subtle", "a fox", "trees, fog")


async def test_delete_removes_the_pictures_and_the_job_stays_gone_after_a_reload(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, limits=MANY) as b:
        page = b.page
        await page.fill("#user", "ada")
        kept = await b.send("/imagine a fox to keep")
        gone = await b.send("/imagine a fox to delete")
        await expect(gone.locator(".status")).to_contain_text("Done: 4 images")
        button = gone.locator('button[data-action="delete"]')
        await button.click()
        await expect(button).to_have_text("Delete? Click again")  # a second click, so that one slip deletes nothing
        await button.click()
        await expect(gone.locator(".status")).to_have_text("Deleted.")
        await expect(gone.locator(".pictures")).to_have_count(0)
        gone_id = await gone.get_attribute("data-job-id")
        status, body = await b.job(gone_id)
        assert status == 410 and body["error"].startswith(f"Job {gone_id} was deleted")

        await page.reload()
        await expect(page.locator(".job")).to_have_count(1)
        await expect(page.locator(".job").nth(0)).to_have_attribute("data-job-id", await kept.get_attribute(
            "data-job-id"))  # fmt: skip


async def test_history_comes_back_after_a_reload_with_older_pages(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, limits=MANY) as b:
        page = b.page
        ids = []
        for i in range(12):
            async with b.http.post("/api/imagine", json={"user": "ada", "prompt": f"fox number {i}"}) as response:
                ids.append((await response.json())["job_id"])
        for job_id in ids:
            async with b.http.get(f"/api/jobs/{job_id}/events") as response:
                await response.read()
        await page.reload()
        cards = page.locator(".job")
        await expect(cards).to_have_count(10)
        assert [await cards.nth(i).get_attribute("data-job-id") for i in range(10)] == ids[2:]  # oldest first
        await expect(cards.last.locator(".prompt")).to_have_text("fox number 11")
        await expect(cards.last.locator(".pictures img")).to_have_count(4)
        await expect(cards.last.locator('button[data-action="reroll"]')).to_be_visible()
        await page.click("#older")
        await expect(cards).to_have_count(12)
        assert await cards.nth(0).get_attribute("data-job-id") == ids[0]
        await expect(page.locator("#older")).to_be_hidden()


async def test_admins_get_a_gallery_of_everyones_jobs(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, admin_token="b0ss", limits=MANY) as b:
        page = b.page
        async with b.http.post("/api/imagine", json={"user": "eve", "prompt": "eve's fox"},
                               headers={"Authorization": "Bearer b0ss"}) as response:  # fmt: skip
            eves = (await response.json())["job_id"]
        async with b.http.get(f"/api/jobs/{eves}/events", headers={"Authorization": "Bearer b0ss"}) as response:
            await response.read()
        await page.fill("#user", "ada")
        mine = await b.send("/imagine ada's fox")
        await expect(mine.locator(".status")).to_contain_text("Done")
        await expect(page.locator("#gallery-toggle")).to_be_hidden()  # this machine's console is no admin

        await page.click("#token-toggle")
        await page.fill("#token", "b0ss")
        await page.press("#token", "Tab")
        await expect(page.locator("#gallery-toggle")).to_be_visible()
        await page.click("#gallery-toggle")
        tiles = page.locator("#gallery .tile")
        await expect(tiles).to_have_count(2)
        await expect(tiles.nth(0)).to_contain_text("ada: ada's fox")
        await expect(tiles.nth(1)).to_contain_text("eve: eve's fox")
        await tiles.nth(1).locator("img").click()
        await expect(page.locator("#viewer")).to_be_visible()
        await page.keyboard.press("Escape")
        await tiles.nth(1).locator('button[data-action="delete"]').click()
        await tiles.nth(1).locator('button[data-action="delete"]').click()
        await expect(tiles).to_have_count(1)
        assert (await b.job(eves))[0] == 410


async def test_with_an_access_token_the_page_asks_for_a_name_first(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browsing(tmp_path, token="s3cret") as b:
        page = b.page
        await expect(page.locator("#token-field")).to_be_visible()  # asked for at once: the API wants it
        await page.fill("#token", "s3cret")
        await page.press("#token", "Tab")
        await expect(page.locator("#user")).to_have_value("")
        await expect(page.locator("#name-note")).to_contain_text("Type your name")
        await page.fill("#command", "a fox")
        await page.press("#command", "Enter")
        await expect(page.locator(".refused").last).to_contain_text("Type your name at the top first")
        await page.fill("#user", "bo")
        card = await b.send("a fox")
        await expect(card.locator(".status")).to_contain_text("Done")
        await expect(card.locator(".who")).to_contain_text("bo")


async def test_a_cancelled_job_says_so_and_offers_nothing_to_make_from_it(tmp_path: Path) -> None:
    from playwright.async_api import expect

    held = FakeGenerator()
    held.hold.clear()
    async with browsing(tmp_path, generator=held) as b:
        card = await b.send("/imagine a fox to cancel")
        await expect(card.locator(".status")).to_have_text("Queued: position 1")
        await card.locator('button[data-action="cancel"]').click()
        held.hold.set()
        await expect(card.locator(".status")).to_have_text("Cancelled.")
        await b.page.reload()
        card = b.page.locator(".job").nth(0)
        await expect(card.locator(".status")).to_have_text("Cancelled.")
        await expect(card.locator('button[data-action="reroll"]')).to_have_count(0)


async def test_a_job_still_running_after_a_reload_is_followed_to_its_end(tmp_path: Path) -> None:
    from playwright.async_api import expect

    held = FakeGenerator(steps=4, step_delay=0.01)
    held.hold.clear()
    async with browsing(tmp_path, generator=held) as b:
        card = await b.send("/imagine a fox that takes a while --count 2")
        await expect(card.locator(".status")).to_have_text("Queued: position 1")
        await b.page.reload()
        card = b.page.locator(".job").nth(0)
        await expect(card.locator(".prompt")).to_have_text("a fox that takes a while")
        await expect(card.locator('button[data-action="cancel"]')).to_be_visible()
        held.hold.set()
        await expect(card.locator(".status")).to_have_text(re.compile(r"^Done: 2 images, seed \d+\.$"))
        await expect(card.locator(".pictures img")).to_have_count(2)
