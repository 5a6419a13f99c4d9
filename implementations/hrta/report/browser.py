"""Open a report in headless Chromium and check it the way a reader's browser would see it.

Chromium is driven through its DevTools protocol over a WebSocket (a minimal RFC 6455 client
on the standard library, so nothing beyond Chromium itself is needed). :func:`check_page`
loads a local HTML file in a fresh profile with networking off, and returns what went wrong:
console errors, uncaught exceptions, log entries of level error, requests that left the file
(a self-contained report makes none besides ``data:`` URLs) or failed, and images that did not
decode. It also saves PNG screenshots of the first screen and of the whole page.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", "--remote-debugging-port=0",
         "--remote-allow-origins=*")
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = (1280, 1000)


class BrowserError(RuntimeError):
    """Chromium could not be started or driven."""


def find_chromium() -> str | None:
    """Path of a Chromium (or Chrome) binary on PATH, or None."""
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


APT_LOCK = "/tmp/hrta-bench-apt.lock"
"""Taken around apt-get, as tests/slurm/cluster.sh does: the SLURM test may install packages
in another pytest worker at the same moment, and apt-get fails at once on a held lock."""


def install_chromium(timeout: float = 900) -> tuple[str | None, str]:
    """Install Debian's ``chromium`` with apt-get when it is missing (root only).

    Returns (binary path or None, reason when None)."""
    found = find_chromium()
    if found:
        return found, ""
    if not shutil.which("apt-get"):
        return None, "chromium is not installed and apt-get is not available"
    if os.geteuid() != 0:
        return None, "chromium is not installed and installing it needs root (apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", f"DPkg::Lock::Timeout={int(timeout)}"]  # for any other apt user
    with open(APT_LOCK, "a") as lock:  # held for both commands
        fcntl.flock(lock, fcntl.LOCK_EX)
        for cmd in (["apt-get", *wait, "update"],
                    ["apt-get", *wait, "install", "-y", "--no-install-recommends", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=env, check=False)
            if done.returncode != 0:
                raise BrowserError(f"{' '.join(cmd)} failed ({done.returncode}): "
                                   f"{done.stderr.strip()[-800:]}")
    found = find_chromium()
    if not found:
        raise BrowserError("apt-get installed chromium but no chromium binary is on PATH")
    return found, ""


# ---------------------------------------------------------------------------- WebSocket


class WebSocket:
    """A blocking RFC 6455 client: text frames out (masked), frames in (unmasked, possibly
    fragmented); enough for the DevTools protocol on localhost."""

    def __init__(self, url: str, timeout: float = 60.0):
        if not url.startswith("ws://"):
            raise BrowserError(f"websocket url: expected ws://..., got {url!r}")
        hostport, _, path = url[len("ws://"):].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port or 80)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError("websocket: connection closed during the handshake")
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0] + b" ":
            raise BrowserError(f"websocket: handshake refused: {status[:200]!r}")
        self.buffer = bytearray(rest)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(1 << 16, n - len(self.buffer)))
            if not chunk:
                raise BrowserError("websocket: connection closed")
            self.buffer.extend(chunk)
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytearray([0x81])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def receive(self) -> str:
        parts = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise BrowserError("websocket: closed by the browser")
            if opcode in (0x9, 0xA):       # ping / pong: not used by DevTools, ignore
                continue
            parts.append(data)
            if b0 & 0x80:
                return b"".join(parts).decode("utf-8")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class DevTools:
    """Commands and events of one DevTools target."""

    def __init__(self, ws: WebSocket):
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, timeout: float = 60.0, **params) -> dict:
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.receive())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise BrowserError(f"{method}: no answer within {timeout} s")

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        for msg in self.events:
            if msg["method"] == event:
                return msg
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.receive())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == event:
                    return msg
        raise BrowserError(f"{event}: not seen within {timeout} s")


# ---------------------------------------------------------------------------- the check


@dataclass
class PageCheck:
    """What :func:`check_page` found. ``problems`` lists every console error, exception, error
    log entry, external or failed request and broken image (empty: the page is fine)."""

    title: str
    images: int
    broken_images: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    page_height: int = 0
    screenshots: list[Path] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return ([f"broken image: {s}" for s in self.broken_images]
                + [f"console: {s}" for s in self.console_errors]
                + [f"external request: {s}" for s in self.external_requests]
                + [f"failed request: {s}" for s in self.failed_requests])


IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.src.slice(0, 60), "
             "alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight})))")


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrowserError(f"chromium exited with status {proc.returncode} at start-up")
        if marker.is_file():
            lines = marker.read_text().splitlines()
            if lines and lines[0].strip().isdigit():
                return int(lines[0])
        time.sleep(0.1)
    raise BrowserError(f"chromium did not open its DevTools port within {timeout} s")


def _page_websocket(port: int, timeout: float) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.loads(answer.read())
        pages = [t for t in targets if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise BrowserError("chromium shows no page target")


def _describe(event: dict) -> str | None:
    """The text of an error-level console / log / exception event, else None."""
    method, p = event["method"], event.get("params", {})
    if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        return " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
    if method == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails", {})
        return d.get("exception", {}).get("description") or d.get("text", "exception")
    if method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
        e = p["entry"]
        return f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip()
    return None


def _stop(proc: subprocess.Popen) -> None:
    """End the Chromium we started and its helpers (its own process group, see Popen's
    start_new_session), gently first."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def check_page(html_path: Path | str, screenshot_dir: Path | str | None = None,
               binary: str | None = None, timeout: float = 120.0) -> PageCheck:
    """Load ``html_path`` in headless Chromium (fresh profile, networking off) and check it;
    save ``screenshot.png`` (first screen, 1280 x 1000) and ``screenshot-full.png`` (the whole
    page at half scale) into ``screenshot_dir`` when given."""
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise BrowserError(f"html_path: expected an HTML file, got {str(html_path)!r}")
    binary = binary or find_chromium()
    if binary is None:
        raise BrowserError("chromium is not installed (apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="hrta-chromium-"))
    log = open(profile.parent / f"{profile.name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ws = None
    try:
        port = _devtools_port(profile, proc, timeout)
        ws = WebSocket(_page_websocket(port, timeout), timeout=timeout)
        tools = DevTools(ws)
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                   deviceScaleFactor=1, mobile=False)
        tools.events.clear()
        url = html_path.as_uri()
        tools.call("Page.navigate", url=url, timeout=timeout)
        tools.wait_for("Page.loadEventFired", timeout=timeout)
        images = json.loads(tools.call("Runtime.evaluate", expression=IMAGES_JS,
                                       returnByValue=True)["result"]["value"])
        title = tools.call("Runtime.evaluate", expression="document.title",
                           returnByValue=True)["result"]["value"]
        metrics = tools.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width, height = int(size["width"]), int(size["height"])
        shots = []
        if screenshot_dir is not None:
            out = Path(screenshot_dir)
            out.mkdir(parents=True, exist_ok=True)
            first = tools.call("Page.captureScreenshot", format="png", timeout=timeout)
            (out / "screenshot.png").write_bytes(base64.b64decode(first["data"]))
            full = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": width,
                                    "height": min(height, 32000), "scale": 0.5},
                              timeout=timeout)
            (out / "screenshot-full.png").write_bytes(base64.b64decode(full["data"]))
            shots = [out / "screenshot.png", out / "screenshot-full.png"]
        errors = [text for e in tools.events if (text := _describe(e)) is not None]
        external, failed = [], []
        for e in tools.events:
            p = e.get("params", {})
            if e["method"] == "Network.requestWillBeSent":
                req = p.get("request", {}).get("url", "")
                if not (req.startswith("data:") or req == url):
                    external.append(req[:120])
            if e["method"] == "Network.loadingFailed":
                failed.append(f"{p.get('errorText')} ({p.get('type')})")
        broken = [f"{i['alt'] or i['src']} (complete={i['complete']}, {i['w']}x{i['h']})"
                  for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
        with contextlib.suppress(BrowserError, OSError):
            tools.call("Browser.close", timeout=10)
        return PageCheck(title=title, images=len(images), broken_images=broken,
                         console_errors=errors, external_requests=external,
                         failed_requests=failed, page_height=height, screenshots=shots)
    finally:
        if ws is not None:
            ws.close()
        _stop(proc)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(profile.parent / f"{profile.name}.log")
