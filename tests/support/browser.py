"""Headless Chromium for the web console's tests: Debian's ``chromium`` and
``chromium-driver`` driven by Selenium (``make browser`` installs them).

Without them the tests FAIL with the command that installs them: a suite
that silently skips its browser tests would pass with a broken console.
Screenshots go to ``$TOOLCALL_TEST_ARTIFACTS`` (default ``tests/artifacts/``),
which CI keeps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Flags that start Chromium reliably as root in a container, offline: no
# sandbox (root), no GPU, and none of the background traffic to Google.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
)
INSTALL_HINT = (
    "the web console's browser tests need Debian's chromium and chromium-driver: "
    "run `make browser` (as root: apt-get install -y chromium chromium-driver)"
)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TOOLCALL_TEST_ARTIFACTS") or REPO_ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; pytest.fail with the fix when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        missing = " and ".join(
            n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p
        )
        pytest.fail(f"{missing} not found on PATH; {INSTALL_HINT}", pytrace=False)
    return chromium, driver


def chromium_session() -> Iterator[Any]:
    """A Selenium WebDriver on a fresh profile, quit (and the profile removed) afterwards."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed (pip install -e '.[dev]'); {INSTALL_HINT}")
    chromium, driver_path = find_browser()
    profile = tempfile.mkdtemp(prefix="toolcall-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # The driver path is given, so Selenium Manager (which downloads drivers) never runs.
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(condition: Callable[[], T], timeout_s: float, what: str) -> T:
    """Polls ``condition`` until it returns something truthy; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the element is not there yet, or went stale
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s (last error: {last_error})")
        time.sleep(0.05)
