#!/usr/bin/python3
"""qgrad-report's index.html in headless Chromium: the page loads without errors and every plot
is shown (each <img> loaded with a natural width > 0); a screenshot is kept as the test's
artifact and must be a real picture (many colours, not a blank page).

A script injected at the top of a copy of the page records, once the page has loaded, which
images loaded and every error event (a missing image fires one); `chromium --dump-dom` prints
the DOM after the load event, with those records as attributes. The same check on a copy with
one plot deleted must see it missing, so the check itself can fail.

Usage: qgrad_report_html_test.py [--artifacts DIR]   (exit 77: chromium not installed, skipped)
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REPORT = os.path.join(ROOT, "scripts", "qgrad-report")
PLOTS = ("curves_seconds", "curves_bytes", "curves_steps", "step_time")

PROBE = """<script>
window.__qgradErrors = [];
window.addEventListener("error", function (e) {
  window.__qgradErrors.push(e.target && e.target.src ? "failed to load " + e.target.src
                                                      : String(e.message));
}, true);
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var root = document.documentElement;
  root.setAttribute("data-images", String(images.length));
  root.setAttribute("data-loaded", loaded.map(function (i) { return i.getAttribute("src"); })
                                         .join(" "));
  root.setAttribute("data-errors", window.__qgradErrors.join(" | "));
});
</script>"""


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def chromium(profile, *args):
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        fail(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def probe(folder, profile):
    """Loads a probed copy of folder/index.html; returns (image count, loaded srcs, errors)."""
    with open(os.path.join(folder, "index.html")) as f:
        page = f.read()
    probed = os.path.join(folder, "probe.html")
    with open(probed, "w") as f:
        f.write(page.replace("<head>", "<head>" + PROBE, 1))
    dom = chromium(profile, "--virtual-time-budget=10000", "--dump-dom", f"file://{probed}")
    attrs = {}
    for name in ("data-images", "data-loaded", "data-errors"):
        m = re.search(rf'{name}="([^"]*)"', dom)
        if not m:
            fail(f"the probe did not run: no {name} in the DOM: {dom[:500]}")
        attrs[name] = m.group(1)
    return int(attrs["data-images"]), set(attrs["data-loaded"].split()), attrs["data-errors"]


def check_screenshot(path):
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        width, height = im.size
        colors = im.getcolors(maxcolors=1 << 20) or []
        pixels = width * height
        white = sum(n for n, c in colors if min(c) >= 245)
    if width < 1000 or height < 1000:
        fail(f"screenshot {path} is {width}x{height}")
    if len(colors) < 50:
        fail(f"screenshot {path} has {len(colors)} colours: a blank or broken page")
    if pixels - white < 0.05 * pixels:
        fail(f"screenshot {path} is {100 * white / pixels:.1f}% white: nothing drawn")
    print(f"screenshot {path}: {width}x{height}, {len(colors)} colours, "
          f"{100 * (pixels - white) / pixels:.1f}% not white")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifacts", default=None,
                        help="folder for the screenshot (default: a temporary one)")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        print("SKIP: chromium is not installed (scripts/install-deps.sh installs it)")
        return 77
    tmp = tempfile.mkdtemp(prefix="qgrad-report-html.")
    try:
        out = os.path.join(tmp, "report")
        fixtures = os.path.join(HERE, "report_fixtures")
        bad = os.path.join(HERE, "report_bad_fixtures", "crashed.jsonl")
        done = subprocess.run([sys.executable, REPORT, fixtures, bad, "--out", out],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            fail(f"qgrad-report exited {done.returncode}: {done.stderr}")
        profile = os.path.join(tmp, "profile")

        images, loaded, errors = probe(out, profile)
        expected = {f"{name}.png" for name in PLOTS}
        if images != len(PLOTS) or loaded != expected:
            fail(f"{images} images, loaded {sorted(loaded)}, expected {sorted(expected)}")
        if errors:
            fail(f"errors while loading index.html: {errors}")
        print(f"index.html: all {images} plots loaded, no errors")

        # The check can fail: with one plot gone it must see it missing.
        broken = os.path.join(tmp, "broken")
        shutil.copytree(out, broken)
        os.remove(os.path.join(broken, "step_time.png"))
        images, loaded, errors = probe(broken, profile)
        if "step_time.png" in loaded or "step_time.png" not in errors:
            fail(f"a deleted plot went unnoticed: loaded {sorted(loaded)}, errors '{errors}'")
        print("a deleted plot is noticed: " + errors)

        # Screenshot of the whole page, kept as the test's artifact.
        shots = args.artifacts or tmp
        os.makedirs(shots, exist_ok=True)
        shot = os.path.join(shots, "qgrad_report_index.png")
        chromium(profile, "--window-size=1280,3200", f"--screenshot={shot}",
                 f"file://{os.path.join(out, 'index.html')}")
        check_screenshot(shot)
    finally:
        shutil.rmtree(tmp)
    print("qgrad-report html: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
