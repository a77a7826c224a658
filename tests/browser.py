"""Driving ``mmldm serve`` in a real headless browser: Debian's Chromium through its ChromeDriver
(``apt-get install chromium chromium-driver``; ``.ci/run`` installs them), with Selenium.

Nothing is downloaded: Selenium is given the system's driver and browser, so its own driver
manager never runs, and Chromium starts with its background connections switched off (this
machine's network refuses them). Used by ``tests/pipeline/test_web_app.py`` and by
``scripts/web_app_screenshot.py`` (the README's screenshot).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mmldm.app import IDS

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--mute-audio")


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"needs {path}: apt-get install chromium chromium-driver (.ci/run does)"
    return None


def chromium(profile: Path, width: int = 1280, height: int = 1000):
    """A headless Chromium with a fresh profile folder ``profile``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(port: int, log: Path, model: str | Path | None = None, gradio_cache: Path | None = None,
          extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """``mmldm serve`` on 127.0.0.1:``port`` in a subprocess, its output in ``log``."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    if gradio_cache is not None:
        env["GRADIO_TEMP_DIR"] = str(gradio_cache)
    command = [sys.executable, "-m", "mmldm", "serve", "--port", str(port), *extra]
    if model is not None:
        command += ["--model", str(model)]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    """Return once ``url`` answers; fail with the server's output if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mmldm serve exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mmldm serve did not answer on {url} within {timeout:g} s: {log.read_text()[-3000:]}")


def stop(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """Stop the server as a service manager does (SIGTERM); its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait(driver, condition, timeout: float = 60.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def open_page(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait(driver, lambda d: d.find_elements(By.ID, IDS["generate"]))


def choose_task(driver, task: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'#{IDS["task"]} input[value="{task}"]').click()


def upload(driver, part: str, path: Path) -> None:
    """Upload ``path`` into the page's ``part`` ("audio" or "video") once the task shows it, and wait
    until the page has it."""
    from selenium.webdriver.common.by import By

    selector = f'#{IDS[part]} input[type="file"]'
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, selector), 30)
    driver.find_element(By.CSS_SELECTOR, selector).send_keys(str(Path(path).resolve()))
    # the upload is done when the drop zone (and its file input) has made way for a player
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, selector), 30)


def set_number(driver, part: str, value: float) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f'#{IDS[part]} input')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value))
    box.send_keys(Keys.TAB)  # the page takes the value when the box loses focus


def click_generate(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, IDS["generate"]).click()


def result(driver, timeout: float = 120.0) -> tuple[str, list[str], str]:
    """Wait for a generation's result: ``(the playing video's URL, the download links, the info line)``;
    an error shown instead fails with its text."""
    from selenium.webdriver.common.by import By

    def done(d):
        if d.find_elements(By.CSS_SELECTOR, '[data-testid="toast-text"]'):
            return "error"
        return d.find_elements(By.CSS_SELECTOR, f'#{IDS["result"]} video[src]') and "video"

    if wait(driver, done, timeout) == "error":
        raise AssertionError(f"the page shows an error: {error_text(driver)}")
    video = driver.find_element(By.CSS_SELECTOR, f'#{IDS["result"]} video').get_attribute("src")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, f'#{IDS["downloads"]} a[href]')) >= 2, 30)
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, f'#{IDS["downloads"]} a[href]')]
    info = wait(driver, lambda d: d.find_element(By.ID, IDS["info"]).get_attribute("textContent").strip(), 30)
    return video, links, info


def error_text(driver, timeout: float = 60.0) -> str:
    """The text of the error the page shows (waiting for it)."""
    from selenium.webdriver.common.by import By

    def shown(d):
        # textContent, not .text: the toast fades in, and Selenium's .text is empty while it is invisible
        texts = [e.get_attribute("textContent") for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="toast-text"]')]
        return next((text.strip() for text in texts if text and text.strip()), None)

    return wait(driver, shown, timeout)


def download(url: str, path: Path) -> Path:
    with urllib.request.urlopen(url, timeout=30) as response:
        path.write_bytes(response.read())
    return path
