#!/usr/bin/env bash
# Set up streamfs on this machine, idempotently: system packages (Java, Maven, redis-server),
# a virtual environment with streamfs and its test tools, and the Kafka broker's jars.
# Re-running it is fast: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PYTHON=$candidate; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  say "Python 3.11 or newer is needed (Debian: apt-get install python3 python3-venv)"; exit 1
fi

# System packages: install what is missing when we can (root or passwordless sudo),
# otherwise say exactly what to install.
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
# Headless Chromium drives the web view's browser test.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="no"; fi
  if [ "$SUDO" = "no" ] || ! command -v apt-get >/dev/null 2>&1; then
    say "missing: ${missing[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and re-run."
    exit 1
  fi
  say "installing ${missing[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The virtual environment, re-installed only when pyproject.toml changed.
if [ ! -x .venv/bin/python ]; then
  say "creating the virtual environment .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.streamfs-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing streamfs and its dependencies into .venv (a minute or two the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# The per-event modules compiled with mypyc (about 1.5 min; redone only when their source
# changed). Without it streamfs runs the same code as plain Python, slower.
if ! .venv/bin/streamfs native build >&2; then
  say "the compiled build failed (see above); streamfs runs as plain Python"
fi

# The Kafka broker's jars, fetched once with Maven into the cache.
.venv/bin/streamfs services fetch >/dev/null
say "ready"
