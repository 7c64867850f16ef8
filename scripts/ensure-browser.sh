#!/usr/bin/env bash
# Makes sure there is a Chromium for Playwright to drive, trying in order:
#   1. SOP_BROWSER (a path or a command name);
#   2. a Chromium or Chrome on PATH;
#   3. Playwright's own download (already there, or `playwright install chromium`);
#   4. Debian's `chromium` package, when apt-get is there and we are root (machines with no internet).
set -uo pipefail
PY=${1:-.venv/bin/python}

if [ -n "${SOP_BROWSER:-}" ]; then
  if command -v "$SOP_BROWSER" >/dev/null 2>&1 || [ -x "$SOP_BROWSER" ]; then
    echo "browser: SOP_BROWSER=$SOP_BROWSER"; exit 0
  fi
  echo "SOP_BROWSER=$SOP_BROWSER is not an executable" >&2; exit 1
fi

on_path() {
  for name in chromium chromium-browser google-chrome google-chrome-stable chrome; do
    if command -v "$name" >/dev/null 2>&1; then echo "browser: $(command -v "$name")"; return 0; fi
  done
  return 1
}
on_path && exit 0

playwright_has_chromium() {
  "$PY" - <<'PYEOF' 2>/dev/null
import os, sys
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    path = p.chromium.executable_path
sys.exit(0 if os.path.exists(path) else 1)
PYEOF
}
if playwright_has_chromium; then echo "browser: Playwright's Chromium"; exit 0; fi

echo "browser: trying Playwright's download (python -m playwright install chromium)"
if timeout 600 "$PY" -m playwright install chromium >/tmp/sop-playwright-install.log 2>&1 && playwright_has_chromium; then
  echo "browser: Playwright's Chromium"; exit 0
fi
echo "browser: Playwright's download is not available here (see /tmp/sop-playwright-install.log)"

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "browser: installing Debian's chromium package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/tmp/sop-apt-chromium.log 2>&1
  on_path && exit 0
fi

cat >&2 <<'MSG'
No Chromium found. Install one of:
  - Chromium or Google Chrome on PATH (Debian/Ubuntu: sudo apt-get install chromium), or
  - Playwright's build: .venv/bin/python -m playwright install chromium, or
  - set SOP_BROWSER to a Chromium/Chrome executable.
MSG
exit 1
