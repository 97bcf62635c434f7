"""A headless Chromium for the site: its tests and its screenshot.

Only the Debian packages are used (`chromium`, `chromium-driver`); selenium is pointed at
/usr/bin/chromedriver explicitly and told to stay offline, so selenium-manager never downloads
a browser or a driver.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVERS = ("/usr/bin/chromedriver",)


class NoBrowser(RuntimeError):
    pass


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when either is missing."""
    browser = next((b for b in BROWSERS if os.access(b, os.X_OK)), None) or shutil.which("chromium")
    driver = next((d for d in DRIVERS if os.access(d, os.X_OK)), None)
    return (browser, driver) if browser and driver else None


def start(width: int = 1400, height: int = 1000):
    """A headless Chromium webdriver that records the console log."""
    found = find_chromium()
    if found is None:
        raise NoBrowser("chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise NoBrowser("selenium is not installed (pip install selenium)") from None
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager: never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=found[1]))


PHONE = (390, 844)  # the CSS viewport of a common phone, for the site's narrow-screen checks


def emulate_width(driver, width: int, height: int = 844, mobile: bool = True) -> None:
    """Make the page's viewport `width` CSS pixels wide (a phone: headless Chromium's window has a
    minimum width of its own, so the viewport is set through the DevTools protocol)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": int(width), "height": int(height), "deviceScaleFactor": 1, "mobile": mobile})


def screenshot(page: str | Path, out: str | Path, width: int = 1400, height: int | None = None,
               phone: bool = False) -> Path:
    """A PNG of a page of the site as a browser renders it: the full height of the page, or the
    first `height` pixels; `phone`: at a phone's width (PHONE) with mobile emulation."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    driver = start(width=max(width, 500))
    try:
        if phone:
            width = PHONE[0]
            emulate_width(driver, width, height or PHONE[1])
        driver.get(Path(page).resolve().as_uri())
        if height is None:
            full = int(driver.execute_script("return document.documentElement.scrollHeight"))
            height = min(max(full + 40, 600), 6000)
        if phone:
            emulate_width(driver, width, height)
        else:
            driver.set_window_size(width, height)
        tmp = out.with_name(f".{out.name}.tmp.png")
        driver.save_screenshot(str(tmp))
        tmp.replace(out)
        return out
    finally:
        driver.quit()
