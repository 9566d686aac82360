"""Load a page in headless Chromium and report what a person would see: the DOM once a
condition holds, every console error, and a screenshot.

    python scripts/headless.py URL [--until JS] [--timeout 30] [--screenshot out.png]
                               [--after JS] [--size 1400x1000] [--chromium /usr/bin/chromium]

Prints one JSON object: ``{"ok": bool, "waited": s, "errors": [...], "dom": "..."}``.
``ok`` is false if ``--until`` (a JavaScript expression) never became true in time.
``--after`` is evaluated once it is (to click something before the screenshot, say).

It speaks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (file descriptors 3
and 4, one JSON message per NUL-terminated frame) rather than over a websocket: no port to
open, no client library, and it works inside a network namespace as anywhere else. Errors
are what DevTools' console shows in red: ``console.error`` calls, uncaught exceptions, and
the browser's own log entries of level error (a resource that failed to load, a blocked
script). Debian's ``chromium`` package is enough (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The path of a Chromium, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium driven over the DevTools pipe."""

    def __init__(self, chromium: str, size: tuple[int, int]) -> None:
        self._profile = tempfile.mkdtemp(prefix="p2p-chromium-")
        commands_r, self._to_browser = os.pipe()  # not inherited: close-on-exec
        self._from_browser, replies_w = os.pipe()
        argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--mute-audio",
                f"--window-size={size[0]},{size[1]}", "about:blank"]
        # The browser reads commands on fd 3 and writes replies on fd 4; dup2 makes those
        # two inheritable, and nothing else of ours is.
        self.pid = os.posix_spawn(chromium, argv, dict(os.environ), file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, commands_r, 3), (os.POSIX_SPAWN_DUP2, replies_w, 4)])
        os.close(commands_r)
        os.close(replies_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Call ``method`` and wait for its result (events meanwhile go to ``events``)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline - time.monotonic())
            if reply is None:
                raise TimeoutError(f"{method}: no answer within {timeout} s")
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, timeout))
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe (did it crash?)")
            self._buffer += chunk
        frame, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(frame)
        return message

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            event = self._receive(left)
            if event is None:
                return
            self.events.append(event)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        deadline = time.monotonic() + 10
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.05)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """The errors DevTools' console would show, in words."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            found.append("console.error: " + " ".join(args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            found.append(f"uncaught: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
    return found


def load(url: str, *, until: str = "true", timeout: float = 30.0,
         screenshot: Path | None = None, size: tuple[int, int] = (1400, 1000),
         chromium: str | None = None, settle: float = 0.5,
         after: str | None = None) -> dict[str, Any]:
    """Open ``url``, wait until ``until`` is true, and return the report (see above)."""
    path = chromium or find_chromium()
    if path is None:
        raise FileNotFoundError("no chromium: install it (apt-get install chromium)")
    browser = Browser(path, size)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {
            "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
            session=session)
        began = time.monotonic()
        browser.send("Page.navigate", {"url": url}, session=session)
        ok = _wait(browser, session, until, began + timeout)
        waited = time.monotonic() - began
        if ok and after:
            _evaluate(browser, session, after)
        browser.pump(settle)  # late errors (a failed fetch after the first paint)
        dom = _evaluate(browser, session, "document.documentElement.outerHTML")
        if screenshot is not None:
            shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return {"ok": ok, "waited": round(waited, 3), "errors": console_errors(browser.events),
                "dom": dom}
    finally:
        browser.close()


def _evaluate(browser: Browser, session: str, expression: str) -> Any:
    result = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                          session=session)
    return result.get("result", {}).get("value")


def _wait(browser: Browser, session: str, until: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError):
            if _evaluate(browser, session, f"Boolean({until})"):
                return True
        browser.pump(0.2)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--until", default="true", help="a JavaScript expression to wait for")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--after", help="JavaScript to run once --until holds")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds to wait after that, before the screenshot")
    parser.add_argument("--size", default="1400x1000", help="viewport WIDTHxHEIGHT")
    parser.add_argument("--chromium", help="the browser (default: chromium on PATH)")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    report = load(args.url, until=args.until, timeout=args.timeout, screenshot=args.screenshot,
                  size=(width, height), chromium=args.chromium, settle=args.settle,
                  after=args.after)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
