"""A headless Chromium driven over the DevTools protocol, for opening the HTML report the way a
reader does (the report is a JavaScript app: its entries and images exist only once it runs).

Chromium comes from the Debian packages (`apt-get install chromium`); tests skip without it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Browser:
    """One headless Chromium with one page; ``evaluate`` runs JavaScript in it."""

    def __init__(self, binary: str, timeout: float = 60.0):
        import websocket  # test dependency (pyproject's `test` extra)

        self._profile = tempfile.TemporaryDirectory(prefix="synthctx-chromium-")
        self._proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={self._profile.name}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.close()
                raise RuntimeError(f"{binary} did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout))
        page = next(p for p in pages if p.get("type") == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout,
                                               suppress_origin=True)
        self._ids = itertools.count(1)
        self.exceptions: list[str] = []   # uncaught JavaScript exceptions seen on the page
        self._send("Runtime.enable")
        self._send("Page.enable")

    def _send(self, method: str, **params: Any) -> dict:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str, ready_js: str, timeout: float = 60.0) -> None:
        """Navigate and wait until the expression ``ready_js`` is true."""
        self._send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not self.evaluate(ready_js):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: {ready_js!r} still false after {timeout} s")
            time.sleep(0.2)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        result = self._send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def close(self) -> None:
        if getattr(self, "_ws", None) is not None:
            self._ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._profile.cleanup()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _click_link(browser: Browser, text: str) -> None:
    browser.evaluate(f"Array.from(document.querySelectorAll('a')).find(a => a.innerText.trim() === {json.dumps(text)}).click()")


def _wait(browser: Browser, expression: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = browser.evaluate(expression)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _row(path: str) -> str:
    """The table row the report lists a file in: its path, or, for a file with labels
    (Snakemake's report(labels=...)), a row whose cells hold every label value."""
    return (f"(() => {{ const labels = results[{json.dumps(path)}].labels; "
            f"const want = labels ? Object.values(labels).map(String) : [{json.dumps(path)}]; "
            f"return Array.from(document.querySelectorAll('tr')).find(r => r.cells.length && "
            f"want.every(v => Array.from(r.cells).some(c => c.innerText.trim() === v))); }})()")


def report_entries_in_browser(browser: Browser, report: Path) -> dict[str, dict[str, Any]]:
    """Open a Snakemake HTML report and walk it as a reader does: every category of the
    Results menu (and subcategory, when it has several), every file listed under it, its eye
    button. Returns, per file the report embeds, its category, whether it was listed, the pixel
    width of the <img> displayed for it (0 when broken; images only) and the text its embedded
    data decodes to in the browser (other files)."""
    ready = ("document.readyState === 'complete' && typeof results !== 'undefined' && "
             "Array.from(document.querySelectorAll('a')).some(a => a.innerText.trim() === 'About')")
    browser.open(report.resolve().as_uri(), ready)
    seen: dict[str, dict[str, Any]] = {
        path: {"category": None, "listed": False, "image_width": None, "text": None}
        for path in browser.evaluate("Object.keys(results)")}
    for category in browser.evaluate("Object.keys(categories)"):
        subcategories = browser.evaluate(f"Object.keys(categories[{json.dumps(category)}])")
        for sub in subcategories:
            files = browser.evaluate(f"categories[{json.dumps(category)}][{json.dumps(sub)}]")
            for path in files:
                # From the top each time: the app's own navigation, no reliance on history.
                browser.open(report.resolve().as_uri(), ready)
                _click_link(browser, category)
                if len(subcategories) > 1:
                    _wait(browser, f"Array.from(document.querySelectorAll('a')).some(a => a.innerText.trim() === {json.dumps(sub)})")
                    _click_link(browser, sub)
                entry = seen.setdefault(path, {"category": None, "listed": False, "image_width": None, "text": None})
                entry["category"] = category
                entry["listed"] = bool(_wait(browser, f"!!{_row(path)}"))
                if not entry["listed"]:
                    continue
                if browser.evaluate(f"results[{json.dumps(path)}].mime_type").startswith("image/"):
                    name = browser.evaluate(f"results[{json.dumps(path)}].filename")
                    browser.evaluate(f"{_row(path)}.querySelector('a[iconname=eye]').click()")
                    width = _wait(browser, f"(() => {{ const i = Array.from(document.images).find(i => "
                                           f"i.src.includes('filename=' + {json.dumps(name)} + ';'));"
                                           f" return i && i.complete ? i.naturalWidth + 1 : 0; }})()")
                    entry["image_width"] = max(int(width or 0) - 1, 0)
                else:
                    entry["text"] = browser.evaluate(f"fetch(results[{json.dumps(path)}].data_uri).then(r => r.text())")
    return seen
