#!/usr/bin/env bash
# A wheel built from a clean checkout (the committed tree, nothing else), installed into a fresh venv the way
# `make setup` installs (torch pinned first, then the rest under constraints.txt), runs a sweep and its report from
# a directory outside the repository. Run by `make check-install` (and .ci/run).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PY="${PY:-python3}"

git -C "$repo" archive --format=tar HEAD | (mkdir -p "$work/src" && tar -x -C "$work/src")
"$PY" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" "torch==$(sed -n 's/^torch==//p' "$repo/constraints.txt")"
"$work/venv/bin/python" -m pip wheel -q --no-deps -w "$work/dist" "$work/src"
"${pip[@]}" -c "$repo/constraints.txt" "$work"/dist/harness-*.whl

mkdir -p "$work/elsewhere" && cd "$work/elsewhere"
export MLFLOW_TRACKING_URI="sqlite:///$work/elsewhere/mlruns/mlflow.db" MLFLOW_DISABLE_TELEMETRY=true
"$work/venv/bin/harness-train" -m optimizer=sgd,adam trainer.max_steps=20 tracking.progress=false \
    tracking.experiment=install-check
if [ -x "$work/venv/bin/harness-report" ]; then
    report=("$work/venv/bin/harness-report")
else
    report=("$work/venv/bin/python" -c "import sys; from harness.report.cli import main; sys.exit(main())")
fi
"${report[@]}" --experiment install-check --out "$work/elsewhere/report"
test -n "$(ls -A "$work/elsewhere/report")"
test -f "$work/venv/lib/python"*/site-packages/harness/conf/config.yaml
echo "check-install: a wheel from a clean checkout ran a sweep and a report outside the repository"
