#!/usr/bin/env bash
# Install verl and the fewest packages that python_tests/test_integrations_verl.py needs to
# import it, into the Python environment of $PYTHON (default: `python`). The README's entry
# point is scripts/test_verl.sh, which runs this for its side environment and then the tests;
# run this directly only to put verl into an environment of your own. torch must already
# be installed there; it is pinned at its installed version (public part, e.g. 2.14.1 for
# 2.14.1+cu130) so pip cannot replace it.
#
#   scripts/install_verl_for_tests.sh           # core_algos + ray_trainer + v1 entry points
#   scripts/install_verl_for_tests.sh --core    # only verl.trainer.ppo.core_algos
#
# verl itself is installed with --no-deps: its declared dependencies include vllm/sglang
# extras, wandb, tensorboard, accelerate... that importing the advantage code never touches.
# What importing needs (verl 0.9.1):
#   core_algos:           ray (verl.protocol imports it at top level), tensordict, omegaconf,
#                         transformers, codetiming
#   ray_trainer (v0 API): + torchdata, datasets, pillow, peft, cachetools, fastapi, uvicorn
#   trainer/ppo/v1:       + TransferQueue
#   Hydra config test:    + hydra-core
# Env: PYTHON, VERL_VERSION (default 0.9.1, the version the tests were written against).
set -euo pipefail

PYTHON="${PYTHON:-python}"
VERL_VERSION="${VERL_VERSION:-0.9.1}"
tier=full
case "${1:-}" in
  --core) tier=core ;;
  "") ;;
  *) echo "usage: $0 [--core]" >&2; exit 2 ;;
esac

torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==${torch_version}" > "$constraints"

core=(
  "ray>=2.41.0"
  "tensordict>=0.8.0,<=0.10.0,!=0.9.0"
  "omegaconf"
  "hydra-core"
  "transformers>=5.5.3,<5.11,!=5.6.0"
  "codetiming"
)
full=(
  "torchdata" "datasets" "pillow" "peft" "cachetools" "fastapi" "uvicorn"
  "TransferQueue>=0.1.10"
)

start=$SECONDS
"$PYTHON" -m pip install --no-deps "verl==${VERL_VERSION}"
pkgs=("${core[@]}")
[ "$tier" = full ] && pkgs+=("${full[@]}")
"$PYTHON" -m pip install -c "$constraints" "${pkgs[@]}"

check="import verl.trainer.ppo.core_algos"
[ "$tier" = full ] && check="$check, verl.trainer.ppo.ray_trainer, verl.trainer.ppo.v1.utils"
"$PYTHON" -W ignore -c "$check; import verl, torch; print('verl', verl.__version__, 'torch', torch.__version__)"
echo "install_verl_for_tests.sh ($tier): $((SECONDS - start)) s"
