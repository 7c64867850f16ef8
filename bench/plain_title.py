"""The floor of a one-step SOP: a plain Playwright script that launches Chromium, opens the todo page and reads
its title."""

import asyncio
import sys

from playwright.async_api import async_playwright

from sop_engine.browser import launch_options


async def main(url: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(**launch_options())
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        assert await page.title(), "the todo page has a title"
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
