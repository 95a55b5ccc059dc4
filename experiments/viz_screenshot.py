"""Check that the Mesa reference model's browser view renders, with a real headless browser.

    python experiments/viz_screenshot.py [--out outputs/viz/mesa_view.png] [--steps 12]

Starts ``python -m nksim.mesa_ref.viz`` on loopback, opens the page in headless Chromium
(driven over the DevTools protocol, because the page is drawn client-side over a websocket
and Chromium's one-shot ``--screenshot`` fires before that), waits until the page shows its
controls and figures, clicks "Step" ``--steps`` times (one simulated day each), saves a
screenshot and stops the browser and the server.

Needs the viz extra (``python -m pip install -e ".[viz]"``) and Chromium (Debian:
``apt-get install -y chromium``). Not part of CI.

Offline machines: Solara's server proxies the page's JavaScript/CSS from a CDN
(cdn.jsdelivr.net/npm) into a local cache. When the CDN cannot be reached (here only the
package registries can), the missing packages are fetched from the npm registry with
``npm pack`` into that cache and the page is loaded again.
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CDN_MISS = re.compile(r"Could not load URL: '?https://cdn\.jsdelivr\.net/npm/((?:@[^/]+/)?[^/@]+@[^/]+)/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"viz_screenshot: the process stopped:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read(1)
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"viz_screenshot: {url} did not answer within {timeout:.0f} s")


def fill_cdn_cache(log: Path) -> int:
    """Fetch from the npm registry the CDN packages the server could not load; returns how many."""
    from solara.server import settings

    cache = Path(settings.assets.proxy_cache_dir)
    todo = sorted(s for s in set(CDN_MISS.findall(log.read_text(errors="replace"))) if not (cache / s).exists())
    if todo and not shutil.which("npm"):
        print("viz_screenshot: the CDN is unreachable and npm is not installed", file=sys.stderr)
        return 0
    for spec in todo:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"viz_screenshot: npm pack {spec} failed: {out.stderr.strip()[:300]}", file=sys.stderr)
                continue
            with tarfile.open(Path(tmp) / out.stdout.strip().splitlines()[-1]) as tf:
                for m in tf.getmembers():
                    m.name = m.name.split("/", 1)[1] if "/" in m.name else ""  # drop "package/"
                    if m.name and (m.isfile() or m.isdir()):
                        tf.extract(m, cache / spec, filter="data")
        print(f"viz_screenshot: cached {spec} from the npm registry")
    return len(todo)


class Page:
    """A minimal DevTools-protocol client for one Chromium tab."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, **params):
        """Send one DevTools command and wait (60 s per message) for its reply; returns its ``result``."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        """Evaluate a JavaScript expression in the page; returns its value (by value)."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/viz/mesa_view.png")
    ap.add_argument("--steps", type=int, default=12, help="days to step before the screenshot")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the page")
    args = ap.parse_args(argv)
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chrome is None:
        sys.exit("viz_screenshot: no chromium found (apt-get install -y chromium)")
    out = (ROOT / args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    port, cdp_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/"
    tmp = Path(tempfile.mkdtemp(prefix="nksim_viz_"))
    log = tmp / "server.log"
    with open(log, "w") as fh:  # `python -m nksim.mesa_ref.viz` execs the Solara server in this process
        server = subprocess.Popen([sys.executable, "-m", "nksim.mesa_ref.viz", "--host", "127.0.0.1",
                                   "--port", str(port)], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    browser = None
    try:
        wait_http(url, server, 180, log)
        browser = subprocess.Popen(
            [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars", "--window-size=1400,1000",
             f"--remote-debugging-port={cdp_port}", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{cdp_port}/json/version", browser, 60, log)
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/list").read())
        from websockets.sync.client import connect

        ws_url = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        with connect(ws_url, max_size=None, open_timeout=30) as ws:
            shoot(Page(ws), url, out, log, args)
    finally:
        for proc in (browser, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def shoot(page: Page, url: str, out: Path, log: Path, args) -> None:
    """Load the page (filling the CDN cache if needed), step the model, take the screenshot."""
    page.call("Page.enable")
    page.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
    ready = "document.body && document.body.innerText.includes('Model Parameters') && document.images.length >= 3"
    for _ in range(5):
        page.call("Page.navigate", url=url)
        t0 = time.time()
        while time.time() - t0 < args.timeout and not page.js(ready):
            time.sleep(1)
        if page.js(ready):
            break
        if fill_cdn_cache(log) == 0:
            sys.exit(f"viz_screenshot: the page did not render within {args.timeout:.0f} s; "
                     f"body text: {page.js('document.body && document.body.innerText')!r:.300}")
    step_button = ("(() => { const b = [...document.querySelectorAll('button')]"
                   ".find(e => e.innerText.trim().toUpperCase() === 'STEP'); if (b) b.click(); return !!b; })()")
    for _ in range(args.steps):
        if not page.js(step_button):
            print("viz_screenshot: no Step button found", file=sys.stderr)
            break
        time.sleep(1.0)
    time.sleep(3.0)
    shot = page.call("Page.captureScreenshot", format="png")
    out.write_bytes(base64.b64decode(shot["data"]))
    print(f"viz_screenshot: wrote {out.relative_to(ROOT)} ({out.stat().st_size} bytes); "
          f"page text starts: {page.js('document.body.innerText')[:120]!r}")


if __name__ == "__main__":
    raise SystemExit(main())
