"""/describe on the playground in a real browser (Debian's chromium through Playwright): Describe on a result's
picture, a picture picked and described, the prompts numbered with an Imagine button each, and describe jobs in
the history after a reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bot.adapters.test_web_browser import ARTIFACTS, CHROMIUM
from tests.bot.adapters.test_web_page import MANY, Browser, browsing
from tests.bot.adapters.test_web_pictures import newest, picture_file
from tests.bot.helpers import FakeGenerator

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test installs it)"),
]


async def no_broken_pictures(card: Any) -> None:
    """Every picture on the card has loaded (a broken <img> is complete with no width)."""
    from playwright.async_api import expect

    for img in await card.locator("img:visible").all():
        await expect(img).to_have_js_property("complete", True)
        assert await img.evaluate("img => img.naturalWidth") > 0, await img.get_attribute("alt")


async def prompts_of(b: Browser, card: Any) -> list[str]:
    """The prompts a describe card shows, once there, checked against its job's."""
    from playwright.async_api import expect

    await expect(card.locator(".status")).to_contain_text("Done: ")
    status, job = await b.job(await card.get_attribute("data-job-id"))
    assert status == 200 and job["kind"] == "describe", job
    await expect(card.locator(".prompts li .said")).to_have_text(job["prompts"])
    return list(job["prompts"])


async def test_describe_on_a_picture_shows_its_prompts_and_imagine_makes_one(tmp_path: Path) -> None:
    from playwright.async_api import expect

    fake = FakeGenerator(steps=4, step_delay=0.01)
    async with browsing(tmp_path, generator=fake, limits=MANY) as b:
        page = b.page
        await page.fill("#user", "ada")
        first = await b.send("/imagine a fox in the snow --count 4")
        await expect(first.locator(".status")).to_contain_text("Done: 4 images")
        first_id = await first.get_attribute("data-job-id")
        assert await first.locator('button[data-action="describe"]').count() == 4  # one on every image, not the grid
        await first.locator(".picture").nth(2).hover()
        await expect(first.locator(".describe-one").nth(2)).to_have_css("opacity", "1")  # shown on hover
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "web-describe-button.png")
        await first.locator('button[data-action="describe"][data-index="2"]').click()
        await expect(page.locator(".message.user").last).to_have_text(f"ada/describe image 3 of job {first_id}")

        card = page.locator(".job").nth(1)
        prompts = await prompts_of(b, card)
        assert prompts == [f"a fake prompt {fake.described[-1].seed + i}" for i in range(4)]
        await expect(card.locator(".status")).to_have_text("Done: 4 prompts that would draw it.")
        await expect(card.locator(".prompt")).to_have_text("/describe")
        await expect(card.locator(".who")).to_contain_text(f"image 3 of job {first_id}")
        assert fake.described[-1].image == (await b.pictures(first_id))[2]  # the image as stored
        await expect(card.locator(".from-picture.described img")).to_have_js_property("complete", True)
        await no_broken_pictures(card)
        made_from = [f'button[data-action="{action}"]' for action in ("reroll", "remix", "upscale", "vary", "region")]
        assert await card.locator(", ".join(made_from)).count() == 0  # prompts, not pictures: info and delete
        await card.locator('button[data-action="info"]').click()
        await expect(card.locator('.info [data-field="count"]')).to_have_text("4")
        await expect(card.locator(".info dt", has_text="Prompts")).to_be_visible()
        await expect(card.locator('.info button[data-action="reuse"]')).to_have_count(0)
        await card.locator('button[data-action="info"]').click()
        await page.add_style_tag(content="header, #composer { position: static; }")  # one full-page picture
        await page.screenshot(path=ARTIFACTS / "web-describe.png", full_page=True)

        await card.locator('button[data-action="edit"][data-index="3"]').click()
        await expect(page.locator("#command")).to_have_value(f"/imagine {prompts[3]}")
        await page.fill("#command", "")
        await card.locator('button[data-action="imagine"][data-index="1"]').click()
        made, job = await newest(b, 2)
        assert (job["kind"], job["prompt"], job["count"]) == ("imagine", prompts[1], 4)
        assert fake.submitted[-1].prompt == prompts[1]
        await expect(made.locator(".pictures img")).to_have_count(4)
        await expect(page.locator(".message.user").last).to_have_text(f"ada/imagine {prompts[1]}")

        # after a reload the history shows the describe job as it was: its picture and prompts, nothing broken
        await page.reload()
        again = page.locator(f'.job[data-job-id="{await card.get_attribute("data-job-id")}"]')
        assert await prompts_of(b, again) == prompts
        await expect(again.locator('button[data-action="imagine"]')).to_have_count(4)
        await no_broken_pictures(again)
        assert len(fake.described) == 1 and await page.locator(".refused").count() == 0


async def test_a_picture_picked_is_described_by_the_button_or_by_typing_describe(tmp_path: Path) -> None:
    from playwright.async_api import expect

    fake = FakeGenerator(steps=4, step_delay=0.01)
    async with browsing(tmp_path, generator=fake, limits=MANY) as b:
        page = b.page
        await page.fill("#user", "ada")
        await page.fill("#command", "/describe")
        await page.press("#command", "Enter")
        await expect(page.locator(".refused").last).to_have_text(
            "Attach the picture to describe first (+ Picture, or drop or paste it here), or press Describe on one of "
            "the pictures above.")  # fmt: skip

        sent = picture_file(tmp_path / "yellow.png")
        await page.set_input_files("#picture", sent)
        await expect(page.locator("#attachment")).to_be_visible()
        await page.screenshot(path=ARTIFACTS / "web-describe-upload.png")
        await page.click("#describe-upload")
        card = page.locator(".job").nth(0)
        prompts = await prompts_of(b, card)
        assert len(prompts) == 4
        await expect(page.locator(".message.user").last.locator(".sent-picture")).to_have_count(1)
        await expect(card.locator(".who")).to_contain_text("a picture sent")
        await no_broken_pictures(card)
        await expect(page.locator("#attachment")).to_be_hidden()  # sent: the next prompt starts from nothing
        assert fake.described[-1].image.startswith(b"\x89PNG") and fake.submitted == []

        # typed, with a count, after a drop
        await page.set_input_files("#picture", sent)
        await page.fill("#command", "/describe --count 2")
        await page.press("#command", "Enter")
        card = page.locator(".job").nth(1)
        assert len(await prompts_of(b, card)) == 2
        await expect(page.locator("#attachment")).to_be_hidden()

        # what is not a picture: the bot says so, and the attachment stays to be replaced
        (tmp_path / "notes.png").write_text("not a picture at all")
        await page.set_input_files("#picture", tmp_path / "notes.png")
        await page.click("#describe-upload")
        await expect(page.locator(".refused").last).to_have_text(
            "That file is not a picture; send a PNG, JPEG, WebP or GIF.")  # fmt: skip
        await expect(page.locator("#attachment")).to_be_visible()
        await page.fill("#command", "/describe --count 9")
        await page.press("#command", "Enter")
        await expect(page.locator(".refused").last).to_have_text(
            '"count" must be a whole number from 1 to 8 (prompts); you gave 9.')  # fmt: skip
        assert len(fake.described) == 2
