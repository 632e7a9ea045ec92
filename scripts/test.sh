#!/usr/bin/env bash
# The test command: set up .venv with the dev tools, lint, type-check, run the whole suite.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -m "not slow" tests/service
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

ruff check .
ruff format --check .
mypy -p dcgan.contract -p dcgan.train -p dcgan.export -p dcgan.service -p dcgan.clients -p dcgan.eval
python -m pytest "$@"
