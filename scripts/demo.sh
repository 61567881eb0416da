#!/usr/bin/env bash
# Quick start: install, then build -> train -> evaluate -> export -> query on the embedded data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python -m narm_tf.demo "$@"
