#!/usr/bin/env bash
# `make mutate`: mutation testing of the money-critical functions with mutmut (on demand; not
# in CI). Each mutant runs the serverless tests (tests/unit) that reach the mutated function,
# with a CPU-time limit per mutant; the score is printed per module at the end.
#   scripts/mutate.sh                        every function listed in scripts/mutate-targets.txt
#   scripts/mutate.sh 'paygrid.bus.inbox.*'  only these mutant-name globs (or MUTANTS='…')
# MUTATE_CHILDREN (default 2) mutants run at a time. Results stay in mutants/ (mutmut browse).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -gt 0 ]; then
  targets=("$@")
elif [ -n "${MUTANTS:-}" ]; then
  set -f  # globs for mutmut, not for the shell
  read -ra targets <<< "$MUTANTS"
  set +f
else
  mapfile -t targets < <(grep -v '^#' scripts/mutate-targets.txt | grep -v '^$')
fi
export CI=true  # the property tests replay their fixed examples
.venv/bin/mutmut run --max-children "${MUTATE_CHILDREN:-2}" "${targets[@]}"
.venv/bin/python scripts/mutation_score.py "${targets[@]}"
