"""How long a node toggle takes in the explorer page, in a headless browser.

Drives Debian's chromium through Playwright (as ``tests/test_explorer_browser.py`` does) on two
pages: a 2-50-50-2 spirals MLP on a 200 x 200 grid with 400 points, and a digits LeNet-5 with
200 images. Prints, per page, the median (and largest) time of compute and draw
(``explorer.renderMs()``) and, on the MLP, until the next frame is shown.

Run: ``python benchmarks/explorer_toggle.py [--repeats 5]`` (needs ``playwright`` and a
``chromium`` executable).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from playwright.sync_api import sync_playwright
from prunelab.web import explorer

from prunelab import data, models, train

GRID, SAMPLES, CONV_SAMPLES = 200, 400, 200
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
ARGS.append("--disable-background-networking")
FRAME = """(node) => new Promise((done) => {
    const t0 = performance.now();
    explorer.toggle(node);
    requestAnimationFrame(() => done(performance.now() - t0));
})"""


def pages(folder: Path) -> tuple[Path, Path]:
    split = data.load("spirals", seed=0, n_train=400, n_test=SAMPLES)
    mlp = models.mlp((2, 50, 50, 2), seed=0)
    train.fit(mlp, split.train, epochs=40, lr=0.03, batch_size=400, seed=0, progress=False)
    spirals = explorer.write(folder / "spirals.html", mlp, split.test, samples=SAMPLES, grid=GRID)
    digits = data.load("digits", seed=0)
    lenet = models.lenet5(in_shape=(1, 8, 8), seed=0, dtype=torch.float64)
    train.fit(lenet, digits.train, epochs=3, lr=0.01, batch_size=64, seed=0, progress=False)
    conv = explorer.write(folder / "lenet.html", lenet, digits.test, samples=CONV_SAMPLES)
    return spirals, conv


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(path.as_uri())
    page.wait_for_function("window.explorer !== undefined")
    page.mouse.move(1, 1)
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="toggles per node (in pairs)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs a chromium executable: sudo apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        spirals, conv = pages(Path(tmp))
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = open_page(browser, spirals)
        times, frames = [], []
        for node in (3, 17, 60, 41, 88):
            for _ in range(2 * args.repeats):
                page.click(f'[data-node="{node}"]')
                times.append(page.evaluate("explorer.renderMs()"))
                frames.append(page.evaluate(FRAME, node))
        print(
            f"explorer toggle, 2-50-50-2 net, {GRID}x{GRID} grid, {SAMPLES} points: "
            f"compute+draw median {statistics.median(times):.1f} ms (max {max(times):.1f}); "
            f"to the next frame median {statistics.median(frames):.1f} ms (max {max(frames):.1f})"
        )
        page.close()
        page = open_page(browser, conv)
        kinds = {}
        for node, kind in ((3, "conv1 channel"), (10, "conv2 channel"), (60, "fc1 feature")):
            kinds[kind] = []
            for _ in range(2 * args.repeats):
                page.click(f'[data-node="{node}"]')
                kinds[kind].append(page.evaluate("explorer.renderMs()"))
        print(
            f"explorer toggle, digits LeNet-5 (1x8x8-c6-c16-120-84-10), {CONV_SAMPLES} images, "
            "compute+draw median: "
            + ", ".join(f"{k} {statistics.median(v):.1f} ms" for k, v in kinds.items())
        )
        page.close()
        browser.close()


if __name__ == "__main__":
    main()
