"""The widgets work where students use them: JupyterLab in a real (headless) Chromium runs the
attention chapter, a control is changed, and the picture changes.

Needs Debian's Chromium (`apt-get install chromium`, or BERTLAB_CHROMIUM=/path/to/chromium) and
Playwright for Python (in the dev extra). Playwright only drives that Chromium; `playwright
install` (a browser download) is never needed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "03_attention.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("BERTLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000  # generous: two cores are shared with the rest of the test suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unexecuted_copy(notebook: Path, directory: Path) -> Path:
    """The notebook without outputs or saved widget state: what shows up comes from the kernel."""
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, directory / notebook.name)
    return directory / notebook.name


def wait_for_server(url: str, server: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"JupyterLab did not start at {url}; its log:\n{log.read_text()[-3000:]}")


@contextmanager
def jupyterlab(tmp_path: Path):
    """A JupyterLab server on a free port serving a fresh copy of the chapter; yields its URL.
    The server runs in its own process group, which is always ended afterwards."""
    served, home = tmp_path / "served", tmp_path / "jupyter"
    served.mkdir()
    unexecuted_copy(CHAPTER, served)
    news = home / "settings" / "@jupyterlab" / "apputils-extension"  # no "news?" pop-up
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.token=", f"--ServerApp.root_dir={served}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = tmp_path / "jupyterlab.log"
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(f"{url}/api/status", server, log)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server shuts its kernels down, then exits
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_neuron_view_widget_redraws_in_a_real_browser(tmp_path):
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install it (apt-get install chromium) or set "
                    "BERTLAB_CHROMIUM to a Chromium or Chrome executable")
    with jupyterlab(tmp_path) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            # ?reset: start from an empty workspace, so no hidden tab matches the selectors
            page.goto(f"{url}/lab/workspaces/browser-test/tree/{CHAPTER.name}?reset")
            idle = page.get_by_text("Python 3 (ipykernel) | Idle")
            expect(idle).to_be_visible(timeout=TIMEOUT_MS)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()

            cell = page.locator(".jp-CodeCell").filter(has=page.locator(".widget-dropdown"))
            picture = cell.locator(".widget-output img")
            expect(picture).to_be_visible(timeout=TIMEOUT_MS)
            before = picture.get_attribute("src")
            assert before.startswith("data:image/png;base64,")
            cell.locator(".widget-dropdown select").select_option(label="2: dog")
            expect(picture).not_to_have_attribute("src", before, timeout=TIMEOUT_MS)  # the redraw
            assert picture.get_attribute("src").startswith("data:image/png;base64,")
            cell.scroll_into_view_if_needed()
        finally:  # a picture of the end, passed or failed
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_neuron_view.png"))
            browser.close()
