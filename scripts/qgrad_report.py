#!/usr/bin/python3
"""qgrad-report: plots and tables of bandwidth against convergence from qgrad-train metrics.

  scripts/qgrad-report RUNS... --out DIR [--target 0.84] [--title TEXT]

RUNS are metrics files (JSON lines written by `qgrad-train --metrics`) or folders holding them
(a qgrad-sweep folder: its manifest.json names each run's label and link). DIR receives:

  curves_steps.{png,svg}, curves_seconds.{png,svg}, curves_bytes.{png,svg}
      test accuracy (top) and training loss (bottom) against steps, seconds and bytes sent per
      rank; one column per link, one colour per codec; seeds averaged at each evaluation
  step_time.{png,svg}
      mean time per step split into compute, encode, exchange, decode and update, per run
      group, with the measured wall time per step as a black tick
  summary.csv, summary.md
      one row per codec and link: final accuracy, time and bytes to the target accuracy,
      compression ratio, seconds per step, speedup against `none` (fp32) at the same link;
      means over seeds with their standard deviation
  index.html
      all of the above on one page

Time and bytes to target: the evaluations of a run are points (seconds, bytes sent, accuracy).
The target is reached between the first evaluation at or above it and the one before; the time
and the bytes are interpolated linearly between those two points. If the very first evaluation
is already at or above the target, its own time and bytes count (nothing is assumed about the
accuracy before it). A run that never reaches the target has no time to target; a group's
mean is over the seeds that reached it, and the table says "k/n" when some did not. The speedup
of a group is fp32's mean time to target at the same link divided by the group's; it is left
empty when either did not reach the target on every seed.

Files that cannot be used are named in a warning on stderr (and in index.html) and skipped;
the rest is reported: unreadable or empty files, lines that are not JSON, a truncated last line
(a run killed while writing), runs without a summary record (crashed or unfinished), and runs
of another model, data set or rank count than the majority. Exit status: 0 when something was
reported, 1 when no run was usable, 2 on a bad command line.
"""
import argparse
import csv
import html
import io
import json
import math
import os
import statistics
import sys
from collections import Counter

# Fields every record of a usable run must have (train/metrics.h).
STEP_FIELDS = ("step", "seconds", "bytes_sent", "loss")
SUMMARY_FIELDS = ("model", "data", "codec", "world", "seed", "test_accuracy", "seconds",
                  "step_seconds", "bytes_sent", "raw_bytes", "compression_ratio", "steps",
                  "compute_s", "encode_s", "exchange_s", "decode_s")
TIME_PARTS = ("compute_s", "encode_s", "exchange_s", "decode_s", "update_s")
PLOTS = ("curves_steps", "curves_seconds", "curves_bytes", "step_time")


class ReportError(Exception):
    """A run that cannot be reported: the message says what is wrong with it."""


def warn(warnings, path, problem):
    message = f"{path}: {problem}"
    warnings.append(message)
    print(f"qgrad-report: warning: {message}", file=sys.stderr, flush=True)


# --- reading ---------------------------------------------------------------------------------


class Run:
    """One metrics file: its step records, its summary, and how to label it."""

    def __init__(self, path, records, summary, label, link):
        self.path = path
        self.records = records      # step records, in order
        self.summary = summary
        self.label = label          # codec as the user named it (manifest), or derived
        self.link = link            # link spec, "none" when not emulated
        self.evals = [r for r in records if isinstance(r.get("accuracy"), (int, float))]

    @property
    def setup(self):
        s = self.summary
        return (s["model"], s["data"], s["world"])


