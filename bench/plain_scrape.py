"""The scrape flow as a plain Playwright script: every quote of every page, following "next"."""

import asyncio
import sys

from playwright.async_api import async_playwright

from sop_engine.browser import launch_options


async def main(url: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(**launch_options())
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        texts: list[str] = []
        while True:
            texts += await page.locator("div.quote span.text").all_inner_texts()
            if await page.locator("li.next a").count() == 0:
                break
            await page.locator("li.next a").click()
            await page.wait_for_load_state()
        assert len(texts) == 9, texts
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
