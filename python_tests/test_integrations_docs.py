"""docs/integrations.md and docs/ppo-loop.md: every ```python block runs as written (in a fresh
interpreter, as a reader would run it), and the verl settings the docs give are the ones
test_integrations_verl.py checks against verl."""
import os
import re
import subprocess
import sys
import tempfile

import pytest

from _integrations_common import (REPO_ROOT, VERL_OPTIONAL_OVERRIDES, VERL_OVERRIDES,
                                  subprocess_env)

DOCS = ["integrations.md", "ppo-loop.md"]
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def _read(name):
    with open(os.path.join(REPO_ROOT, "docs", name)) as f:
        return f.read()


def _python_blocks():
    for name in DOCS:
        for i, match in enumerate(FENCE.finditer(_read(name))):
            indent = len(match.group(1))
            code = "\n".join(line[indent:] for line in match.group(2).splitlines())
            yield pytest.param(code, id=f"{name}#{i}")


BLOCKS = list(_python_blocks())


def test_docs_have_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS)
def test_python_block_runs(code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=subprocess_env(), timeout=300, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, f"{code}\n--- output ---\n{proc.stdout}{proc.stderr}"


def test_verl_settings_in_docs():
    text = _read("integrations.md")
    for item in VERL_OVERRIDES + VERL_OPTIONAL_OVERRIDES + [
            "VERL_USE_EXTERNAL_MODULES=sae_ext.integrations.verl"]:
        assert item in text, item
