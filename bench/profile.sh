#!/usr/bin/env bash
# Where paygrid's CPU goes, in one command: an end-to-end run (bench/e2e_payments.py) with py-spy
# sampling paygrid and every process it starts (--subprocesses: the API process, the background
# workers or each role, the sandboxes), then a flamegraph SVG and a top-functions summary per
# process (bench/flame.py). Arguments go to e2e_payments.py (default: --payments 300).
#
#   bench/profile.sh                                  # embedded profile, SQLite
#   bench/profile.sh --payments 500 --profile prod    # production profile
#
# py-spy reads other processes' memory: run as root, or allow ptrace
# (sysctl kernel.yama.ptrace_scope=0). It samples with --nonblocking (no pauses of paygrid).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SPY=.venv/bin/py-spy
[ -x "$PY" ] || { echo "no .venv: run make install first" >&2; exit 2; }
[ -x "$SPY" ] || .venv/bin/pip install -q py-spy
OUT=bench/results/profile-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--payments 300)
status=0
"$PY" bench/e2e_payments.py --py-spy "$SPY" --results-dir "$OUT" "${ARGS[@]}" | tee "$OUT/e2e.txt" \
  || status=$?
shopt -s nullglob
raw=("$OUT"/*-pyspy.txt)
[ ${#raw[@]} -gt 0 ] || { echo "py-spy wrote nothing: see $OUT/e2e.txt" >&2; exit 1; }
"$PY" bench/flame.py "${raw[@]}" --out "$OUT" --name paygrid
echo
echo "profile of this run in $OUT/:"
echo "  paygrid-flamegraph.svg  open in a browser; hover a frame for its name and share"
echo "  paygrid-top.txt         each process's share and its top functions (self, total)"
echo "  e2e.txt, *.json         the run's figures; *-pyspy.txt the raw collapsed stacks"
exit "$status"
