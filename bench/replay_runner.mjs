// Runs a Chrome DevTools Recorder recording with @puppeteer/replay, in the same Chromium (puppeteer-core).
import { readFileSync } from "node:fs";
import { createRunner, parse, PuppeteerRunnerExtension } from "@puppeteer/replay";
import puppeteer from "puppeteer-core";

const [recordingFile, executablePath] = process.argv.slice(2);
const args = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
const browser = await puppeteer.launch({ executablePath, headless: true, args });
const page = await browser.newPage();
const runner = await createRunner(parse(JSON.parse(readFileSync(recordingFile, "utf8"))),
  new PuppeteerRunnerExtension(browser, page, { timeout: 15000 }));
await runner.run();
await browser.close();
