#!/usr/bin/env bash
# The AReaL, SkyRL, NeMo-RL and slime integration tests; AReaL's and SkyRL's against the real
# packages, installed (with what importing their advantage code needs) into a virtual
# environment that sees this Python's packages (torch and the installed sae_ext) but keeps
# the frameworks' dependencies out of them. The docs test runs there too, so the docs'
# snippets run with the frameworks importable.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=build/frameworks-venv
if [ ! -x "$venv/bin/python" ]; then
  python -m venv --system-site-packages "$venv"
fi
PYTHON="$venv/bin/python" bash scripts/install_frameworks_for_tests.sh
"$venv/bin/python" -m pytest python_tests/test_integrations_areal.py \
  python_tests/test_integrations_skyrl.py python_tests/test_integrations_nemo_rl.py \
  python_tests/test_integrations_slime.py python_tests/test_integrations_docs.py \
  -q -p no:cacheprovider "$@"
