"""Fixtures for the browser tests: one headless Chromium per session, a page
server for the page's files, a fresh ``livenotify serve`` per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import harness
from tests.helpers import ServerProcess, running_server


@pytest.fixture(scope="session")
def chromium() -> Iterator[WebDriver]:
    paths = harness.browser_paths()
    if paths is None:
        if os.environ.get("LIVENOTIFY_REQUIRE_BROWSER") == "1":
            pytest.fail("LIVENOTIFY_REQUIRE_BROWSER=1 but chromium/chromedriver are missing")
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    driver = harness.make_driver(paths)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def static_host() -> Iterator[str]:
    with harness.page_server() as host:
        yield host


@pytest.fixture
def page(chromium: WebDriver) -> Iterator[harness.Page]:
    yield harness.Page(chromium)
    # Leave the page: its WebSocket closes before the next test's server starts.
    chromium.get("about:blank")


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with running_server() as proc:
        yield proc
