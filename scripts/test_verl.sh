#!/usr/bin/env bash
# The verl integration tests against the real verl package. verl and what importing its
# advantage code needs go into a virtual environment that sees this Python's packages
# (torch and the installed sae_ext) but keeps verl's dependencies out of them.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=build/verl-venv
if [ ! -x "$venv/bin/python" ]; then
  python -m venv --system-site-packages "$venv"
fi
PYTHON="$venv/bin/python" bash scripts/install_verl_for_tests.sh
"$venv/bin/python" -m pytest python_tests/test_integrations_verl.py python_tests/test_integrations_docs.py \
  -q -p no:cacheprovider "$@"
