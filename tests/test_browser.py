"""The views work where students use them: JupyterLab 4 (and Notebook 7) in a real, headless
Chromium runs a notebook of the four attention views and chapter 3, and each view responds to the
reader in the browser — a menu redraws it, hovering a token in the head view shows that token's
lines, a click on a token makes it the neuron view's query (and the kernel hears of it), a click
on a head in the model view enlarges that head — with nothing from a CDN.

Timings are not asserted here (they depend on the machine); benchmarks/bench_views.py measures
them with `measure()` below and benchmarks/RESULTS.md records them.

Needs Debian's Chromium (`apt-get install chromium`, or BERTLAB_CHROMIUM=/path/to/chromium) and
Playwright for Python (in the dev extra). Playwright only drives that Chromium; `playwright
install` (a browser download) is never needed.
"""

import json
import os
import re
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

# The views' data: random, seeded, the shapes of chapter 10's sentence pair in MiniLM (6 layers,
# 12 heads, 20 tokens, d = 32). The notebook runs this code and so does the test, to know what the
# browser must show.
VIEWS_DATA = """\
import torch
from bertlab import viz

TOKENS = ["[CLS]", "who", "'", "s", "there", "?", "[SEP]", "nay", ",", "answer", "me", ":",
          "stand", ",", "and", "un", "##fold", "yourself", ".", "[SEP]"]
L, H, T, D = 6, 12, len(TOKENS), 32
g = torch.Generator().manual_seed(0)
attn = tuple((2 * torch.randn(1, H, T, T, generator=g)).softmax(-1) for _ in range(L))
queries = tuple(torch.randn(1, H, T, D, generator=g) for _ in range(L))
keys = tuple(torch.randn(1, H, T, D, generator=g) for _ in range(L))"""

VIEWS_CELLS = [
    VIEWS_DATA,
    "neuron = viz.neuron_view_widget(queries, keys, TOKENS, layer=1, head=2, query=0)\nneuron",
    # what the kernel knows of the neuron view's query, shown back in the browser
    "import ipywidgets as widgets\n\nchosen = widgets.Label().add_class('chosen-query')\n"
    "_ = widgets.dlink((neuron, 'query'), (chosen, 'value'), str)\nchosen",
    "viz.head_view_widget(attn, TOKENS, layer=0)",
    "viz.model_view_widget(attn, TOKENS)",
    "viz.attention_heatmap_widget(attn, TOKENS, layer=0, head=0)",
]


def views_data() -> dict:
    """The names VIEWS_DATA defines, computed here."""
    names = {}
    exec(VIEWS_DATA, names)
    return names


def write_views_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code in VIEWS_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


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
def jupyterlab(directory: Path, served: Path):
    """A Jupyter server (JupyterLab 4 and Notebook 7) on a free port serving the folder `served`;
    yields its URL. It runs in its own process group, which is always ended afterwards."""
    home = directory / "jupyter"
    news = home / "settings" / "@jupyterlab" / "apputils-extension"  # no "news?" pop-up
    news.mkdir(parents=True, exist_ok=True)
    (news / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "OMP_NUM_THREADS": "1"}
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.token=", f"--ServerApp.root_dir={served}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = directory / "jupyterlab.log"
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


