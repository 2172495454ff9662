#!/usr/bin/env bash
# Installs Keyloom and the TikTok and GitHub plugins into .venv, then runs the demo app.
# With no TIKTOK_CLIENT_ID set, the demo signs in against the embedded TikTok emulator
# (and links GitHub accounts against the embedded GitHub emulator).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[tokens]" -e plugins/keyloom-tiktok -e plugins/keyloom-github
exec .venv/bin/keyloom demo "$@"
