#!/usr/bin/python3
"""qgrad-sweep: a tiny grid (2 codecs x 1 link x 1 seed, logistic regression on synthetic data,
2 ranks) is interrupted once its first run has finished, then resumed with the same command: the
finished run is not redone (its metrics file is untouched), the interrupted one is run again.
A run whose metrics lost their summary (a crash) is redone; bad command lines exit 2.
The link has 20 ms latency per collective, so each run takes about 2 s and the second one is
still running when the sweep is stopped.

Usage: qgrad_sweep_test.py path/to/qgrad-train
"""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SWEEP = os.path.join(ROOT, "scripts", "qgrad-sweep")
REPORT = os.path.join(ROOT, "scripts", "qgrad-report")
TRAIN = None  # set from argv

DATA = "synthetic:kind=classification,rows=600,test=200,dim=20,classes=3,seed=4"


def command(out):
    return [sys.executable, SWEEP, "--out", out, "--train", TRAIN,
            "--codecs", "none --lr 0.05;qsgd:bits=4 --ef --lr 0.05",
            "--links", "unlimited,latency=20ms", "--seeds", "3", "--model", "logistic",
            "--data", DATA, "--ranks", "2", "--epochs", "2", "--", "--batch", "16",
            "--eval-every", "5"]


def has_summary(path):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
        return bool(lines) and json.loads(lines[-1]).get("summary") is True
    except (OSError, ValueError):
        return False


def second_running(out):
    """The first run is done and the second has started (a SIGTERM between the two would find
    no run to interrupt: the second stays pending, which is also resumed, but not this test)."""
    try:
        runs = manifest(out)["runs"]
        return runs[0]["status"] == "done" and runs[1]["status"] == "running"
    except (OSError, ValueError, KeyError, IndexError):
        return False


def manifest(out):
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


class Sweep(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qgrad-sweep-test.")
        self.out = os.path.join(self.tmp, "sweep")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_interrupted_sweep_resumes_without_redoing_finished_runs(self):
        first = os.path.join(self.out, "none-unlimited_latency=20ms-seed3.jsonl")
        second = os.path.join(self.out, "qsgd_bits=4_ef-unlimited_latency=20ms-seed3.jsonl")
        sweep = subprocess.Popen(command(self.out), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        # Stop it once the manifest says the first run is done and the second runs.
        while not second_running(self.out):
            self.assertIsNone(sweep.poll(), "the sweep ended before it could be interrupted")
            self.assertLess(time.monotonic(), deadline, "the first run never finished")
            time.sleep(0.02)
        sweep.send_signal(signal.SIGTERM)
        stdout, stderr = sweep.communicate(timeout=30)
        self.assertEqual(sweep.returncode, 130, stdout + stderr)
        self.assertIn("interrupted", stderr)
        runs = {r["metrics"]: r for r in manifest(self.out)["runs"]}
        self.assertEqual(runs[os.path.basename(first)]["status"], "done")
        self.assertEqual(runs[os.path.basename(first)]["exit_code"], 0)
        self.assertEqual(runs[os.path.basename(second)]["status"], "interrupted")
        self.assertFalse(has_summary(second), "the second run finished before the interrupt")
        # The interrupted run's process group is gone: nothing writes its metrics any more.
        before = os.stat(first)

        done = subprocess.run(command(self.out), capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("1 finished earlier, skipped", done.stdout)
        self.assertIn("[1/2] none at unlimited,latency=20ms, seed 3: finished earlier, skipped",
                      done.stdout)
        self.assertIn("[2/2] qsgd:bits=4 +ef at unlimited,latency=20ms, seed 3: running",
                      done.stdout)
        after = os.stat(first)
        self.assertEqual((before.st_ino, before.st_mtime_ns), (after.st_ino, after.st_mtime_ns),
                         "the finished run was redone")
        self.assertTrue(has_summary(second))
        m = manifest(self.out)
        self.assertEqual([r["status"] for r in m["runs"]], ["done", "done"])
        self.assertEqual(m["grid"]["links"], ["unlimited,latency=20ms"])
        cmd = m["runs"][1]["command"]
        self.assertEqual(cmd[0], os.path.abspath(TRAIN))
        self.assertIn("--link", cmd)
        self.assertIn("--ef", cmd)
        self.assertTrue(os.path.getsize(os.path.join(self.out, m["runs"][1]["log"])) > 0)

        # A run whose metrics lost their summary record (a crash) is run again; the other not.
        with open(first) as f:
            lines = f.read().splitlines(True)
        with open(first, "w") as f:
            f.writelines(lines[:-1])
        before2 = os.stat(second)
        done = subprocess.run(command(self.out), capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("[1/2] none at unlimited,latency=20ms, seed 3: running", done.stdout)
        self.assertTrue(has_summary(first))
        self.assertEqual(before2.st_mtime_ns, os.stat(second).st_mtime_ns)

        # The folder is a report's input; the manifest's labels name the rows.
        rep = subprocess.run([sys.executable, REPORT, self.out, "--out",
                              os.path.join(self.out, "report"), "--target", "0.9"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(rep.returncode, 0, rep.stderr)
        with open(os.path.join(self.out, "report", "summary.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([r["label"] for r in rows], ["none", "qsgd:bits=4 +ef"])
        self.assertEqual(rows[1]["codec"], "qsgd:bits=4,levels=0,bucket=512,norm=max,coding=dense")

    def test_bad_command_lines(self):
        bad = [
            (["--codecs", ";"], "no codec given"),
            (["--codecs", "--lr 0.1 none"], "must start with a codec spec"),
            (["--codecs", "none;none --lr 0.2"], "two entries have the label none"),
            (["--links", "fast!"], "not a link spec"),
            (["--links", "100mbit,latency=5", "--netlab"], "not a tc rate"),
            (["--train", os.path.join(self.tmp, "nothing")], "is not an executable"),
        ]
        for extra, message in bad:
            base = [sys.executable, SWEEP, "--out", self.out, "--train", TRAIN, "--codecs",
                    "none", "--links", "1gbit"]
            done = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
            self.assertEqual(done.returncode, 2, (extra, done.stderr))
            self.assertIn(message, done.stderr, extra)
        self.assertFalse(os.path.exists(os.path.join(self.out, "manifest.json")))


if __name__ == "__main__":
    TRAIN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
