#!/usr/bin/env bash
# The plugin's CI: install it, check it against the contract (seconds), run the smoke preset with
# it and the built-ins it is judged against, and gate on the stored baseline with `fexbench compare`.
# Usage: ci.sh [work-dir]    (BASELINE=<folder> to use another stored baseline)
# Make the baseline on the machine that runs this gate (CPU training is not bit-identical across
# machines): run this once without a baseline and store the results it names.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
baseline="${BASELINE:-$here/baseline}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"

python -m pip install --no-deps -q "$here"
fexbench check-explainer nearest-words --cache-dir "$work/check-cache"
python -m pytest -q "$here/tests"
fexbench run --preset smoke --explainers nearest-words --quiet --cache-dir "$work/cache" --out "$work/results"
if [ -d "$baseline" ]; then
  # exit 1 when a headline metric is worse than the baseline by more than the margin
  fexbench compare "$baseline" "$work/results" --margin 0.1
else
  echo "no stored baseline at $baseline: store this run's results there (cp -r $work/results $baseline)"
fi
