#!/usr/bin/env bash
# The plugin's CI: install it, check it against the contract (seconds), score it with the built-ins it
# is judged against on the `ci` preset (the shipped default release: no training, the same subjects
# on every machine), and gate on the stored baseline with `fexbench compare`.
# Usage: ci.sh [work-dir]    (BASELINE=<folder> to use another stored baseline)
# baseline/ was made by this script on the release, so it holds on any machine; re-make it (run with
# BASELINE=/nonexistent and copy the results it names) when you accept a new version of the method.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
baseline="${BASELINE:-$here/baseline}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"

python -m pip install --no-deps -q "$here"
fexbench check-explainer nearest-words --cache-dir "$work/check-cache"
python -m pytest -q "$here/tests"
fexbench run --preset ci --explainers nearest-words,oracle,random,class-name --quiet \
    --cache-dir "$work/cache" --out "$work/results"
if [ -d "$baseline" ]; then
  # exit 1 when a headline metric is worse than the baseline beyond the margin, or a job is lost
  fexbench compare "$baseline" "$work/results" --margin 0.05
else
  echo "no stored baseline at $baseline: store this run's results there (cp -r $work/results $baseline)"
fi
