#!/usr/bin/env bash
# Installs what the project needs, lints, then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ruff check .
# One worker per core; a test module stays on one worker (its module fixtures are built once);
# modules start in collection order, the slowest first (tests/conftest.py's SLOWEST_MODULES).
python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder "$@"
