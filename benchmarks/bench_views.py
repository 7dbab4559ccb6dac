"""How fast the attention views answer the reader, in JupyterLab 4 in headless Chromium.

    OMP_NUM_THREADS=1 python benchmarks/bench_views.py [--repeat 25]

Runs tests/test_browser.py's notebook of the four views (random attention, queries and keys of
the shapes of chapter 10's sentence pair in MiniLM: 6 layers, 12 heads, 20 tokens, d = 32) and
times each input with the test's `measure()`: in the page, `performance.now()` from just before
the event (a menu's change, a click, a mouseover) is dispatched to (1) the view's redraw, seen by
a MutationObserver on its data-drawn attribute, and (2) the second requestAnimationFrame after it,
by when the frame that shows the change has been painted. Prints the medians (and the slowest) in
ms, as a Markdown table, and writes every timing to test-artifacts/view_timings.json.
"""

import argparse
import importlib.util
import json
import platform
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the browser test's server, page and timing helpers, loaded from its file
_spec = importlib.util.spec_from_file_location("test_browser", ROOT / "tests" / "test_browser.py")
browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25, help="events per interaction")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        served = directory / "served"
        served.mkdir()
        browser.write_views_notebook(served / "views.ipynb")
        with browser.jupyterlab(directory, served) as url, browser.chromium() as (page, errors):
            browser.run_all(page, url, "views.ipynb")
            for kind in ("neuron", "head", "model", "heatmap"):
                browser.view(page, kind)
            timings = {f"{kind} view: {what}": browser.measure(page, kind, actions)
                       for (kind, what), actions in browser.interactions(args.repeat).items()}
            version = page.context.browser.version
    if errors or any(None in times for times in timings.values()):
        raise SystemExit(f"a view did not redraw, or the page raised: {errors}")
    print(f"Chromium {version} (headless), {platform.processor() or platform.machine()}, "
          f"{args.repeat} events each; ms from the input event")
    print("| view: input | redrawn (median) | next frame painted (median) | slowest painted |")
    print("|---|---:|---:|---:|")
    for name, times in timings.items():
        dom, frame = [t["dom"] for t in times], [t["frame"] for t in times]
        print(f"| {name} | {statistics.median(dom):.1f} | {statistics.median(frame):.1f} | "
              f"{max(frame):.1f} |")
    browser.ARTIFACTS.mkdir(exist_ok=True)
    (browser.ARTIFACTS / "view_timings.json").write_text(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main()
