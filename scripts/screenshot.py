#!/usr/bin/env python3
"""Take docs/screenshot.png: the web page in headless Chromium with a few
notifications, against a real ``livenotify serve`` on free ports.

    .venv/bin/python scripts/screenshot.py [OUT.png]

Needs Debian's ``chromium`` and ``chromium-driver`` (as the browser tests).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

from tests.browser import harness  # noqa: E402
from tests.helpers import LineClient, running_server  # noqa: E402

# What a Django producer sends (the seed form).
NOTIFICATIONS: list[dict[str, Any]] = [
    {"type": "furniture_created",
     "furniture": {"furniture_id": "f-1001", "nombre": "Silla Nórdica", "precio": 89.9}},
    {"type": "furniture_updated",
     "furniture": {"furniture_id": "f-0997", "nombre": "Mesa Roble", "stock": 3}},
    {"type": "furniture_deleted", "furniture": {"furniture_id": "f-0420"}},
    {"type": "furniture_created",
     "furniture": {"furniture_id": "f-1002", "nombre": "Lámpara Arco", "precio": 149.0}},
]  # fmt: skip


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png"
    paths = harness.browser_paths()
    if paths is None:
        print("screenshot: chromium and chromedriver are needed", file=sys.stderr)
        return 2
    driver = harness.make_driver(paths, width=1280, height=900)
    try:
        with running_server() as server, harness.page_server() as static_host:
            page = harness.Page(driver)
            page.open(harness.page_url(server.ws_port, static_host))
            page.wait_state("live")
            with LineClient("127.0.0.1", server.tcp_port) as producer:
                producer.recv_type("welcome")
                for note in NOTIFICATIONS:
                    producer.send(note)
                    page.wait_item(note["furniture"]["furniture_id"])
            Select(driver.find_element(By.ID, "pub-event")).select_by_value("furniture_updated")
            driver.find_element(By.ID, "pub-body").send_keys(
                '{"furniture": {"furniture_id": "f-0997", "stock": 2}}'
            )
            if harness.serves_http_publish(server.ws_port):
                # With the front door: show a publish from the form and its reply.
                driver.find_element(By.ID, "pub-send").click()
                page.until(lambda d: d.find_element(By.ID, "pub-result").text.startswith("200"))
                page.wait_item('"stock": 2')
            driver.execute_script("document.activeElement.blur()")
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
    finally:
        driver.quit()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
