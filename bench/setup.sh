#!/usr/bin/env bash
# Tools of the benchmarks, not of the tests (so not in .ci/run): the wrk load generator
# (Debian package) for bench/query_path.py, and py-spy in the project's venv for profiling
# (bench/profile_shares.py, bench/profile_gateway.py). Run from the repository root after the
# README's setup:
#     bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }
fi
wrk --version 2>&1 | head -n 1 || true   # wrk prints its version and exits 1

VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "no virtual environment at $VENV: create it as the README says, then run this again" >&2
    exit 1
fi
"$VENV/bin/python" -m pip install -q py-spy==0.4.3
"$VENV/bin/py-spy" --version
