"""A tiny Chrome DevTools Protocol client for the browser tests: headless Chromium driven over
``--remote-debugging-pipe`` (file descriptors 3 and 4, one JSON message per NUL-terminated
frame), so no websocket library is needed.

Usage::

    with Browser.launch() as browser:
        page = browser.new_page(width=1000, height=700)
        page.goto("file:///tmp/page.html")
        page.evaluate("document.title")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("install it with `apt-get install -y --no-install-recommends chromium` "
                "(Debian/Ubuntu; the binary is `chromium` or `chromium-browser`)")


def find_browser() -> str | None:
    """The first Chromium-like browser on PATH (``$CHROMIUM`` wins when it is set)."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return shutil.which(explicit) or (explicit if os.path.exists(explicit) else None)
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class CDPError(RuntimeError):
    pass


class Browser:
    """One headless Chromium process and its DevTools pipe."""

    def __init__(self, process: subprocess.Popen, write_fd: int, read_fd: int,
                 profile: tempfile.TemporaryDirectory, timeout: float):
        self.process, self._write_fd, self._read_fd = process, write_fd, read_fd
        self._profile, self.timeout = profile, timeout
        self._buffer, self._next_id = b"", 0
        self.events: list[dict[str, Any]] = []

    @classmethod
    def launch(cls, executable: str | None = None, timeout: float = 30.0) -> Browser:
        executable = executable or find_browser()
        if executable is None:
            raise FileNotFoundError(f"no Chromium on PATH: {INSTALL_HINT}")
        profile = tempfile.TemporaryDirectory(prefix="cdp-profile-")
        log = tempfile.TemporaryFile()  # the browser's stderr, shown when it fails to start
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # The child's ends go above 10, so the shell's redirections onto 3 and 4 cannot clobber
        # one another; bash (not preexec_fn, unsafe with threads; dash allows only fds 0-9)
        # moves them and execs the browser.
        child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        flags = ["--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                 "--disable-extensions", "--hide-scrollbars", "--mute-audio",
                 "--disable-background-networking", f"--user-data-dir={profile.name}",
                 "about:blank"]
        redirect = f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-'
        process = subprocess.Popen([shutil.which("bash") or "/bin/bash", "-c", redirect, "bash",
                                    executable, *flags],
                                   pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log)
        os.close(child_r)
        os.close(child_w)
        browser = cls(process, to_browser_w, from_browser_r, profile, timeout)
        try:
            browser.send("Browser.getVersion")
        except Exception as error:
            browser.close()
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise CDPError(f"{executable} did not start: {error}\n" + "\n".join(tail)) from error
        finally:
            log.close()
        return browser

    # -- the wire ---------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._read_fd], [], [], left)
            if ready:
                chunk = os.read(self._read_fd, 1 << 16)
                if not chunk:
                    raise CDPError(f"Chromium closed the pipe (exit code {self.process.poll()})")
                self._buffer += chunk
        frame, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(frame)

    def send(self, method: str, params: dict[str, Any] | None = None,
             session_id: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its answer; events seen meanwhile go to ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise CDPError(f"{method}: {answer['error']}")
            return answer.get("result", {})

    def wait_for_event(self, method: str, session_id: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session_id:
                    return self.events.pop(i).get("params", {})
            self.events.append(self._read_message(deadline))

    # -- pages ------------------------------------------------------------------------------
    def new_page(self, width: int = 1000, height: int = 700) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self.send("Browser.close")
                except Exception:
                    pass
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            for fd in (self._write_fd, self._read_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab, reached through a flattened session of the browser's pipe."""

    def __init__(self, browser: Browser, session_id: str):
        self.browser, self.session_id = browser, session_id

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session_id)

    def goto(self, url: str) -> None:
        self.browser.events.clear()
        self.send("Page.navigate", {"url": url})
        self.browser.wait_for_event("Page.loadEventFired", self.session_id)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (exceptions become ``CDPError``)."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise CDPError(f"{expression!r}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def center_of(self, selector: str) -> tuple[float, float]:
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        return box[0], box[1]

    def mouse(self, kind: str, x: float, y: float, clicks: int = 0) -> None:
        params: dict[str, Any] = {"type": kind, "x": x, "y": y}
        if kind != "mouseMoved":
            params.update(button="left", clickCount=clicks or 1)
        self.send("Input.dispatchMouseEvent", params)

    def hover(self, selector: str) -> None:
        self.mouse("mouseMoved", *self.center_of(selector))

    def click(self, selector: str) -> None:
        x, y = self.center_of(selector)
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y)
        self.mouse("mouseReleased", x, y)

    def key(self, key: str, code: str | None = None) -> None:
        """Press and release one key (``"Tab"``, ``"Enter"``, ``"Escape"``...)."""
        codes = {"Tab": 9, "Enter": 13, "Escape": 27, " ": 32}
        params = {"key": key, "code": code or key, "windowsVirtualKeyCode": codes.get(key, 0)}
        if key == "Enter":
            params["text"] = "\r"
        # Like Puppeteer: a key without text goes down as "rawKeyDown" (Tab then moves focus).
        down = "keyDown" if "text" in params else "rawKeyDown"
        self.send("Input.dispatchKeyEvent", {"type": down, **params})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **params})

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
