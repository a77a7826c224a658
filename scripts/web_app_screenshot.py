"""The README's screenshot of the web app: ``mmldm serve`` with the built-in model, a2v on a real
recording, in headless Chromium (Debian's ``chromium`` and ``chromium-driver``).

    .venv/bin/python scripts/web_app_screenshot.py --out docs/images/serve.png

Needs ``make assets`` (assets/audio/sax.wav) and the test extra (Gradio, Selenium).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import browser  # tests/browser.py drives the page for the tests too


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "serve.png")
    parser.add_argument("--audio", type=Path, default=ROOT / "assets" / "audio" / "sax.wav")
    parser.add_argument("--start", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=3.2)
    parser.add_argument("--model", default=None, help="model folder or shipped name (default: the built-in model)")
    args = parser.parse_args()
    reason = browser.missing()
    if reason:
        sys.exit(f"web_app_screenshot: {reason}")
    if not args.audio.is_file():
        sys.exit(f"web_app_screenshot: {args.audio} is missing: run `make assets`")
    with tempfile.TemporaryDirectory(prefix="mmldm-screenshot-") as work:
        work = Path(work)
        port = browser.free_port()
        log = work / "server.log"
        server = browser.serve(port, log, model=args.model, gradio_cache=work / "gradio")
        driver = None
        try:
            url = f"http://127.0.0.1:{port}/"
            browser.wait_until_serving(url, server, log)
            driver = browser.chromium(work / "profile", width=1280, height=1120)
            browser.open_page(driver, url)
            browser.choose_task(driver, "a2v")
            browser.upload(driver, "audio", args.audio)
            browser.set_number(driver, "start", args.start)
            browser.set_number(driver, "seconds", args.seconds)
            started = time.perf_counter()
            browser.click_generate(driver)
            _, _, info = browser.result(driver, timeout=600)
            print(f"generated in {time.perf_counter() - started:.1f} s: {info}")
            # show a frame from the middle of the result rather than its first
            driver.execute_script("const v = document.querySelector('#result video'); v.pause(); "
                                  "v.currentTime = v.duration / 2;")
            time.sleep(1.0)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            partial = args.out.with_name(args.out.name + ".partial.png")
            if not driver.save_screenshot(str(partial)):
                sys.exit("web_app_screenshot: Chromium took no screenshot")
            partial.replace(args.out)
            print(f"wrote {args.out}")
        finally:
            if driver is not None:
                driver.quit()
            browser.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
