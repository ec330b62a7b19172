#!/usr/bin/env bash
# The tests in one command: environments first (scripts/bootstrap.sh; a no-op when they are
# current), then pytest. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
