#!/usr/bin/env bash
# Installs what narm-tf needs (requirements.txt) and the project itself, editable. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements.txt
python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
