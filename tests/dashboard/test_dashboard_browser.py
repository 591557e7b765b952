"""`tuner dashboard` served on loopback and opened in headless Chromium, driven over the DevTools protocol.

Streamlit draws the page only after its websocket connects, so the test waits for the rendered
Pareto chart itself rather than for a time budget. The screenshot is kept as a test artifact.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from tuner import results

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "results" / "test-artifacts" / "dashboard.png"
WIDTH, HEIGHT = 1400, 2400
# The Pareto chart's markers (plotly draws each as an SVG path.point), once the app has finished its run.
PARETO_POINTS = """(() => {
  if (document.querySelector('[data-testid="stStatusWidget"]')) return -1;
  const chart = [...document.querySelectorAll('.js-plotly-plot')]
    .find(c => [...c.querySelectorAll('.legendtext')].some(t => t.textContent === 'Pareto front'));
  return chart ? chart.querySelectorAll('.scatterlayer path.point').length : -1;
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(searched, tmp_path) -> Iterator[str]:
    """`tuner dashboard` over the searched study, on a free loopback port; stopped with its streamlit child."""
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("w")
    tuner = Path(sys.executable).with_name("tuner")
    proc = subprocess.Popen([str(tuner), "dashboard", "--storage", searched.storage, "--port", str(port)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, tmp_path / "dashboard.log")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tuner dashboard exited: {log.read_text()}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"tuner dashboard did not answer on {url} within {timeout_s} s: {log.read_text()}")


class Page:
    """One headless Chromium tab, driven over the Chrome DevTools protocol."""

    def __init__(self, browser: ClientConnection):
        self.browser, self.last_id = browser, 0
        self.session: str | None = None  # browser-level commands until a tab is attached

    def call(self, method: str, **params) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self.browser.send(json.dumps(message))
        while True:  # events of the tab arrive in between; only our answer matters
            message = json.loads(self.browser.recv(timeout=60))
            if message.get("id") == self.last_id:
                assert "error" not in message, message["error"]
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    def wait_for(self, expression: str, done, timeout_s: float = 60):
        """Evaluate until `done(value)`; the last value either way."""
        deadline = time.monotonic() + timeout_s
        value = self.evaluate(expression)
        while not done(value) and time.monotonic() < deadline:
            time.sleep(0.5)
            value = self.evaluate(expression)
        return value

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


@pytest.fixture
def page(tmp_path) -> Iterator[Page]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium missing: `apt-get install -y chromium` (scripts/setup.sh installs it)")
    log_path = tmp_path / "chromium.log"
    with tempfile.TemporaryDirectory(prefix="tuner-chromium-") as profile, log_path.open("w") as log:
        proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
                                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        try:
            with connect(_devtools_endpoint(proc, log_path), max_size=None) as browser:
                page = Page(browser)
                target = page.call("Target.createTarget", url="about:blank")["targetId"]
                page.session = page.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
                page.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                          mobile=False)
                yield page
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the browser and its renderer, GPU and zygote processes
            proc.wait(timeout=30)


def _devtools_endpoint(proc: subprocess.Popen, log: Path, timeout_s: float = 30) -> str:
    """Chromium logs its DevTools websocket address once it listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"DevTools listening on (ws://\S+)", log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.2)
    pytest.fail(f"chromium opened no DevTools port: {log.read_text()[-2000:]}")


def test_the_served_dashboard_draws_every_completed_trial_on_the_pareto_chart(searched, served, page):
    completed = len(results.completed(results.trials_frame(searched.study)))
    page.call("Page.navigate", url=served)
    points = page.wait_for(PARETO_POINTS, lambda n: n >= completed)
    page.screenshot(SCREENSHOT)
    print(f"dashboard screenshot: {SCREENSHOT}")
    assert points == completed, f"the Pareto chart shows {points} points for {completed} completed trials"
    assert "Study dash" in page.evaluate("document.body.innerText")