@contextmanager
def chromium():
    """A headless Chromium page, 1400 x 1000; yields (page, errors): errors collects the page's
    uncaught exceptions (message and stack; the views' code runs from a blob: URL)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install it (apt-get install chromium) or set "
                    "BERTLAB_CHROMIUM to a Chromium or Chrome executable")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            errors = []
            page.on("pageerror", lambda error: errors.append(f"{error.message}\n{error.stack}"))
            yield page, errors
        finally:
            browser.close()


def run_all(page, url: str, name: str, app: str = "lab") -> None:
    """Open notebook `name` in JupyterLab (app="lab") or Notebook 7 (app="notebooks") and run
    every cell."""
    if app == "lab":  # ?reset: an empty workspace, so no hidden tab matches the selectors
        page.goto(f"{url}/lab/workspaces/browser-test/tree/{name}?reset")
        expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=TIMEOUT_MS)
    else:
        page.goto(f"{url}/notebooks/{name}")
        expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_attached(
            timeout=TIMEOUT_MS)
    first = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for _ in range(3):  # a click that comes before the notebook is wired to its kernel is lost
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        try:  # the first cell queued ([*]) or run ([1])
            expect(first).to_have_text(re.compile(r"\[[\d*]+\]"), timeout=20_000)
            return
        except AssertionError:
            continue
    raise AssertionError(f"Run All Cells did not run {name}")


def view(page, kind: str):
    """The root element of the (first) view of that kind: heatmap, head, model or neuron."""
    root = page.locator(f".bl-{kind}-view").first
    expect(root).to_have_attribute("data-drawn", "1", timeout=TIMEOUT_MS)
    return root


def shown_numbers(root, column: int) -> list[str]:
    """The neuron view's q·k/√d (column 0) or softmax (column 1) numbers, as shown."""
    return root.locator(".bl-numbers").nth(column).locator(".bl-number").all_text_contents()


# In the page: perform each action (a menu change or a mouse event) on a view and time it with
# performance.now(), from just before the event is dispatched to the view's redraw (the
# MutationObserver sees data-drawn change, after the synchronous redraw) and to the frame after
# the one that shows it (two requestAnimationFrames later).
MEASURE_JS = """
async ({ kind, actions }) => {
  const root = document.querySelector(`.bl-${kind}-view`);
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const times = [];
  for (const action of actions) {
    await frame();  // start from a quiet frame
    const redrawn = new Promise((resolve) => {
      const observer = new MutationObserver(() => {
        observer.disconnect();
        resolve(performance.now());
      });
      observer.observe(root, { attributes: true, attributeFilter: ["data-drawn"] });
      setTimeout(() => { observer.disconnect(); resolve(null); }, 5000);
    });
    const target = root.querySelector(action.selector);
    const start = performance.now();
    if (action.event === "change") {
      target.value = action.value;
      target.dispatchEvent(new Event("change", { bubbles: true }));
    } else {
      target.dispatchEvent(new MouseEvent(action.event, { bubbles: true, cancelable: true }));
    }
    const dom = await redrawn;
    await frame();
    await frame();
    times.push(dom === null ? null : { dom: dom - start, frame: performance.now() - start });
  }
  return times;
}
"""


def measure(page, kind: str, actions: list[dict]) -> list[dict]:
    """Time each action ({"selector", "event": "change"/"click"/"mouseover", "value"}) on the view
    of `kind`: a list of {"dom": ms, "frame": ms}, None where the view did not redraw."""
    return page.evaluate(MEASURE_JS, {"kind": kind, "actions": actions})


