#!/usr/bin/env bash
# Install AReaL and SkyRL, and the fewest packages that python_tests/test_integrations_areal.py
# and test_integrations_skyrl.py need to import their advantage code, into the Python
# environment of $PYTHON (default: `python`; use a virtual environment, see
# scripts/test_frameworks.sh). torch must already be installed there; it is pinned at its
# installed version so pip cannot replace it.
#
# Both frameworks are installed with --no-deps: their declared dependencies include vLLM,
# SGLang, flash-attn, Megatron and GPU builds of torch that importing the advantage code never
# touches (areal 1.0.4 even pins torch < 2.11). What importing needs:
#   skyrl 0.3.0, skyrl.backends.skyrl_train.utils.ppo_utils:
#       ray, jaxtyping, loguru, omegaconf, pyyaml, pandas, skyrl-gym (its config imports the
#       gym's env configs; --no-deps too)
#   areal 1.0.4, areal.trainer.ppo.actor (PPOActor._compute_advantages holds its GAE loop):
#       aiohttp, httpx, colorlog, tenacity, torchdata, lark, uvloop, hydra-core, transformers,
#       numba, einops, aiofiles, openai, datasets, swanlab, trackio, wandb, tensorboardX,
#       tabulate, pybase64 (areal.api and areal.infra import them at top level)
# NeMo-RL and slime are not installable here (no PyPI release / Megatron); their tests use
# loops written from their source (python_tests/_framework_sources.py).
# Env: PYTHON, AREAL_VERSION (default 1.0.4), SKYRL_VERSION (default 0.3.0),
#      SKYRL_GYM_VERSION (default 0.4.0).
set -euo pipefail

PYTHON="${PYTHON:-python}"
AREAL_VERSION="${AREAL_VERSION:-1.0.4}"
SKYRL_VERSION="${SKYRL_VERSION:-0.3.0}"
SKYRL_GYM_VERSION="${SKYRL_GYM_VERSION:-0.4.0}"

torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==${torch_version}" > "$constraints"

skyrl_deps=(ray jaxtyping loguru omegaconf pyyaml pandas)
areal_deps=(aiohttp httpx colorlog tenacity torchdata lark uvloop hydra-core transformers numba
            einops aiofiles openai datasets swanlab trackio wandb tensorboardX tabulate pybase64)

start=$SECONDS
"$PYTHON" -m pip install -q --no-deps "areal==${AREAL_VERSION}" "skyrl==${SKYRL_VERSION}" \
  "skyrl-gym==${SKYRL_GYM_VERSION}"
"$PYTHON" -m pip install -q -c "$constraints" "${skyrl_deps[@]}" "${areal_deps[@]}"

"$PYTHON" -W ignore - <<'PY'
import sys, types
if sys.version_info < (3, 12):  # as python_tests/test_integrations_skyrl.py does
    stub = types.ModuleType("skyrl.backends.backend"); stub.AbstractBackend = object
    sys.modules["skyrl.backends.backend"] = stub
import skyrl.backends.skyrl_train.utils.ppo_utils, areal.trainer.ppo.actor
from importlib.metadata import version
print("areal", version("areal"), "skyrl", version("skyrl"), "torch", version("torch"))
PY
echo "install_frameworks_for_tests.sh: $((SECONDS - start)) s"
