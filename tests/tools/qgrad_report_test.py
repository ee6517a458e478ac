#!/usr/bin/python3
"""Tests of qgrad-report on recorded metrics (tests/tools/report_fixtures, report_bad_fixtures).

The fixtures are small hand-made runs (logistic, 4 ranks; evaluations every 10 steps) whose
crossings of the 0.84 target were computed by hand:
  none 100mbit seed 1:  0.80 at step 20 (2 s, 2000 B) -> 0.90 at step 30 (3 s, 3000 B):
                        f = 0.04 / 0.10 = 0.4 -> 2.4 s, 2400 B, step 24
  qsgd 100mbit seed 1:  0.60 at step 10 (0.5 s, 125 B) -> 0.85 at step 20 (1.0 s, 250 B):
                        f = 0.24 / 0.25 = 0.96 -> 0.98 s, 245 B, step 19.6
  qsgd 100mbit seed 2:  0.84 at its first evaluation (step 10, 0.6 s, 125 B) -> itself
     mean 0.79 s (sd 0.38 / sqrt 2), 185 B (sd 120 / sqrt 2), speedup 2.4 / 0.79
  sign 100mbit seed 1:  at most 0.83: not reached, no speedup
  none 1gbit seed 1:    0.70 (0.5 s, 1000 B) -> 0.86 (1.0 s, 2000 B): f = 0.875 -> 0.9375 s, 1875 B
  qsgd 1gbit seed 1:    0.90 at the first evaluation (0.75 s, 125 B): speedup 0.9375 / 0.75 = 1.25
Usage: qgrad_report_test.py [path/to/qgrad-report]
"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REPORT = os.path.join(ROOT, "scripts", "qgrad-report")
GOOD = os.path.join(HERE, "report_fixtures")
BAD = os.path.join(HERE, "report_bad_fixtures")
PLOTS = ("curves_steps", "curves_seconds", "curves_bytes", "step_time")


def run_report(*args):
    return subprocess.run([sys.executable, REPORT, *args], capture_output=True, text=True,
                          timeout=120)


def read_text(path):
    with open(path) as f:
        return f.read()


def read_csv(out):
    with open(os.path.join(out, "summary.csv")) as f:
        return {(r["label"], r["link"]): r for r in csv.DictReader(f)}


class GoodRuns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="qgrad-report-test.")
        cls.out = os.path.join(cls.tmp, "report")
        cls.done = run_report(GOOD, "--out", cls.out)
        cls.rows = read_csv(cls.out) if cls.done.returncode == 0 else {}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def assertNum(self, text, expected, places=9):
        self.assertTrue(text != "", f"expected {expected}, got an empty cell")
        self.assertAlmostEqual(float(text), expected, places=places)

    def test_exit_status_and_no_warnings(self):
        self.assertEqual(self.done.returncode, 0, self.done.stderr)
        self.assertNotIn("warning", self.done.stderr)
        self.assertIn("6 runs in 5 groups", self.done.stdout)

    def test_groups(self):
        self.assertEqual(set(self.rows), {("none", "100mbit"), ("qsgd:bits=4", "100mbit"),
                                          ("sign", "100mbit"), ("none", "1gbit"),
                                          ("qsgd:bits=4", "1gbit")})
        self.assertEqual(self.rows[("qsgd:bits=4", "100mbit")]["seeds"], "2")

    def test_time_and_bytes_to_target_interpolate(self):
        fp32 = self.rows[("none", "100mbit")]
        self.assertNum(fp32["time_to_target_s"], 2.4)
        self.assertNum(fp32["bytes_to_target"], 2400)
        self.assertNum(fp32["steps_to_target"], 24)
        self.assertNum(fp32["time_to_target_s_sd"], 0)
        q = self.rows[("qsgd:bits=4", "100mbit")]
        self.assertEqual(q["reached_target"], "2")
        self.assertNum(q["time_to_target_s"], (0.98 + 0.6) / 2)
        self.assertNum(q["time_to_target_s_sd"], 0.38 / math.sqrt(2))
        self.assertNum(q["bytes_to_target"], (245 + 125) / 2)
        self.assertNum(q["bytes_to_target_sd"], 120 / math.sqrt(2))
        self.assertNum(q["steps_to_target"], (19.6 + 10) / 2)
        g = self.rows[("none", "1gbit")]
        self.assertNum(g["time_to_target_s"], 0.9375)
        self.assertNum(g["bytes_to_target"], 1875)

    def test_final_accuracy_ratio_and_speedup(self):
        q = self.rows[("qsgd:bits=4", "100mbit")]
        self.assertNum(q["final_accuracy"], 0.88)
        self.assertNum(q["final_accuracy_sd"], 0.04 / math.sqrt(2))
        self.assertNum(q["compression_ratio"], 8.0)
        self.assertNum(q["speedup_vs_fp32"], 2.4 / 0.79)
        # Against fp32 at the same link, not the other one.
        self.assertNum(self.rows[("qsgd:bits=4", "1gbit")]["speedup_vs_fp32"], 1.25)
        self.assertNum(self.rows[("none", "1gbit")]["speedup_vs_fp32"], 1.0)

    def test_not_reached(self):
        s = self.rows[("sign", "100mbit")]
        self.assertEqual(s["reached_target"], "0")
        self.assertEqual(s["time_to_target_s"], "")
        self.assertEqual(s["speedup_vs_fp32"], "")
        md = read_text(os.path.join(self.out, "summary.md"))
        sign_row = next(l for l in md.splitlines() if l.startswith("| `sign`"))
        self.assertIn("not reached", sign_row)
        q_row = next(l for l in md.splitlines() if l.startswith("| `qsgd:bits=4` | 100mbit"))
        self.assertIn("88.00% ± 2.83", q_row)
        self.assertIn("3.04x", q_row)

    def test_plots_written_and_not_empty(self):
        for name in PLOTS:
            png = os.path.join(self.out, name + ".png")
            with open(png, "rb") as f:
                data = f.read()
            self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n", png)
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            self.assertGreater(width, 300, png)
            self.assertGreater(height, 100, png)
            self.assertGreater(len(data), 10000, f"{png} is only {len(data)} bytes")
            svg = ET.parse(os.path.join(self.out, name + ".svg")).getroot()
            self.assertTrue(svg.tag.endswith("svg"))
            # Lines or bars were drawn: many path elements, not just the axes.
            paths = [e for e in svg.iter() if e.tag.endswith("path")]
            self.assertGreater(len(paths), 20, name)

    def test_html_names_every_plot(self):
        page = read_text(os.path.join(self.out, "index.html"))
        for name in PLOTS:
            self.assertIn(f'src="{name}.png"', page)
        self.assertIn("qsgd:bits=4", page)


class BadRuns(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qgrad-report-test.")
        self.out = os.path.join(self.tmp, "report")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_bad_files_named_and_the_rest_reported(self):
        bad = {name: os.path.join(BAD, name) for name in sorted(os.listdir(BAD))}
        done = run_report(GOOD, *bad.values(), "--out", self.out)
        self.assertEqual(done.returncode, 0, done.stderr)
        expected = {
            "crashed.jsonl": "no summary record",
            "truncated.jsonl": "truncated last line",
            "garbage.jsonl": "line 4 is not JSON",
            "empty.jsonl": "empty file",
            "mixed.jsonl": "model mlp on fashion-mnist",
        }
        self.assertEqual(set(expected), set(bad))
        warnings = [l for l in done.stderr.splitlines() if "warning" in l]
        self.assertEqual(len(warnings), len(expected), done.stderr)
        for name, problem in expected.items():
            line = next((l for l in warnings if bad[name] in l), None)
            self.assertIsNotNone(line, f"no warning names {name}: {done.stderr}")
            self.assertIn(problem, line)
            self.assertIn("skipped", line)
        # The truncated file also lacks its summary: both problems are named.
        self.assertIn("no summary record", next(l for l in warnings if "truncated" in l))
        self.assertIn("5 warnings", done.stdout)
        rows = read_csv(self.out)
        self.assertEqual(len(rows), 5)  # the good runs only
        self.assertEqual(rows[("qsgd:bits=4", "100mbit")]["seeds"], "2")
        page = read_text(os.path.join(self.out, "index.html"))
        self.assertIn("line 4 is not JSON", page)

    def test_mixed_majority_wins(self):
        # One mlp run against one logistic run: a tie goes to the first file's setup.
        done = run_report(os.path.join(BAD, "mixed.jsonl"),
                          os.path.join(GOOD, "none-1gbit-seed1.jsonl"), "--out", self.out)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("none-1gbit-seed1.jsonl: model logistic", done.stderr)
        self.assertEqual(set(read_csv(self.out)), {("qsgd:bits=4", "100mbit")})

    def test_nothing_usable_is_an_error(self):
        done = run_report(os.path.join(BAD, "crashed.jsonl"), os.path.join(BAD, "missing.jsonl"),
                          "--out", self.out)
        self.assertEqual(done.returncode, 1)
        self.assertIn("missing.jsonl: cannot read", done.stderr)
        self.assertIn("no usable metrics", done.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.out, "index.html")))

    def test_bad_target(self):
        done = run_report(GOOD, "--out", self.out, "--target", "84")
        self.assertEqual(done.returncode, 2)
        self.assertIn("--target must be a fraction", done.stderr)

    def test_manifest_labels_and_links(self):
        # A sweep folder: the manifest's label and link win over the metrics' codec and link.
        folder = os.path.join(self.tmp, "sweep")
        os.makedirs(folder)
        shutil.copy(os.path.join(GOOD, "none-1gbit-seed1.jsonl"), os.path.join(folder, "a.jsonl"))
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            json.dump({"runs": [{"metrics": "a.jsonl", "label": "fp32", "link": "netlab:1gbit"}]},
                      f)
        done = run_report(folder, "--out", self.out)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(set(read_csv(self.out)), {("fp32", "netlab:1gbit")})


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        REPORT = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
