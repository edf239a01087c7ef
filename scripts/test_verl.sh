#!/usr/bin/env bash
# The verl integration tests against the real verl package. verl and what importing its
# advantage code needs go into a side virtual environment, build/verl-venv, that sees the
# packages of the Python this runs with (torch, pytest, sae_ext's build) but keeps verl's
# dependencies out of them.
#
# "The Python this runs with" is $PYTHON, default `python`: the base interpreter or a venv.
# `venv --system-site-packages` alone exposes only the *base* interpreter's packages, so from
# a venv the side environment would miss that venv's torch; a .pth file in the side
# environment adds the running Python's site-packages (site.addsitedir, so the .pth files
# there, editable installs among them, work too), after the side environment's own.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python}"
venv=build/verl-venv
outer="$("$PYTHON" -c 'import sys; print(sys.executable)')"

# A side environment made from another Python (another venv, another version) is rebuilt.
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/made-from" 2>/dev/null)" != "$outer" ]; then
  echo "test_verl.sh: $venv was made from $(cat "$venv/made-from" 2>/dev/null || echo '?'); rebuilding it from $outer"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$venv"
  echo "$outer" > "$venv/made-from"
fi
"$PYTHON" - "$venv/bin/python" <<'EOF'
import os, site, subprocess, sys
side = subprocess.run([sys.argv[1], "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                      check=True, capture_output=True, text=True).stdout.strip()
user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
dirs = [d for d in site.getsitepackages() + user
        if os.path.isdir(d) and os.path.realpath(d) != os.path.realpath(side)]
with open(os.path.join(side, "zz-outer-python.pth"), "w") as f:
    f.write("".join(f"import site; site.addsitedir({d!r})\n" for d in dirs))
EOF
"$venv/bin/python" -c 'import torch' 2>/dev/null || {
  echo "test_verl.sh: torch is not importable from $outer; install it there first (README)" >&2
  exit 1
}

PYTHON="$venv/bin/python" bash scripts/install_verl_for_tests.sh
"$venv/bin/python" -m pytest python_tests/test_integrations_verl.py python_tests/test_integrations_docs.py \
  -q -p no:cacheprovider "$@"
