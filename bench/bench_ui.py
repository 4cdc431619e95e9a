"""UI: how fast the investigation UI shows a 2,000-node snapshot and whether it
stays interactive, measured in the real UI in headless Chromium against the
real ``peeps-web``.

    python bench/bench_ui.py -o bench/results/ui.json [--quick] [--nodes 2000]

A synthetic process (``tests/browser/synthetic_process.py``: a plain
wire-protocol client) answers snapshot requests with an N-node graph; one
snapshot is taken; then, R times in a fresh page:

* load → graph rendered: from navigation to ``#/snapshot/N?view=graph`` until
  the SVG holds every node (layout runs in a Web Worker; the figure includes
  fetching the graph and suspects, the layout and the SVG build);
* layout / render: the UI's own timings (worker round trip; SVG string build
  and insertion);
* longest main-thread task while loading (PerformanceObserver ``longtask``):
  what a click would have waited for at worst;
* zoom frames: 40 wheel events, one per animation frame, frame-to-frame time
  (during a gesture the painted SVG moves as one layer; it is repainted
  crisp 140 ms after the gesture);
* click → inspector / → repainted: a node is clicked (pointer events sent in
  the page); until the inspector names it, and until the second animation
  frame after it (the graph zooms to the node from the overview, so this
  includes un-hiding the labels of the level-of-detail rendering);
* search → selected: type a name, Enter, until the inspector names it.

Needs Playwright (Python) and Debian's ``/usr/bin/chromium``; without them it
writes rows marked "not run" and exits 0.  It never downloads a browser.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import ROOT, WebServer, machine, median, quantile, row, spread_text, write_result

SECTION = "6. UI"
SYNTHETIC = ROOT / "tests" / "browser" / "synthetic_process.py"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

LONGTASK_OBSERVER = """
window.__longtasks = [];
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longtasks.push(e.duration);
  }).observe({ type: "longtask", buffered: true });
} catch (e) {}
"""

ZOOM_FRAMES = """
async () => {
  const canvas = document.querySelector('[data-testid=graph-canvas]');
  const r = canvas.getBoundingClientRect();
  const times = [];
  let last = await new Promise(requestAnimationFrame);
  for (let i = 0; i < 40; i++) {
    canvas.dispatchEvent(new WheelEvent('wheel', {
      deltaY: i < 20 ? -120 : 120, clientX: r.left + r.width / 2, clientY: r.top + r.height / 2,
      bubbles: true, cancelable: true }));
    const now = await new Promise(requestAnimationFrame);
    times.push(now - last);
    last = now;
  }
  return times;
}
"""


CLICK = """
async ([id, label]) => {
  const el = document.querySelector(`g.node[data-id="${id}"]`);
  const t0 = performance.now();
  el.dispatchEvent(new PointerEvent('pointerdown', {bubbles: true, button: 0}));
  el.dispatchEvent(new PointerEvent('pointerup', {bubbles: true, button: 0}));
  await Promise.resolve();
  await Promise.resolve();
  const shown = document.querySelector('[data-testid=inspector-label]')?.textContent === label;
  const t1 = performance.now();
  await new Promise(requestAnimationFrame);
  await new Promise(requestAnimationFrame);
  return [shown ? t1 - t0 : -1, performance.now() - t0];
}
"""


def measure(http: str, sid: int, nodes: int, repeats: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {k: [] for k in (
        "load", "layout", "render", "longtask", "zoom_mean", "zoom_p95", "click", "click_frame",
        "search")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for _ in range(repeats):
                context = browser.new_context(viewport={"width": 1500, "height": 900})
                page = context.new_page()
                page.add_init_script(LONGTASK_OBSERVER)
                errors: list[Any] = []

                def on_error(exc: Any, errors: list[Any] = errors) -> None:
                    errors.append(exc)

                page.on("pageerror", on_error)
                started = time.perf_counter()
                page.goto(f"{http}/#/snapshot/{sid}?view=graph")
                page.wait_for_function(
                    f"() => Number(document.querySelector('[data-testid=graph-canvas]')?.dataset.nodes) >= {nodes}",
                    timeout=180_000, polling=20)
                out["load"].append((time.perf_counter() - started) * 1000)
                data = page.locator("[data-testid=graph-canvas]").evaluate("el => ({...el.dataset})")
                out["layout"].append(float(data["layoutMs"]))
                out["render"].append(float(data["renderMs"]))
                page.wait_for_timeout(300)
                longtasks = page.evaluate("() => window.__longtasks")
                out["longtask"].append(max(longtasks) if longtasks else 0.0)

                frames = page.evaluate(ZOOM_FRAMES)
                out["zoom_mean"].append(sum(frames) / len(frames))
                out["zoom_p95"].append(quantile(frames, 0.95))

                node = page.locator("[data-testid=graph-canvas] g.node.k-channel").first
                label = node.evaluate("el => el.querySelector('title').textContent.split('\\n')[0]")
                node_id = node.get_attribute("data-id")
                inspector_ms, frame_ms = page.evaluate(CLICK, [node_id, label])
                out["click"].append(inspector_ms)
                out["click_frame"].append(frame_ms)

                search = page.locator("[data-testid=graph-search]")
                search.fill("stage5.worker3")
                t0 = time.perf_counter()
                search.press("Enter")
                page.locator("[data-testid=inspector-label]", has_text="stage5.worker3").wait_for()
                out["search"].append((time.perf_counter() - t0) * 1000)
                context.close()
                if errors:
                    raise RuntimeError("the UI threw: " + "; ".join(map(str, errors)))
        finally:
            browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    try:
        import playwright.sync_api  # noqa: F401
        have_browser = Path("/usr/bin/chromium").exists()
    except ImportError:
        have_browser = False
    if not have_browser:
        rows.append(row(SECTION, f"{args.nodes}-node graph", None, "ms",
                        note="not run: needs playwright and /usr/bin/chromium"))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server = WebServer(Path(tmp) / "ui-bench.sqlite")
            synth = subprocess.Popen([sys.executable, str(SYNTHETIC), "--dashboard", server.dashboard,
                                      "--nodes", str(args.nodes)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                assert synth.stdout is not None
                line = synth.stdout.readline()
                if "connected" not in line:
                    raise RuntimeError(f"synthetic process did not connect: {line!r}")
                time.sleep(0.3)
                sid = server.jump()
                res = measure(server.http, sid, args.nodes, repeats)
            finally:
                synth.terminate()
                synth.wait(timeout=10)
                server.stop()
        n = f"{args.nodes:,}-node graph"
        spec: list[tuple[str, str, str, float]] = [
            ("load", f"{n}: load → rendered", "< 6000 ms on 2 cores", 6000),
            ("layout", f"{n}: layout (worker, end to end)", "< 4000 ms", 4000),
            ("render", f"{n}: SVG build + insert", "< 500 ms", 500),
            ("longtask", f"{n}: longest main-thread task while loading", "< 800 ms", 800),
            ("zoom_mean", f"{n}: zoom frame time, mean", "< 50 ms (20 fps)", 50),
            ("zoom_p95", f"{n}: zoom frame time, p95", "< 100 ms", 100),
            ("click", f"{n}: click node → inspector updated", "< 100 ms", 100),
            ("click_frame", f"{n}: click node → graph repainted (zooms to it)", "< 1000 ms", 1000),
            ("search", f"{n}: search + Enter → selected", "< 500 ms", 500),
        ]
        for key, name, target, limit in spec:
            values = res[key]
            value = median(values)
            rows.append(row(SECTION, name, round(value, 1), "ms", spread=spread_text(values, "{:.0f}"),
                            target=target, ok=value <= limit))
    for r in rows:
        value = "—" if r["value"] is None else f"{r['value']:,.1f} {r['unit']}"
        verdict = {True: "ok", False: "OVER", None: ""}[r.get("ok")]
        print(f"{r['name']:<58} {value:>12}  {r.get('spread', ''):<22} {r.get('target', '')}  {verdict}"
              f"{r.get('note', '')}")
    # Wall-clock figures on a shared 2-core machine move with its load; say what it was.
    load = (load_before, os.getloadavg()[0])
    print(f"load average (1 min) before/after: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores")
    if args.output:
        write_result(args.output, "ui", rows, quick=args.quick,
                     meta={"machine": machine(), "nodes": args.nodes, "repeats": repeats,
                           "loadavg_1min_before_after": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
