"""The floor: the todo flow as a plain hand-written Playwright script (async), launch included."""

import asyncio
import sys

from playwright.async_api import async_playwright

from sop_engine.browser import launch_options


async def main(url: str, n: int) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(**launch_options())
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        for i in range(n):
            await page.locator("input.new-todo").fill(f"item {i}")
            await page.locator("input.new-todo").press("Enter")
        for i in range(0, n, 2):
            await page.locator(f"ul.todo-list li:nth-child({i + 1}) input.toggle").check()
        left = int(await page.locator(".todo-count strong").inner_text())
        assert left == n // 2, left
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
