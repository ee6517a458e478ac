#!/usr/bin/env python3
"""Checks qgrad's layering rules on every C++ source of a tree; see docs/architecture.md.

    /usr/bin/python3 scripts/check_layers.py [--root DIR] [--max-lines N]

Three kinds of violation, each printed as `path:line: kind: message`:
  include  a quoted include that crosses the layers downward-only rule (core <- comm <- optim <-
           ps <- train <- tools, bench, examples, tests, python), a quoted include that names no
           file of the tree (includes are written from the repository root), or a system header
           of a backend (<mpi.h>, gRPC, LibTorch, CUDA, NCCL) included by a library file outside
           that backend's folder;
  cycle    files that include each other, directly or through others (the cycle is printed);
  length   a file outside tests/ with more than --max-lines lines (600).
Exit status: 0 when there is no violation, 1 when there is any, 2 for bad arguments. The last
line is a one-line summary.

The files are those git tracks under DIR when DIR is the top of a git work tree, otherwise every
file found by walking DIR (build folders and hidden folders skipped). A folder holding a file
named LAYERS_FIXTURE is a test tree of its own and is skipped when an enclosing tree is checked.
Standard library only; run it with /usr/bin/python3 or any Python 3.8+.
"""

import argparse
import collections
import os
import re
import subprocess
import sys

SOURCE_SUFFIXES = (".h", ".cc", ".cu", ".cuh")

# Layer of each top-level folder, and which layers its quoted includes may name. The library
# layers form a chain; the folders on top may include anything.
LIBRARY_LAYERS = ["core", "comm", "optim", "ps", "train"]
TOP_FOLDERS = ["tools", "bench", "examples", "tests", "python"]
ALLOWED = {layer: set(LIBRARY_LAYERS[: i + 1]) for i, layer in enumerate(LIBRARY_LAYERS)}
for _top in TOP_FOLDERS:
    ALLOWED[_top] = None  # anything

# Headers generated into the build tree: they are not in the source tree, yet may be included.
GENERATED = {"core/config.h", "ps/ps.pb.h", "ps/ps.grpc.pb.h"}

# System headers of a backend, and the folders of the library layers allowed to include them
# directly (the top folders may include them anywhere: bench/torch_mpi_baseline.cc is the plain
# LibTorch + MPI loop that qgrad is measured against).
BACKEND_HEADERS = [
    ("MPI", re.compile(r"^mpi\.h$"), ["comm/mpi/"]),
    ("gRPC", re.compile(r"^(grpc|grpcpp|grpc\+\+)/"), ["ps/"]),
    ("LibTorch", re.compile(r"^(torch|ATen|c10|caffe2)/"), ["train/torch/"]),
    ("NCCL", re.compile(r"^nccl(_net)?\.h$"), ["comm/nccl/"]),
    (
        "CUDA",
        re.compile(r"^(cuda\w*\.h|cuda/|cub/|thrust/|curand\w*\.h|nvtx3/|cooperative_groups)"),
        ["core/cuda/", "comm/nccl/"],
    ),
]

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
SKIPPED_DIRS = {"build", "out", "node_modules", "__pycache__"}
FIXTURE_MARKER = "LAYERS_FIXTURE"


