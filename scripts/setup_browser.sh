#!/usr/bin/env bash
# Install what the UI test and `scripts/ui.py screenshot` need: Debian's Chromium and the Playwright driver.
#
#   bash scripts/setup_browser.sh [VENV]      (VENV defaults to .venv)
#
# Idempotent: each part is installed only when it is missing. Playwright's own browser download
# (`playwright install`) cannot work on a closed network, so it is never run: scripts/ui.py launches
# /usr/bin/chromium through Playwright's `executable_path`.
set -euo pipefail

PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.65.2}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
VENV="${1:-.venv}"
PY="$VENV/bin/python"
CONSTRAINTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/constraints.txt"

die() {
    echo "setup_browser: $*" >&2
    exit 1
}

[ -x "$PY" ] || die "no Python at $PY: create the virtualenv first (make setup)"

if [ ! -x "$CHROMIUM" ]; then
    command -v apt-get >/dev/null || die "$CHROMIUM is missing and there is no apt-get to install Debian's chromium"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "$CHROMIUM is missing; installing it needs root (or sudo)"
        SUDO="sudo -n"
    fi
    apt() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
    echo "setup_browser: installing Debian chromium and chromium-driver"
    # A fresh machine has no package lists (and old ones may point at files gone from the mirror):
    # when the first try fails, update the lists and try again.
    if ! apt install -y -q --no-install-recommends chromium chromium-driver; then
        apt update -q || die "apt-get update failed"
        apt install -y -q --no-install-recommends chromium chromium-driver ||
            die "apt-get install chromium chromium-driver failed"
    fi
    [ -x "$CHROMIUM" ] || die "apt-get finished but $CHROMIUM is still missing"
fi

if ! "$PY" -c "import playwright, sys; from importlib.metadata import version; sys.exit(version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
    echo "setup_browser: installing playwright==$PLAYWRIGHT_VERSION into $VENV"
    PIP_ARGS=(-q)
    [ -f "$CONSTRAINTS" ] && PIP_ARGS+=(-c "$CONSTRAINTS")  # pins greenlet too, once it is listed there
    "$PY" -m pip install "${PIP_ARGS[@]}" "playwright==$PLAYWRIGHT_VERSION" ||
        die "pip install playwright==$PLAYWRIGHT_VERSION failed"
fi

# Check that the pieces start together: Playwright drives Debian's Chromium headless on this machine.
"$PY" - "$CHROMIUM" <<'EOF' || die "Playwright could not start $CHROMIUM headless"
import sys
from playwright.sync_api import sync_playwright

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=sys.argv[1],
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    )
    page = browser.new_page()
    page.set_content("<p id=ok>ok</p>")
    assert page.inner_text("#ok") == "ok"
    browser.close()
EOF

echo "setup_browser: chromium:     $("$CHROMIUM" --version 2>/dev/null | head -1)"
if command -v chromedriver >/dev/null; then
    echo "setup_browser: chromedriver: $(chromedriver --version 2>/dev/null | head -1)"
fi
echo "setup_browser: playwright:   $("$PY" -c "from importlib.metadata import version; print(version('playwright'))")"
