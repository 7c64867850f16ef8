"""The floor: the todo flow as a plain hand-written Playwright script (async), launch included. It prints the
seconds from its browser's launch done to the flow's end (`{"after_launch_s": …}`): the floor of a server whose
browser is running already (bench/server_path.py)."""

import asyncio
import json
import sys
import time

from playwright.async_api import async_playwright

from sop_engine.browser import launch_options


async def main(url: str, n: int) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(**launch_options())
        launched = time.perf_counter()
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        for i in range(n):
            await page.locator("input.new-todo").fill(f"item {i}")
            await page.locator("input.new-todo").press("Enter")
        for i in range(0, n, 2):
            await page.locator(f"ul.todo-list li:nth-child({i + 1}) input.toggle").check()
        left = int(await page.locator(".todo-count strong").inner_text())
        assert left == n // 2, left
        print(json.dumps({"after_launch_s": time.perf_counter() - launched}))
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