def read_run(path, manifest_entry=None):
    """Parses one metrics file; raises ReportError naming the problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ReportError(f"cannot read: {e.strerror}") from None
    if not raw.strip():
        raise ReportError("empty file")
    problems = []
    lines = raw.split(b"\n")
    if lines[-1].strip():
        # qgrad-train ends every record with a newline: a last line without one was cut short.
        problems.append(f"truncated last line (line {len(lines)}, {len(lines[-1])} bytes without "
                        "a newline): ignored")
    lines = lines[:-1]
    records, summary = [], None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ReportError(f"line {number} is not JSON: {line[:60]!r}") from None
        if not isinstance(rec, dict):
            raise ReportError(f"line {number} is not a JSON object")
        if rec.get("summary") is True:
            if summary is not None:
                raise ReportError(f"line {number}: a second summary record")
            missing = [k for k in SUMMARY_FIELDS if k not in rec]
            if missing:
                raise ReportError(f"line {number}: summary record lacks {', '.join(missing)}")
            summary = rec
        else:
            if summary is not None:
                raise ReportError(f"line {number}: a step record after the summary")
            missing = [k for k in STEP_FIELDS if not isinstance(rec.get(k), (int, float))]
            if missing:
                raise ReportError(f"line {number}: step record lacks {', '.join(missing)}")
            records.append(rec)
    if summary is None:
        problems.append("no summary record: the run crashed or has not finished")
        raise ReportError("; ".join(problems))
    if not records:
        raise ReportError("a summary but no step records")
    entry = manifest_entry or {}
    label = entry.get("label") or default_label(summary)
    link = entry.get("link") or summary.get("link") or "none"
    run = Run(path, records, summary, label, link)
    run.problems = problems  # not fatal: reported, the run is still used
    return run


def default_label(summary):
    label = summary["codec"]
    if summary.get("error_feedback"):
        label += " +ef"
    if summary.get("optimizer") not in (None, "sgd"):
        label += f" ({summary['optimizer']})"
    return label


def load_manifest(folder, warnings):
    """Maps metrics file paths to their manifest entries (label, link), when a sweep wrote one."""
    path = os.path.join(folder, "manifest.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            manifest = json.load(f)
        return {os.path.normpath(os.path.join(folder, r["metrics"])): r for r in manifest["runs"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        warn(warnings, path, f"unreadable manifest ({e}): labels come from the metrics")
        return {}


def collect(paths, warnings):
    """Every usable run under `paths` (files, or folders of *.jsonl files)."""
    files = []
    manifests = {}
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, n) for n in os.listdir(p) if n.endswith(".jsonl"))
            if not found:
                warn(warnings, p, "folder holds no .jsonl metrics files")
            # A sweep's runs in the manifest's order (its grid's), then any others by name.
            folder = os.path.abspath(p)
            manifests[folder] = load_manifest(folder, warnings)
            rank = {path: i for i, path in enumerate(manifests[folder])}
            found.sort(key=lambda f: (rank.get(os.path.normpath(os.path.abspath(f)), len(rank)),
                                      f))
            files += found
        else:
            files.append(p)
    runs = []
    for f in files:
        folder = os.path.dirname(os.path.abspath(f))
        if folder not in manifests:
            manifests[folder] = load_manifest(folder, warnings)
        try:
            run = read_run(f, manifests[folder].get(os.path.normpath(os.path.abspath(f))))
        except ReportError as e:
            warn(warnings, f, f"{e}: skipped")
            continue
        for problem in run.problems:
            warn(warnings, f, problem)
        runs.append(run)
    if not runs:
        return runs
    # One report compares codecs on one setup: the most common (model, data, ranks) wins, ties
    # going to the first file's.
    counts = Counter(r.setup for r in runs)
    best = max(counts.values())
    setup = next(r.setup for r in runs if counts[r.setup] == best)
    kept = []
    for r in runs:
        if r.setup != setup:
            warn(warnings, r.path, f"model {r.setup[0]} on {r.setup[1]} with {r.setup[2]} ranks "
                 f"differs from the report's {setup[0]} on {setup[1]} with {setup[2]} ranks: "
                 "skipped")
        else:
            kept.append(r)
    return kept


# --- measures --------------------------------------------------------------------------------


def to_target(run, target):
    """(seconds, bytes, step) at which `run` first reaches `target`, or None (see the module
    docstring for the interpolation rule)."""
    prev = None
    for e in run.evals:
        if e["accuracy"] >= target:
            if prev is None:
                return (e["seconds"], e["bytes_sent"], e["step"])
            f = (target - prev["accuracy"]) / (e["accuracy"] - prev["accuracy"])
            return tuple(prev[k] + f * (e[k] - prev[k]) for k in ("seconds", "bytes_sent", "step"))
        prev = e
    return None


def mean_sd(values):
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


class Group:
    """The seeds of one codec (label) at one link."""

    def __init__(self, label, link, runs, target):
        self.label, self.link, self.runs = label, link, runs
        self.codec = runs[0].summary["codec"]
        hits = [to_target(r, target) for r in runs]
        reached = [h for h in hits if h is not None]
        self.seeds = len(runs)
        self.reached = len(reached)
        self.accuracy = mean_sd([r.summary["test_accuracy"] for r in runs])
        self.time_to_target = mean_sd([h[0] for h in reached])
        self.bytes_to_target = mean_sd([h[1] for h in reached])
        self.steps_to_target = mean_sd([h[2] for h in reached])
        self.ratio = mean_sd([r.summary["compression_ratio"] for r in runs])
        self.step_seconds = mean_sd([r.summary["step_seconds"] for r in runs])
        self.seconds = mean_sd([r.summary["seconds"] for r in runs])
        self.bytes_sent = mean_sd([r.summary["bytes_sent"] for r in runs])
        self.times = {k: statistics.mean(r.summary.get(k, 0.0) for r in runs) for k in TIME_PARTS}
        self.speedup = None

    @property
    def is_fp32(self):
        return self.codec == "none"


def make_groups(runs, target):
    order, members = [], {}
    for r in runs:
        key = (r.label, r.link)
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(r)
    # Rows by link (in order of first appearance), then codec (the same).
    links = list(dict.fromkeys(link for _, link in order))
    labels = list(dict.fromkeys(label for label, _ in order))
    order.sort(key=lambda k: (links.index(k[1]), labels.index(k[0])))
    groups = [Group(label, link, members[(label, link)], target) for label, link in order]
    for g in groups:
        base = next((b for b in groups if b.link == g.link and b.is_fp32), None)
        if (base is not None and base.reached == base.seeds and g.reached == g.seeds
                and g.reached > 0 and g.time_to_target[0] > 0):
            g.speedup = base.time_to_target[0] / g.time_to_target[0]
    return groups


def links_in_order(groups):
    links = []
    for g in groups:
        if g.link not in links:
            links.append(g.link)
    return links


# --- tables ----------------------------------------------------------------------------------

CSV_COLUMNS = ("label", "codec", "link", "seeds", "final_accuracy", "final_accuracy_sd",
               "reached_target", "time_to_target_s", "time_to_target_s_sd", "bytes_to_target",
               "bytes_to_target_sd", "steps_to_target", "compression_ratio", "step_seconds",
               "seconds", "bytes_sent", "speedup_vs_fp32")


def csv_text(groups, target):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    num = lambda v: "" if v is None else repr(round(v, 9))
    for g in groups:
        w.writerow([g.label, g.codec, g.link, g.seeds, num(g.accuracy[0]), num(g.accuracy[1]),
                    g.reached, num(g.time_to_target[0]), num(g.time_to_target[1]),
                    num(g.bytes_to_target[0]), num(g.bytes_to_target[1]),
                    num(g.steps_to_target[0]), num(g.ratio[0]), num(g.step_seconds[0]),
                    num(g.seconds[0]), num(g.bytes_sent[0]), num(g.speedup)])
    return out.getvalue()


def fmt_spread(ms, scale=1.0, digits=2, unit=""):
    mean, sd = ms
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}f}{unit}"
    return text + (f" ± {sd * scale:.{digits}f}" if sd else "")


def table_rows(groups, target):
    pct = f"{100 * target:g}%"
    header = ["codec", "link", "seeds", "final test accuracy", f"time to {pct} (s)",
              f"MB sent to {pct}", "compression ratio", "s / step", "speedup vs fp32"]
    rows = []
    for g in groups:
        note = "" if g.reached == g.seeds else f" ({g.reached}/{g.seeds})"
        reached = g.reached > 0
        rows.append([
            g.label, g.link, str(g.seeds), fmt_spread(g.accuracy, 100, 2, "%"),
            (fmt_spread(g.time_to_target, 1, 1) + note) if reached else "not reached",
            (fmt_spread(g.bytes_to_target, 1e-6, 1) + note) if reached else "not reached",
            f"{g.ratio[0]:.1f}x", f"{g.step_seconds[0]:.4f}",
            "-" if g.speedup is None else f"{g.speedup:.2f}x"])
    return header, rows


def markdown_text(groups, target, setup):
    header, rows = table_rows(groups, target)
    lines = [f"{setup_line(setup, groups)}; target accuracy {100 * target:g}%.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(row))
                     + " |")
    lines += ["", "Means over seeds ± standard deviation; time and bytes to target are "
              "interpolated linearly between the two evaluations around the first crossing; "
              "speedup = fp32's time to target / this codec's, at the same link."]
    return "\n".join(lines) + "\n"


def setup_line(setup, groups):
    model, data, world = setup
    seeds = sorted({r.summary["seed"] for g in groups for r in g.runs})
    return (f"{model} on {data}, {world} ranks, seeds {', '.join(map(str, seeds))}")


# --- plots -----------------------------------------------------------------------------------


def curve(runs, key, x):
    """Mean over seeds of `key` against `x` at the records every seed has (by step)."""
    per_seed = []
    for r in runs:
        recs = r.evals if key == "accuracy" else r.records
        per_seed.append({rec["step"]: rec for rec in recs if key in rec})
    steps = sorted(set.intersection(*(set(s) for s in per_seed)))
    xs = [statistics.mean(s[st][x] for s in per_seed) for st in steps]
    ys = [statistics.mean(s[st][key] for s in per_seed) for st in steps]
    return xs, ys


def save_figure(fig, out_dir, name):
    for ext in ("png", "svg"):
        path = os.path.join(out_dir, f"{name}.{ext}")
        tmp = f"{path}.tmp{os.getpid()}"
        kwargs = {"dpi": 90} if ext == "png" else {"metadata": {"Date": None}}
        fig.savefig(tmp, format=ext, bbox_inches="tight", **kwargs)
        os.replace(tmp, path)


def plot_curves(plt, groups, out_dir, target, x, name, xlabel, log_x):
    links = links_in_order(groups)
    labels = list(dict.fromkeys(g.label for g in groups))
    colors = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
    styles = {label: "-" if i < 10 else "--" for i, label in enumerate(labels)}
    fig, axes = plt.subplots(2, len(links), figsize=(5.2 * len(links) + 2.6, 7.5), squeeze=False,
                             sharey="row")
    for col, link in enumerate(links):
        acc_ax, loss_ax = axes[0][col], axes[1][col]
        for g in (g for g in groups if g.link == link):
            scale = 1e-6 if x == "bytes_sent" else 1.0
            xs, ys = curve(g.runs, "accuracy", x)
            acc_ax.plot([v * scale for v in xs], [100 * v for v in ys], styles[g.label],
                        marker=".", markersize=3, color=colors[g.label], label=g.label,
                        linewidth=1.2)
            xs, ys = curve(g.runs, "loss", x)
            loss_ax.plot([v * scale for v in xs], ys, styles[g.label], color=colors[g.label],
                         linewidth=0.9)
        acc_ax.axhline(100 * target, color="grey", linestyle=":", linewidth=1)
        acc_ax.set_title(f"link {link}")
        acc_ax.set_ylabel("test accuracy (%)")
        loss_ax.set_ylabel("training loss")
        loss_ax.set_xlabel(xlabel)
        for ax in (acc_ax, loss_ax):
            ax.grid(True, alpha=0.3)
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(plt.NullFormatter())
        # Zoom on the interesting part: the low accuracies of the first steps squash the rest.
        lows = [min(100 * e["accuracy"] for e in r.evals) for g in groups for r in g.runs
                if r.evals]
        if lows:
            acc_ax.set_ylim(max(min(lows), 100 * target - 15) - 1, None)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    save_figure(fig, out_dir, name)
    plt.close(fig)


def plot_step_time(plt, groups, out_dir):
    links = links_in_order(groups)
    rows = max(sum(1 for g in groups if g.link == link) for link in links)
    fig, axes = plt.subplots(1, len(links), figsize=(5.6 * len(links) + 2.4, 0.38 * rows + 1.6),
                             squeeze=False)
    colors = {"compute_s": "#4c72b0", "encode_s": "#dd8452", "exchange_s": "#c44e52",
              "decode_s": "#55a868", "update_s": "#8172b3"}
    for col, link in enumerate(links):
        ax = axes[0][col]
        mine = [g for g in groups if g.link == link]
        ys = list(range(len(mine)))[::-1]
        left = [0.0] * len(mine)
        for part in TIME_PARTS:
            widths = [1e3 * g.times[part] for g in mine]
            ax.barh(ys, widths, left=left, color=colors[part], label=part[:-2], height=0.7)
            left = [a + b for a, b in zip(left, widths)]
        ax.plot([1e3 * g.step_seconds[0] for g in mine], ys, "k|", markersize=14,
                label="wall time per step")
        ax.set_yticks(ys)
        ax.set_yticklabels([g.label for g in mine], fontsize=8)
        ax.set_xlabel("milliseconds per step")
        ax.set_title(f"link {link}")
        ax.grid(True, axis="x", alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    save_figure(fig, out_dir, "step_time")
    plt.close(fig)


def write_plots(groups, out_dir, target):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams["svg.hashsalt"] = "qgrad"  # the same input gives the same SVG
    plot_curves(plt, groups, out_dir, target, "step", "curves_steps", "step", False)
    plot_curves(plt, groups, out_dir, target, "seconds", "curves_seconds",
                "seconds (wall, emulated link)", True)
    plot_curves(plt, groups, out_dir, target, "bytes_sent", "curves_bytes",
                "MB sent per rank", True)
    plot_step_time(plt, groups, out_dir)


# --- html ------------------------------------------------------------------------------------


def html_text(groups, target, setup, warnings, title):
    header, rows = table_rows(groups, target)
    e = html.escape
    parts = [
        "<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;border:1px solid #eee}.warn{color:#a40}</style>",
        "</head><body>", f"<h1>{e(title)}</h1>",
        f"<p>{e(setup_line(setup, groups))}; target accuracy {100 * target:g}%. "
        "Data: <a href=\"summary.csv\">summary.csv</a>, "
        "<a href=\"summary.md\">summary.md</a>.</p>"]
    if warnings:
        parts.append("<h2>Warnings</h2><ul class=\"warn\">")
        parts += [f"<li>{e(w)}</li>" for w in warnings]
        parts.append("</ul>")
    parts.append("<h2>Summary</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header)
                 + "</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</table><p>Means over seeds ± standard deviation. Time and bytes to target "
                 "are interpolated linearly between the evaluations around the first crossing; "
                 "speedup = fp32's time to target / this codec's, at the same link.</p>")
    captions = {
        "curves_seconds": "Test accuracy and training loss against wall seconds",
        "curves_bytes": "Test accuracy and training loss against megabytes sent per rank",
        "curves_steps": "Test accuracy and training loss against steps",
        "step_time": "Time per step: compute, encode, exchange, decode, update",
    }
    for name in ("curves_seconds", "curves_bytes", "curves_steps", "step_time"):
        parts.append(f"<h2>{e(captions[name])}</h2><p><img src=\"{name}.png\" "
                     f"alt=\"{e(captions[name])}\"><br><a href=\"{name}.svg\">SVG</a></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_text(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def report(paths, out_dir, target, title="qgrad: bandwidth against convergence"):
    """Writes the report; returns (groups, warnings). Raises ReportError when nothing is usable."""
    warnings = []
    runs = collect(paths, warnings)
    if not runs:
        raise ReportError("no usable metrics among the runs given")
    groups = make_groups(runs, target)
    setup = runs[0].setup
    os.makedirs(out_dir, exist_ok=True)
    write_text(os.path.join(out_dir, "summary.csv"), csv_text(groups, target))
    write_text(os.path.join(out_dir, "summary.md"), markdown_text(groups, target, setup))
    write_plots(groups, out_dir, target)
    write_text(os.path.join(out_dir, "index.html"),
               html_text(groups, target, setup, warnings, title))
    return groups, warnings


def main(argv=None):
    parser = argparse.ArgumentParser(prog="qgrad-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUNS",
                        help="metrics files or folders of them (a qgrad-sweep folder)")
    parser.add_argument("--out", required=True, help="folder for the plots, tables and page")
    parser.add_argument("--target", type=float, default=0.84,
                        help="target test accuracy, a fraction in (0, 1] (default 0.84)")
    parser.add_argument("--title", default="qgrad: bandwidth against convergence")
    args = parser.parse_args(argv)
    if not (0 < args.target <= 1) or math.isnan(args.target):
        parser.error(f"--target must be a fraction in (0, 1], got {args.target}")
    try:
        groups, warnings = report(args.runs, args.out, args.target, args.title)
    except ReportError as e:
        print(f"qgrad-report: error: {e}", file=sys.stderr)
        return 1
    runs = sum(g.seeds for g in groups)
    print(f"qgrad-report: {runs} runs in {len(groups)} groups"
          f"{f', {len(warnings)} warnings' if warnings else ''}; "
          f"report in {os.path.join(args.out, 'index.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
