#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run the whole test suite against
# real Kafka, Redis and the schema registry on 127.0.0.1. The tests start the services
# themselves when none are running, and stop what they started. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "test: ruff and mypy" >&2
.venv/bin/ruff check streamfs tests bench topology
.venv/bin/ruff format --check streamfs tests bench topology
.venv/bin/mypy

echo "test: pytest" >&2
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" = 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$code"
