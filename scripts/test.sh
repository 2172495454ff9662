#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it through nox.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || missing+=(postgresql)
if ((${#missing[@]})); then
  echo "Installing system packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m venv .venv-tools
.venv-tools/bin/python -m pip install -q --upgrade pip nox
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  || { echo "The OpenID tests need Node 20+ and npm (https://nodejs.org/)"; exit 1; }
exec .venv-tools/bin/nox --non-interactive -s tests slow browser oidc workers postgres lint typecheck "$@"
