"""py-spy raw (collapsed) stacks -> a flamegraph SVG and a top-functions summary, per process.

    .venv/bin/python bench/flame.py RAW.txt [RAW.txt ...] --out DIR

A py-spy recording with ``--subprocesses`` nests each process under frames ``process PID:"cmd"``;
the stacks are split by the innermost of them, so the SVG shows one tower per process (the
API process, the background workers, each role, each sandbox) and the summary lists, for each
process, its share of the samples and its top functions by own time (self) and by time below
them (total). bench/profile.sh runs an e2e benchmark under py-spy and then this.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

WIDTH = 1600
ROW = 17
MIN_SHARE = 0.0005  # narrower frames are not drawn
TOP = 25
PROCESS = re.compile(r'^process \d+:"(.*)"$')


@dataclass
class Node:
    name: str
    count: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def parse(paths: list[Path]) -> dict[str, list[tuple[list[str], int]]]:
    """Stacks by process label: (frames root first, samples)."""
    by_process: dict[str, list[tuple[list[str], int]]] = {}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            procs = [i for i, f in enumerate(frames) if PROCESS.match(f)]
            label = _label(frames[procs[-1]]) if procs else path.stem
            rest = frames[procs[-1] + 1 :] if procs else frames
            by_process.setdefault(label, []).append((rest, int(count)))
    return by_process


def _label(frame: str) -> str:
    match = PROCESS.match(frame)
    cmd = match.group(1) if match else frame
    for marker, name in (("paygrid.cli ", "paygrid "), ("-m ", "")):
        if marker in cmd:
            cmd = name + cmd.split(marker, 1)[1]
            break
    return re.sub(r"\s+--\S+\s+\S+", "", cmd)[:60].strip() or "python"


def tree(by_process: dict[str, list[tuple[list[str], int]]]) -> Node:
    root = Node("all")
    for label, stacks in by_process.items():
        for frames, count in stacks:
            node = root
            node.count += count
            for name in [f"[{label}]", *frames]:
                node = node.children.setdefault(name, Node(name))
                node.count += count
    return root


def svg(root: Node) -> str:
    depth = _depth(root)
    height = (depth + 2) * ROW
    rects: list[str] = []
    _draw(root, 0.0, 0, root.count or 1, rects)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        'font-family="monospace" font-size="11">'
        f'<text x="4" y="{ROW - 4}">paygrid CPU (py-spy, GIL-holding samples; root on top; '
        "hover for names)</text>"
    )
    return head + "".join(rects) + "</svg>\n"


def _depth(node: Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def _draw(node: Node, x: float, level: int, total: int, out: list[str]) -> None:
    width = node.count / total * WIDTH
    if node.count / total < MIN_SHARE:
        return
    y = (level + 1) * ROW
    hue = zlib.crc32(node.name.split(" (")[0].encode()) % 60
    name = html.escape(node.name)
    share = f"{node.count / total:.1%}"
    text = html.escape(node.name[: max(0, int(width / 7) - 1)]) if width > 30 else ""
    out.append(
        f"<g><title>{name}: {node.count} samples, {share}</title>"
        f'<rect x="{x:.1f}" y="{y}" width="{max(width - 0.5, 0.5):.1f}" height="{ROW - 1}" '
        f'fill="hsl({hue + 10},80%,60%)"/><text x="{x + 2:.1f}" y="{y + ROW - 5}">{text}</text></g>'
    )
    for child in sorted(node.children.values(), key=lambda c: -c.count):
        _draw(child, x, level + 1, total, out)
        x += child.count / total * WIDTH


def summary(by_process: dict[str, list[tuple[list[str], int]]]) -> str:
    grand = sum(c for stacks in by_process.values() for _, c in stacks) or 1
    lines = [f"{grand} samples in all (GIL-holding), by process and function", ""]
    ranked = sorted(by_process.items(), key=lambda kv: -sum(c for _, c in kv[1]))
    for label, stacks in ranked:
        samples = sum(c for _, c in stacks)
        own: Counter[str] = Counter()
        below: Counter[str] = Counter()
        for frames, count in stacks:
            if frames:
                own[frames[-1]] += count
            for name in set(frames):
                below[name] += count
        lines.append(f"== {label}: {samples} samples, {samples / grand:.1%} of all")
        lines.append(f"   top {TOP} by self time:")
        lines += [f"   {c / samples:6.1%}  {name}" for name, c in own.most_common(TOP)]
        lines.append(f"   top {TOP} by total time (the function and what it calls):")
        lines += [f"   {c / samples:6.1%}  {name}" for name, c in below.most_common(TOP)]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("raw", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="profile")
    args = parser.parse_args()
    by_process = parse([p for p in args.raw if p.exists() and p.stat().st_size])
    if not by_process:
        print("no samples: did py-spy attach? (root, or ptrace allowed)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    flame = args.out / f"{args.name}-flamegraph.svg"
    top = args.out / f"{args.name}-top.txt"
    flame.write_text(svg(tree(by_process)))
    top.write_text(summary(by_process))
    print(f"flamegraph: {flame}\ntop functions: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