def list_files(root):
    """Relative paths (with '/') of the C++ sources under root, sorted."""
    files = None
    try:
        top = subprocess.run(
            ["git", "-C", root, "rev-parse", "--show-toplevel"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        if os.path.realpath(top) == os.path.realpath(root):
            out = subprocess.run(
                ["git", "-C", root, "ls-files", "-z"], capture_output=True, check=True
            ).stdout
            files = [p.decode() for p in out.split(b"\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames
                if not d.startswith(".") and d not in SKIPPED_DIRS and not d.startswith("build-")
            )
            rel = os.path.relpath(dirpath, root)
            for name in filenames:
                files.append(name if rel == "." else os.path.join(rel, name).replace(os.sep, "/"))
    fixture_dirs = {
        os.path.dirname(p) + "/" for p in files
        if os.path.basename(p) == FIXTURE_MARKER and os.path.dirname(p)
    }
    return sorted(
        p for p in files
        if p.endswith(SOURCE_SUFFIXES)
        and os.path.isfile(os.path.join(root, p))
        and not any(p.startswith(d) for d in fixture_dirs)
    )


def folder(path):
    return path.split("/", 1)[0] if "/" in path else ""


def read_lines(root, path):
    with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def check_includes(path, lines, known, violations, edges):
    layer = folder(path)
    if layer not in ALLOWED:
        violations.append(
            (path, 1, "include",
             f"folder '{layer or '.'}' is no layer "
             f"(known: {', '.join(LIBRARY_LAYERS + TOP_FOLDERS)}); add it to the layer table in "
             "scripts/check_layers.py and docs/architecture.md")
        )
        return
    allowed = ALLOWED[layer]
    in_comment = False
    for number, line in enumerate(lines, 1):
        # Skip block comments so that an include quoted in a comment is not read as one.
        stripped = line.strip()
        if in_comment:
            if "*/" in stripped:
                in_comment = False
            continue
        if stripped.startswith("/*") and "*/" not in stripped:
            in_comment = True
            continue
        m = INCLUDE_RE.match(line)
        if not m:
            continue
        kind, target = m.group(1), m.group(2).strip()
        if kind == "<":
            if layer in LIBRARY_LAYERS:
                for name, pattern, places in BACKEND_HEADERS:
                    if pattern.search(target) and not any(path.startswith(p) for p in places):
                        violations.append(
                            (path, number, "include",
                             f"<{target}> is a backend header ({name}); in the library only "
                             f"{' and '.join(places)} may include it")
                        )
            continue
        if target in known:
            edges[path].append((target, number))
        elif target not in GENERATED:
            relative = os.path.normpath(os.path.join(os.path.dirname(path), target))
            relative = relative.replace(os.sep, "/")
            hint = (f" (write it from the repository root: \"{relative}\")"
                    if relative in known else "")
            violations.append(
                (path, number, "include",
                 f"\"{target}\" names no file of the tree{hint}")
            )
            continue
        target_layer = folder(target)
        if allowed is not None and target_layer not in allowed:
            violations.append(
                (path, number, "include",
                 f"{layer}/ may include only "
                 f"{', '.join(l + '/' for l in sorted(allowed, key=LIBRARY_LAYERS.index))}, "
                 f"not \"{target}\" ({target_layer + '/' if target_layer else 'no'} layer)")
            )


def strongly_connected(nodes, edges):
    """Tarjan's algorithm, iterative; returns the components in discovery order."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(edges.get(start, [])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for target, _ in it:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges.get(target, []))))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                comps.append(comp)
    return comps


def shortest_cycle(first, members, edges):
    """A shortest include cycle through `first` inside one component: [(file, line), ...]."""
    parent = {first: None}
    queue = collections.deque([first])
    while queue:
        node = queue.popleft()
        for target, line in edges.get(node, []):
            if target not in members:
                continue
            if target == first:
                path = [(node, line)]
                while parent[path[-1][0]] is not None:
                    path.append(parent[path[-1][0]])
                return list(reversed(path))
            if target not in parent:
                parent[target] = (node, line)
                queue.append(target)
    return []


def check_cycles(files, edges, violations):
    for comp in strongly_connected(files, edges):
        members = set(comp)
        self_loop = any(t == comp[0] for t, _ in edges.get(comp[0], []))
        if len(comp) < 2 and not self_loop:
            continue
        first = min(comp)
        steps = shortest_cycle(first, members, edges)
        chain = " -> ".join([f"{f}:{line}" for f, line in steps] + [first])
        violations.append((first, steps[0][1] if steps else 1, "cycle",
                           f"include cycle: {chain}"))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Check qgrad's include layers, include cycles and file lengths.")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--root", default=os.path.join(here, ".."),
                        help="the tree to check (default: the repository holding this script)")
    parser.add_argument("--max-lines", type=int, default=600,
                        help="longest file allowed outside tests/ (default 600)")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
        print(f"check_layers: --root '{args.root}' is not a folder", file=sys.stderr)
        return 2
    if args.max_lines < 1:
        print(f"check_layers: --max-lines must be at least 1, not {args.max_lines}", file=sys.stderr)
        return 2

    files = list_files(root)
    known = set(files)
    violations = []
    edges = collections.defaultdict(list)
    counts = collections.Counter()
    for path in files:
        lines = read_lines(root, path)
        check_includes(path, lines, known, violations, edges)
        if folder(path) != "tests" and len(lines) > args.max_lines:
            violations.append((path, len(lines), "length",
                               f"{len(lines)} lines, more than {args.max_lines}: split it by job"))
    check_cycles(files, edges, violations)

    for path, line, kind, message in sorted(violations, key=lambda v: (v[0], v[1], v[2])):
        print(f"{path}:{line}: {kind}: {message}")
        counts[kind] += 1
    n_includes = sum(len(v) for v in edges.values())
    if violations:
        parts = ", ".join(f"{counts[k]} {k}" for k in ("include", "cycle", "length") if counts[k])
        print(f"check_layers: {len(violations)} violation(s) in {len(files)} files ({parts})")
        return 1
    print(f"check_layers: {len(files)} files, {n_includes} includes between them: no violation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
