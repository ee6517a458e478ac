#!/usr/bin/env python3
"""scripts/check_layers.py on tests/tools/layers_fixtures (one violation of each kind, each named
with its file and line, exit 1), on a clean copy of that tree (exit 0) and with bad arguments
(exit 2). Standard library only."""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "..", "..", "scripts", "check_layers.py")
FIXTURE = os.path.join(HERE, "layers_fixtures")

EXPECTED = [
    'core/codec.h:2: include: core/ may include only core/, not "comm/channel.h" (comm/ layer)',
    "optim/step.cc:2: include: <mpi.h> is a backend header (MPI); in the library only comm/mpi/ "
    "may include it",
    "ps/apply.h:3: cycle: include cycle: ps/apply.h:3 -> ps/round.h:2 -> ps/apply.h",
    "train/long.cc:12: length: 12 lines, more than 10: split it by job",
    'train/loop.cc:2: include: "loop_helper.h" names no file of the tree (write it from the '
    'repository root: "train/loop_helper.h")',
    "check_layers: 5 violation(s) in 13 files (3 include, 1 cycle, 1 length)",
]

failures = []


def run(*args):
    p = subprocess.run([sys.executable, CHECKER, *args], capture_output=True, text=True)
    return p.returncode, p.stdout.splitlines(), p.stderr


def expect(cond, what):
    if not cond:
        failures.append(what)


# 1. The fixture: every violation, nothing else, exit 1.
rc, out, err = run("--root", FIXTURE, "--max-lines", "10")
expect(rc == 1, f"fixture: exit status {rc}, expected 1 (stderr: {err})")
expect(out == EXPECTED, "fixture: output differs:\n  got:\n    " + "\n    ".join(out)
       + "\n  expected:\n    " + "\n    ".join(EXPECTED))

# 2. The same tree with the violations removed: exit 0 and a summary.
with tempfile.TemporaryDirectory() as tmp:
    clean = os.path.join(tmp, "tree")
    shutil.copytree(FIXTURE, clean)
    os.remove(os.path.join(clean, "LAYERS_FIXTURE"))
    with open(os.path.join(clean, "core", "codec.h"), "w") as f:
        f.write('#include "core/wire.h"\n#include "core/config.h"\n')
    with open(os.path.join(clean, "optim", "step.cc"), "w") as f:
        f.write('#include "comm/channel.h"\n')
    with open(os.path.join(clean, "ps", "apply.h"), "w") as f:
        f.write('#include "optim/step_api.h"\n')
    with open(os.path.join(clean, "train", "loop.cc"), "w") as f:
        f.write('#include "train/loop_helper.h"\n#include "ps/round.h"\n')
    rc, out, err = run("--root", clean, "--max-lines", "12")
    expect(rc == 0, f"clean tree: exit status {rc}, expected 0; output: {out} {err}")
    expect(out[-1:] == ["check_layers: 13 files, 10 includes between them: no violation"],
           f"clean tree: summary {out[-1:]}")

    # 3. A nested fixture is skipped when its parent tree is checked.
    shutil.copytree(FIXTURE, os.path.join(clean, "tests", "nested"))
    rc, out, err = run("--root", clean, "--max-lines", "12")
    expect(rc == 0, f"nested fixture not skipped: exit status {rc}; output: {out}")

    # 4. A folder that is no layer is named.
    os.makedirs(os.path.join(clean, "misc"))
    with open(os.path.join(clean, "misc", "x.h"), "w") as f:
        f.write("// x\n")
    rc, out, err = run("--root", clean, "--max-lines", "12")
    expect(rc == 1 and any(l.startswith("misc/x.h:1: include: folder 'misc' is no layer") for l in out),
           f"unknown folder: exit status {rc}; output: {out}")

# 5. Bad arguments.
rc, out, err = run("--root", os.path.join(FIXTURE, "no-such-folder"))
expect(rc == 2 and "is not a folder" in err, f"missing root: exit status {rc}, stderr {err!r}")
rc, out, err = run("--root", FIXTURE, "--max-lines", "0")
expect(rc == 2 and "--max-lines" in err, f"--max-lines 0: exit status {rc}, stderr {err!r}")

if failures:
    print("check_layers_test: FAILED")
    for f in failures:
        print("- " + f)
    sys.exit(1)
print("check_layers_test: 5 checks passed")
