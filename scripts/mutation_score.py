"""Summarise a mutmut run per module: killed / survived / timeout / no tests / total.

    python scripts/mutation_score.py [PATTERN...]   (default: scripts/mutate-targets.txt)

Reads the ``mutants/**/*.meta`` files mutmut leaves; counts only mutants whose name matches a
pattern. "no tests": no serverless test reaches the function (integration tests, which run
paygrid in other processes, cannot kill a mutant); "not run": outside the last run's
selection."""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

TARGETS = Path(__file__).with_name("mutate-targets.txt")
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 37: "killed"}
TIMEOUTS = {24, -24, 36, 152, 255}
COLUMNS = ("killed", "survived", "timeout", "no tests", "other", "not run")


def patterns(argv: list[str]) -> list[str]:
    if argv:
        return argv
    lines = TARGETS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def status(code: int | None) -> str:
    if code is None:
        return "not run"
    if code in TIMEOUTS:
        return "timeout"
    return STATUS.get(code, "other")


def main(argv: list[str]) -> int:
    wanted = patterns(argv)
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for meta in sorted(Path("mutants").glob("**/*.py.meta")):
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        for name, code in codes.items():
            if any(fnmatch.fnmatch(name, p) for p in wanted):
                table[re.split(r"\.x[_ǁ]", name)[0]][status(code)] += 1
    if not table:
        print("no mutants: run `make mutate` first", file=sys.stderr)
        return 1
    total: Counter[str] = Counter()
    print(f"{'module':40} " + " ".join(f"{c:>9}" for c in COLUMNS) + "     total  score")
    for module, counts in sorted(table.items()):
        total += counts
        print(_row(module, counts))
    print(_row("all", total))
    return 0


def _row(name: str, counts: Counter[str]) -> str:
    tried = counts["killed"] + counts["survived"] + counts["timeout"]
    score = f"{100 * counts['killed'] / tried:5.1f}%" if tried else "    -"
    cells = " ".join(f"{counts[c]:>9}" for c in COLUMNS)
    return f"{name:40} {cells} {sum(counts.values()):>9}  {score}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
