"""Debian's headless Chromium through selenium, for the dashboard's tests: how it is started on this
kind of machine (no sandbox, no GPU, no QUIC, no background traffic, a fresh profile), waiting for
the page, and where screenshots go."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
needs_browser = [pytest.mark.browser, pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                                         reason="needs Debian's chromium and chromedriver")]


def driver_for(tmp_path: Path, width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--window-size={width},{height}",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait(pred, timeout_s: float = 15.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            v = pred()
        except Exception:  # the element may not exist yet
            v = None
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_view(d, view: str, timeout_s: float = 20.0) -> None:
    """Until ``view`` has loaded (its section's data-loaded is 1), or fail with the page's problem and console."""
    from selenium.webdriver.common.by import By

    def state():
        return d.find_element(By.ID, f"view-{view}").get_attribute("data-loaded")
    try:
        wait(lambda: state() in ("1", "error"), timeout_s, what=f"{view} view loaded")
    except AssertionError:
        raise AssertionError(f"{view} view not loaded; console: {d.get_log('browser')}") from None
    assert state() == "1", (d.find_element(By.ID, "problem").text, d.get_log("browser"))


def full_page_screenshot(d, path: Path, width: int = 1400) -> None:
    """The whole page, not only the window: the window grown to the page's height for the shot."""
    h = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(width, min(max(h + 100, 900), 3200))
    time.sleep(0.3)   # the charts follow their boxes' width (ResizeObserver), the map its size
    d.save_screenshot(str(path))
    d.set_window_size(width, 1000)


def severe(d, ignore: tuple[str, ...] = ()) -> list[dict]:
    """The console's errors (SEVERE), less those naming one of ``ignore``."""
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE" and not any(i in e["message"] for i in ignore)]
