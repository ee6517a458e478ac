#!/usr/bin/python3
"""qgrad-sweep: a grid of codecs x links x seeds, one qgrad-train run each, in one folder.

  scripts/qgrad-sweep --out DIR [--preset fashion-mnist]
        [--codecs "CODEC [FLAGS];CODEC [FLAGS];..."] [--links 100mbit,1gbit] [--seeds 1,2,3]
        [--model M] [--data D] [--ranks N] [--epochs E] [--netlab] [--train PATH]
        [-- COMMON QGRAD-TRAIN FLAGS]

Each entry of --codecs is a codec spec followed by the qgrad-train flags of that codec only
(e.g. "sign --optimizer signum --lr 0.001"); flags after `--` go to every run. Each run trains
with `qgrad-train --ranks N --link LINK` (the in-process link emulator, the default: quick, no
privileges), or with --netlab as an MPI job across N network namespaces whose links
scripts/netlab.sh shapes with tc tbf at LINK (needs root; LINK is a tc rate, no latency).

DIR receives one metrics file (NAME.jsonl) and one log (NAME.log, qgrad-train's output) per run,
and manifest.json: the grid, and per run its label, codec, link, seed, command line, status
(pending, running, done, failed, interrupted), exit code, wall seconds and paths. The manifest
is rewritten (atomically) whenever a run starts or ends. Running the same command again resumes:
a run whose metrics file ends in a summary record is finished and skipped (when its recorded
command is the same); any other run (crashed, killed, failed, never started) is run again from
scratch. Adding seeds, codecs or links to a finished sweep runs only the new runs.

Progress: one line per run as it starts and ends, and qgrad-train's progress every 10 s.
Exit status: 0 every run done, 1 some run failed, 2 bad command line, 130 interrupted.
Then: scripts/qgrad-report DIR --out DIR/report.
"""
import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TRAIN = os.path.join(ROOT, "build", "bin", "qgrad-train")
NETLAB = os.path.join(ROOT, "scripts", "netlab.sh")
MANIFEST_VERSION = 1

# The issue-6 measurement: the Fashion-MNIST MLP on 4 ranks, every codec with the optimizer
# settings that scripts/convergence.py found to work (README, "Fashion-MNIST convergence").
SGD = "--optimizer sgd --lr 0.1 --momentum 0.9"
PRESETS = {
    "fashion-mnist": {
        "model": "mlp", "data": "fashion-mnist", "ranks": 4, "epochs": 3,
        "links": ["100mbit", "1gbit"], "seeds": [1],
        "codecs": [
            f"none {SGD}",
            f"fp16 {SGD}",
            f"qsgd:bits=4 {SGD}",
            f"qsgd:bits=2 {SGD}",
            f"int8 {SGD}",
            # signSGD with majority vote: Signum, momentum before the sign.
            "sign --optimizer signum --lr 0.001 --momentum 0.9",
            # EF-signSGD: plain SGD with the error memory (momentum diverged, see docs/measurements.md).
            "sign:scale=l1 --ef --optimizer sgd --lr 0.8",
            f"zipml:bits=4 {SGD}",
            f"terngrad {SGD}",
            # Top-k is biased: it needs the error memory.
            f"topk:ratio=0.01 --ef {SGD}",
        ],
        "common": ["--batch", "64", "--lr-schedule", "cosine", "--eval-every", "25"],
    },
}


class SweepError(Exception):
    pass


def label_of(codec, flags):
    """The run's name in tables: the codec, +ef, and the optimizer when it is not SGD."""
    label = codec
    if "--ef" in flags:
        label += " +ef"
    if "--optimizer" in flags:
        i = flags.index("--optimizer")
        if i + 1 < len(flags) and flags[i + 1] != "sgd":
            label += f" ({flags[i + 1]})"
    return label


def slug(text):
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_")


def parse_codecs(text):
    entries = []
    for item in text.split(";"):
        if not item.strip():
            continue
        try:
            tokens = shlex.split(item)
        except ValueError as e:
            raise SweepError(f"--codecs: cannot split '{item.strip()}': {e}") from None
        if tokens[0].startswith("-"):
            raise SweepError(f"--codecs: '{item.strip()}' must start with a codec spec, "
                             "then that codec's flags")
        entries.append({"codec": tokens[0], "flags": tokens[1:],
                        "label": label_of(tokens[0], tokens[1:])})
    if not entries:
        raise SweepError("--codecs: no codec given")
    labels = [e["label"] for e in entries]
    dup = {l for l in labels if labels.count(l) > 1}
    if dup:
        raise SweepError(f"--codecs: two entries have the label {sorted(dup)[0]} (the same codec, "
                         "+ef and optimizer): results would mix")
    return entries


