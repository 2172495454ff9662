#!/usr/bin/env bash
# Installs Keyloom and the TikTok plugin into .venv, then runs the demo app.
# With no TIKTOK_CLIENT_ID set, the demo signs in against the embedded TikTok emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[tokens]" -e plugins/keyloom-tiktok
exec .venv/bin/keyloom demo "$@"
