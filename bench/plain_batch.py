"""The batch floor: a hand-written asyncio Playwright script running the todo flow once per row,
N at a time, one browser, a context per flow."""

import asyncio
import json
import sys

from playwright.async_api import Browser, async_playwright

from sop_engine.browser import launch_options


async def todo(browser: Browser, url: str, items: list[str]) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url)
    for item in items:
        await page.locator("input.new-todo").fill(item)
        await page.locator("input.new-todo").press("Enter")
    for i in range(0, len(items), 2):
        await page.locator(f"ul.todo-list li:nth-child({i + 1}) input.toggle").check()
    left = int(await page.locator(".todo-count strong").inner_text())
    assert left == len(items) // 2, left
    await context.close()


async def main(rows_file: str, concurrency: int) -> None:
    with open(rows_file) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    limit = asyncio.Semaphore(concurrency)
    async with async_playwright() as p:
        browser = await p.chromium.launch(**launch_options())

        async def one(row: dict) -> None:
            async with limit:
                await todo(browser, row["url"], row["items"])

        await asyncio.gather(*(one(row) for row in rows))
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