def check_link(link, netlab):
    if netlab:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps)",
                            link):
            raise SweepError(f"--links: '{link}' is not a tc rate (e.g. 100mbit, 1gbit); "
                             "--netlab shapes bandwidth only, no latency or burst")
    elif not re.fullmatch(r"[A-Za-z0-9.,=_]+", link):
        raise SweepError(f"--links: '{link}' is not a link spec (RATE[,latency=US][,burst=B])")


def plan(args):
    """The grid and its runs, in the order they run: link, then codec, then seed."""
    codecs = parse_codecs(args.codecs)
    # "100mbit,1gbit" is two links; "1gbit,latency=50" one; ';' separates specs with commas.
    if ";" in args.links or "=" not in args.links:
        links = [l for l in re.split(r"[;]" if ";" in args.links else r",", args.links) if l]
    else:
        links = [args.links]
    for link in links:
        check_link(link, args.netlab)
    out = os.path.abspath(args.out)
    train = os.path.abspath(args.train)
    grid = {"model": args.model, "data": args.data, "ranks": args.ranks, "epochs": args.epochs,
            "links": links, "seeds": args.seeds, "codecs": codecs, "common": args.common,
            "mode": "netlab" if args.netlab else "link"}
    runs = []
    for link in links:
        for c in codecs:
            for seed in args.seeds:
                name = f"{slug(c['label'])}-{slug(link)}-seed{seed}"
                metrics = os.path.join(out, name + ".jsonl")
                flags = ["--model", args.model, "--data", args.data, "--epochs",
                         str(args.epochs), "--seed", str(seed), "--codec", c["codec"],
                         *c["flags"], *args.common, "--metrics", metrics]
                if args.netlab:
                    command = [NETLAB, "--hosts", str(args.ranks), "--rate", link, "--", train,
                               *flags]
                    shown_link = f"netlab:{link}"
                else:
                    command = [train, "--ranks", str(args.ranks), "--link", link, *flags]
                    shown_link = link
                runs.append({"name": name, "label": c["label"], "codec": c["codec"],
                             "link": shown_link, "seed": seed, "command": command,
                             "metrics": name + ".jsonl", "log": name + ".log",
                             "status": "pending", "exit_code": None, "seconds": None})
    return grid, runs


