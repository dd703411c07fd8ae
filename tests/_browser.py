"""Headless Chromium for the report's browser test: find it (or install Debian's ``chromium``), start it,
and drive one page over the DevTools protocol (CDP).

Why CDP rather than ``chromium --screenshot``: one browser session gives the console messages (the
``Runtime`` and ``Log`` domains: console.error calls, uncaught exceptions, resources that failed to
load), a JavaScript probe of what is laid out on screen, and the screenshot, all of the same page
load; scraping ``--enable-logging=stderr`` output depends on Chromium's log format.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_PACKAGE = "chromium"  # Debian's package; its binary is /usr/bin/chromium


def find_chromium() -> str | None:
    env = os.environ.get("FLASHBENCH_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium(timeout: int = 900) -> tuple[str | None, str]:
    """Install Debian's chromium with apt when it is missing and we may; returns (path or None, why not)."""
    path = find_chromium()
    if path:
        return path, ""
    if not shutil.which("apt-get"):
        return None, "no chromium on PATH and no apt-get to install it (set FLASHBENCH_CHROMIUM to a Chromium binary)"
    if os.geteuid() != 0:
        return None, f"no chromium on PATH; installing it needs root (apt-get install -y {APT_PACKAGE})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # another apt run (a colleague's, unattended-upgrades) holds the lock: wait for it rather than fail
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", APT_PACKAGE]
    log = []
    for cmd in (install, ["apt-get", "-o", "DPkg::Lock::Timeout=600", "update"], install):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except (OSError, subprocess.SubprocessError) as e:
            log.append(f"{' '.join(cmd)}: {e}")
            continue
        log.append(f"{' '.join(cmd)}: exit {res.returncode}: {(res.stdout + res.stderr)[-400:]}")
        if cmd is install and res.returncode == 0 and find_chromium():
            return find_chromium(), ""
    return None, "could not install chromium with apt-get: " + " | ".join(log)[-1200:]


class CDPError(RuntimeError):
    pass


class Page:
    """One page of a running Chromium, driven over its DevTools websocket."""

    def __init__(self, ws_url: str):
        import websocket  # websocket-client (PyPI)

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._next_id += 1
        msg_id = self._next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise CDPError(f"{method}: no answer in {timeout} s")

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        for i, msg in enumerate(self.events):
            if msg["method"] == event:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == event:
                self.events.append(msg)  # keep it in the log too
                return msg
            if "method" in msg:
                self.events.append(msg)
        raise CDPError(f"no {event} in {timeout} s")

    def drain(self, seconds: float = 0.3) -> None:
        """Collect the events that arrive within ``seconds`` (late console messages)."""
        self.ws.settimeout(seconds)
        try:
            while True:
                msg = json.loads(self.ws.recv())
                if "method" in msg:
                    self.events.append(msg)
        except Exception:  # websocket timeout: nothing more
            pass
        finally:
            self.ws.settimeout(60)

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise CDPError(f"evaluate: {res['exceptionDetails']}")
        return res["result"].get("value")

    def console_errors(self) -> list[str]:
        """Every error the page reported: console.error/assert, uncaught exceptions, failed loads."""
        out = []
        for msg in self.events:
            method, p = msg["method"], msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
            elif method == "Network.loadingFailed" and not p.get("canceled"):
                out.append(f"network: {p.get('errorText')} ({p.get('type')})")
        return out

    def screenshot(self, path: Path, width: int = 1280) -> tuple[int, int]:
        """A full-page PNG screenshot; returns its (width, height) in CSS pixels."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = int(min(size["height"], 16000))  # Chromium's texture limit
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
            timeout=120,
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return width, height


@contextmanager
def chromium_page(binary: str, *, width: int = 1280, height: int = 900) -> Iterator[Page]:
    """Start headless Chromium (no sandbox: tests run as root in containers) and yield a CDP page."""
    profile = tempfile.mkdtemp(prefix="fb-chromium-")
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--mute-audio",
        f"--window-size={width},{height}",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    page = None
    try:
        port_file = Path(profile) / "DevToolsActivePort"  # Chromium writes its chosen port here
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise CDPError(f"chromium exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise CDPError("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            targets = json.load(r)
        target = next(t for t in targets if t.get("type") == "page")
        page = Page(target["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        yield page
    finally:
        if page is not None:
            try:
                page.send("Browser.close", timeout=10)
            except Exception:
                pass
            page.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


def open_file(page: Page, path: Path, timeout: float = 60) -> None:
    """Navigate to a local file and wait until it has loaded (images included)."""
    page.send("Page.navigate", {"url": Path(path).resolve().as_uri()})
    page.wait_for("Page.loadEventFired", timeout=timeout)
    page.drain(0.5)


# The probe run in the page: what is laid out on screen, not merely present in the DOM.
VISIBILITY_PROBE = r"""
(() => {
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none' && parseFloat(s.opacity) > 0;
  };
  const inClosedDetails = (el) => { for (let p = el.parentElement; p; p = p.parentElement) { if (p.tagName === 'DETAILS' && !p.open && !(p.firstElementChild && p.firstElementChild.contains(el))) return true; } return false; };
  const tables = [...document.querySelectorAll('table')].filter(t => !inClosedDetails(t));
  const images = [...document.querySelectorAll('img')].filter(i => !inClosedDetails(i));
  const svgs = [...document.querySelectorAll('svg')].filter(s => !inClosedDetails(s));
  return {
    title: document.title,
    tables: tables.length,
    tables_hidden: tables.filter(t => !shown(t)).map(t => t.outerHTML.slice(0, 120)),
    table_cells: tables.reduce((n, t) => n + t.querySelectorAll('td').length, 0),
    images: images.length,
    images_broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    images_hidden: images.filter(i => !shown(i)).map(i => i.alt),
    svgs: svgs.length,
    svgs_hidden: svgs.filter(s => !shown(s)).map(s => s.getAttribute('aria-label')),
    scroll_width: document.documentElement.scrollWidth,
    scripts: document.scripts.length,
    links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  };
})()
"""