def interactions(n: int = 12) -> dict[str, list[dict]]:
    """For each view and input, n actions that each change what is drawn (T = 20, L = 6, H = 12)."""
    layers = [{"selector": "select.bl-layer", "event": "change", "value": str((i + 2) % 6)}
              for i in range(n)]
    heads = [{"selector": "select.bl-head", "event": "change", "value": str((i + 3) % 12)}
             for i in range(n)]
    return {
        ("neuron", "layer menu"): layers,
        ("neuron", "head menu"): heads,
        ("neuron", "click a token (new query)"): [
            {"selector": f".bl-token[data-index='{(5 * i + 3) % 20}']", "event": "click"}
            for i in range(n)],
        ("head", "layer menu"): layers,
        ("head", "hover a token"): [
            {"selector": f".bl-token.bl-left[data-index='{(7 * i + 1) % 20}']",
             "event": "mouseover"} for i in range(n)],
        ("head", "click a head (show/hide)"): [
            {"selector": f".bl-swatch[data-head='{i % 12}']", "event": "click"} for i in range(n)],
        ("model", "click a head (enlarge)"): [
            {"selector": f".bl-thumb[data-layer='{(i + 1) % 6}'][data-head='{(5 * i) % 12}']",
             "event": "click"} for i in range(n)],
        ("heatmap", "head menu"): heads,
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One Jupyter server for the module, serving the views notebook (twice: one copy for
    JupyterLab, one for Notebook 7) and a fresh copy of chapter 3."""
    directory = tmp_path_factory.mktemp("browser")
    served = directory / "served"
    served.mkdir()
    write_views_notebook(served / "views.ipynb")
    write_views_notebook(served / "views_notebook7.ipynb")
    unexecuted_copy(CHAPTER, served)
    with jupyterlab(directory, served) as url:
        yield url


def test_every_view_responds_in_jupyterlab(lab):
    data = views_data()
    attn, queries, keys, tokens = data["attn"], data["queries"], data["keys"], data["TOKENS"]
    with chromium() as (page, errors):
        try:
            run_all(page, lab, "views.ipynb")
            neuron, head, model, heatmap = (view(page, k)
                                            for k in ("neuron", "head", "model", "heatmap"))
            assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0

            # the neuron view: its numbers are neuron_terms'; a click on a token makes it the query
            assert_shows_terms(neuron, queries, keys, layer=1, head=2, query=0)
            neuron.locator(".bl-token[data-index='9']").click()  # "answer"
            expect(neuron).to_have_attribute("data-query", "9")
            expect(neuron.locator(".bl-token.bl-query")).to_have_text("answer")
            assert_shows_terms(neuron, queries, keys, layer=1, head=2, query=9)
            expect(page.locator(".chosen-query")).to_have_text("9")  # the kernel has the query
            neuron.locator("select.bl-head").select_option("5")
            expect(neuron).to_have_attribute("data-head", "5")
            assert_shows_terms(neuron, queries, keys, layer=1, head=5, query=9)
            neuron.scroll_into_view_if_needed()
            ARTIFACTS.mkdir(exist_ok=True)
            neuron.screenshot(path=str(ARTIFACTS / "neuron_view_after_click.png"))

            # the head view: a layer's lines; hovering a token leaves only its lines, as opaque
            # as that token's weights, and shades the keys it reads most
            head.locator("select.bl-layer").select_option("3")
            expect(head).to_have_attribute("data-layer", "3")
            head.locator(".bl-token.bl-left[data-index='9']").hover()
            expect(head).to_have_attribute("data-hover", "left 9")
            lines = drawn_lines(head)  # [head, query, key, weight] of each line drawn
            assert {query for _, query, _, _ in lines} == {9}
            assert {h for h, _, _, _ in lines} == set(range(12))
            head_4 = {key: w for h, _, key, w in lines if h == 4}
            expected = {key: w for key, w in enumerate(attn[3][0, 4, 9].tolist()) if w >= 0.01}
            assert head_4 == pytest.approx(expected, abs=1e-6)
            strongest = int(attn[3][0, :, 9].max(0).values.argmax())
            fills = head.locator(".bl-token.bl-right").evaluate_all(
                "boxes => boxes.map(box => box.style.backgroundColor)")
            assert fills[strongest] == max(fills, key=darkness)  # the key it reads most, darkest
            head.scroll_into_view_if_needed()
            head.screenshot(path=str(ARTIFACTS / "head_view_hover.png"))
            page.mouse.move(5, 5)  # off the view: every token's lines again
            expect(head).to_have_attribute("data-hover", "")
            assert {query for _, query, _, _ in drawn_lines(head)} == set(range(len(tokens)))
            head.locator(".bl-swatch[data-head='0']").click()  # hide head 0
            expect(head).to_have_attribute("data-heads", ",".join(map(str, range(1, 12))))
            assert 0 not in {h for h, _, _, _ in drawn_lines(head)}

            # the model view: a click on a thumbnail enlarges that head
            model.locator(".bl-thumb[data-layer='4'][data-head='5']").click()
            expect(model).to_have_attribute("data-layer", "4")
            expect(model).to_have_attribute("data-head", "5")
            expect(model.locator(".bl-title")).to_have_text("layer 4, head 5")
            expect(model.locator(".bl-thumb.bl-chosen")).to_have_attribute("data-head", "5")

            # the heatmap: its menus
            heatmap.locator("select.bl-layer").select_option("2")
            heatmap.locator("select.bl-head").select_option("7")
            expect(heatmap.locator(".bl-title")).to_have_text("layer 2, head 7")

            # every interaction that the benchmark times redraws its view
            for (kind, what), actions in interactions(n=2).items():
                times = measure(page, kind, actions)
                assert None not in times, f"{kind} view: {what} did not redraw it"
            assert errors == []
        finally:  # a picture of the end, passed or failed
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_views.png"))


def test_the_views_render_in_notebook_7(lab):
    with chromium() as (page, errors):
        try:
            run_all(page, lab, "views_notebook7.ipynb", app="notebooks")
            neuron = view(page, "neuron")
            for kind in ("head", "model", "heatmap"):
                view(page, kind)
            neuron.locator(".bl-token[data-index='4']").click()
            expect(neuron).to_have_attribute("data-query", "4")
            expect(page.locator(".chosen-query")).to_have_text("4")
            # Notebook 7 logs errors of its own extensions; none may come from the views
            assert [e for e in errors if "blob:" in e or "anywidget" in e] == []
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_notebook_7.png"))


def test_chapter_3_neuron_view_shows_the_models_numbers(lab):
    """Chapter 3 in JupyterLab: its neuron view of MiniLM (layer 2, head 10, query "ran"); a click
    on "dog" makes it the query, and the softmax shown is the model's attention."""
    import torch
    from tokenizers import Tokenizer

    import bertlab

    model = bertlab.BertModel.from_pretrained(bertlab.minilm_path()).eval()
    tokenizer = Tokenizer.from_file(str(bertlab.minilm_path() / "tokenizer.json"))
    tokenizer.no_padding()
    encoding = tokenizer.encode("The dog from down the street ran up to me and [MASK].")
    with torch.no_grad():
        attentions = model(torch.tensor([encoding.ids]), output_attentions=True).attentions
    with chromium() as (page, errors):
        try:
            run_all(page, lab, CHAPTER.name)
            neuron = view(page, "neuron")
            expect(neuron).to_have_attribute("data-query", str(encoding.tokens.index("ran")))
            dog = encoding.tokens.index("dog")
            neuron.locator(f".bl-token[data-index='{dog}']").click()
            expect(neuron).to_have_attribute("data-query", str(dog))
            shown = [float(v) for v in shown_numbers(neuron, 1)]
            assert shown == pytest.approx(attentions[2][0, 10, dog].tolist(), abs=0.0051)
            assert errors == []
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_chapter_3.png"))


def assert_shows_terms(root, queries, keys, layer, head, query):
    """The neuron view shows neuron_terms' q·k/√d and softmax, to the 2 decimals it writes."""
    from bertlab import viz

    terms = viz.neuron_terms(queries, keys, layer, head, query)
    for column, values in enumerate([terms.scores, terms.weights]):
        shown = [float(v) for v in shown_numbers(root, column)]
        assert shown == pytest.approx(values.tolist(), abs=0.0051)


def drawn_lines(root) -> list:
    """The lines the head view drew last, [head, query, key, weight] each: its canvas keeps them."""
    return root.locator("canvas.bl-lines").evaluate("canvas => canvas.drawnLines")


def darkness(fill: str) -> float:
    """How dark a CSS rgb(...) colour is (0 for white and for no fill)."""
    if not fill.startswith("rgb("):
        return 0.0
    return 765 - sum(int(c) for c in fill[4:-1].split(","))