def finished(path):
    """A run is finished when its metrics file ends in a whole summary record."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read()
    except OSError:
        return False
    if not tail.endswith(b"\n"):
        return False
    try:
        last = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except ValueError:
        return False
    return isinstance(last, dict) and last.get("summary") is True


def write_manifest(out, grid, runs):
    path = os.path.join(out, "manifest.json")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"version": MANIFEST_VERSION, "grid": grid, "runs": runs}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def load_previous(out):
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            manifest = json.load(f)
        if manifest.get("version") != MANIFEST_VERSION:
            raise ValueError(f"version {manifest.get('version')}")
        return list(manifest["runs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SweepError(f"{path} is not a qgrad-sweep manifest ({e}); use another --out") \
            from None


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def run_one(out, run, index, total):
    metrics = os.path.join(out, run["metrics"])
    if os.path.exists(metrics):
        os.remove(metrics)  # a partial file of a crashed or killed run: start afresh
    print(f"[{index}/{total}] {run['label']} at {run['link']}, seed {run['seed']}: running",
          flush=True)
    start = time.monotonic()
    last_echo = start
    log_path = os.path.join(out, run["log"])
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(shlex.quote(c) for c in run["command"]) + "\n")
        log.flush()
        # A session of its own: an interrupted sweep stops the whole run (mpirun and ranks).
        child = subprocess.Popen(run["command"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                 env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
                                          OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
        try:
            for line in child.stdout:
                log.write(line)
                now = time.monotonic()
                if line.startswith("epoch") and now - last_echo >= 10:
                    print(f"    {line.rstrip()}", flush=True)
                    last_echo = now
            rc = child.wait()
        except BaseException:
            try:
                os.killpg(child.pid, signal.SIGTERM)
                child.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
            raise
    run["seconds"] = round(time.monotonic() - start, 3)
    run["exit_code"] = rc
    if rc == 0 and finished(metrics):
        run["status"] = "done"
        with open(metrics, "rb") as f:
            s = json.loads(f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])
        print(f"[{index}/{total}] done in {run['seconds']:.1f} s: test accuracy "
              f"{100 * s['test_accuracy']:.2f}%, {s['bytes_sent'] / 1e6:.1f} MB sent per rank, "
              f"ratio {s['compression_ratio']:.1f}x, {s['seconds']:.1f} s training", flush=True)
    else:
        run["status"] = "failed"
        with open(log_path) as f:
            tail = f.read().splitlines()[-3:]
        why = "no summary record in the metrics" if rc == 0 else f"exit status {rc}"
        print(f"[{index}/{total}] FAILED ({why}); log {log_path}:", flush=True)
        for line in tail:
            print(f"    {line}", flush=True)


def sweep(args):
    grid, runs = plan(args)
    out = os.path.abspath(args.out)
    if args.netlab and os.geteuid() != 0:
        raise SweepError("--netlab needs root (ip netns, tc); use the in-process limiter "
                         "(the default) otherwise")
    if not os.access(args.train, os.X_OK):
        raise SweepError(f"{args.train} is not an executable (build it: ninja -C build "
                         "qgrad-train, or give --train PATH)")
    os.makedirs(out, exist_ok=True)
    previous = {r.get("name"): r for r in load_previous(out)}
    mine = {r["name"] for r in runs}
    # Runs of an earlier, larger grid stay listed: their files are still in the folder.
    kept = [r for name, r in previous.items() if name not in mine]
    all_runs = runs + kept
    todo = []
    for r in runs:
        old = previous.get(r["name"])
        if (old is not None and old.get("command") == r["command"]
                and finished(os.path.join(out, r["metrics"]))):
            r.update({k: old.get(k) for k in ("status", "exit_code", "seconds")})
            r["status"] = "done"
        else:
            todo.append(r)
    write_manifest(out, grid, all_runs)
    skipped = len(runs) - len(todo)
    print(f"qgrad-sweep: {len(runs)} runs ({len(grid['codecs'])} codecs x {len(grid['links'])} "
          f"links x {len(grid['seeds'])} seeds, {grid['mode']}) in {out}"
          + (f"; {skipped} finished earlier, skipped" if skipped else ""), flush=True)
    failed = 0
    current = None  # the run whose process may be going when a signal comes
    try:
        for i, r in enumerate(runs, 1):
            if r not in todo:
                print(f"[{i}/{len(runs)}] {r['label']} at {r['link']}, seed {r['seed']}: "
                      "finished earlier, skipped", flush=True)
                continue
            current = r
            r["status"] = "running"
            write_manifest(out, grid, all_runs)
            run_one(out, r, i, len(runs))
            failed += r["status"] == "failed"
            write_manifest(out, grid, all_runs)
    except Interrupted as e:
        # The signal can come at any point of the loop, also between two runs; a run that had
        # not ended is marked interrupted (a later sweep redoes it like a pending one).
        if current is not None and current["status"] == "running":
            current["status"] = "interrupted"
        write_manifest(out, grid, all_runs)
        print(f"qgrad-sweep: interrupted ({e}); run the same command again to resume",
              file=sys.stderr, flush=True)
        return 130
    print(f"qgrad-sweep: {len(runs) - failed} of {len(runs)} runs done"
          + (f", {failed} FAILED (see their logs)" if failed else "")
          + f"; manifest {os.path.join(out, 'manifest.json')}", flush=True)
    print(f"report: scripts/qgrad-report {out} --out {os.path.join(out, 'report')}", flush=True)
    return 1 if failed else 0


def parse_args(argv):
    common = []
    if "--" in argv:
        i = argv.index("--")
        argv, common = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(prog="qgrad-sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the sweep's folder")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="the grid of a named measurement (other options override it)")
    parser.add_argument("--codecs", help='"CODEC [FLAGS];..." (qgrad-codec list)')
    parser.add_argument("--links", help="comma-separated link specs, e.g. 100mbit,1gbit "
                        "(';'-separated when a spec has a comma: 1gbit,latency=50;100mbit)")
    parser.add_argument("--seeds", help="comma-separated seeds (default 1)")
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--ranks", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--netlab", action="store_true",
                        help="run each job across network namespaces (scripts/netlab.sh; root)")
    parser.add_argument("--train", default=DEFAULT_TRAIN, help="the qgrad-train binary")
    args = parser.parse_args(argv)
    preset = PRESETS.get(args.preset, {})
    args.common = list(preset.get("common", [])) + common
    args.codecs = args.codecs or ";".join(preset.get("codecs", []))
    args.links = args.links or ",".join(preset.get("links", []))
    args.model = args.model or preset.get("model", "mlp")
    args.data = args.data or preset.get("data", "fashion-mnist")
    args.ranks = args.ranks or preset.get("ranks", 4)
    args.epochs = args.epochs or preset.get("epochs", 1)
    if not args.codecs:
        parser.error("give --codecs (or a --preset)")
    if not args.links:
        parser.error("give --links (or a --preset)")
    try:
        seeds = args.seeds.split(",") if args.seeds else preset.get("seeds", [1])
        args.seeds = [int(s) for s in seeds]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got '{args.seeds}'")
    if not 1 <= args.ranks <= 64:
        parser.error(f"--ranks must be in 1..64, got {args.ranks}")
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return sweep(args)
    except SweepError as e:
        print(f"qgrad-sweep: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"qgrad-sweep: interrupted ({e})", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
