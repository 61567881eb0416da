#!/usr/bin/env bash
# Installs what the project needs, lints, then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ruff check .
python -m pytest -q tests "$@"
