#!/usr/bin/env bash
# Installs what the project needs, lints, then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ruff check .
# One worker per core; a test module stays on one worker (its module fixtures are built once).
python -m pytest -q -n auto --dist loadfile "$@"
