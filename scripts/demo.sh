#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the streamfs demo: the services, and everything
# streamfs runs on them. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/streamfs demo "$@"
