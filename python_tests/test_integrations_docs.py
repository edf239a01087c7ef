"""docs/integrations.md and docs/ppo-loop.md: every ```python block runs as written (in a fresh
interpreter, as a reader would run it), and the verl settings the docs give are the ones
test_integrations_verl.py checks against verl. Each of the seven frameworks has a section
with a runnable block and an enabling snippet; the enabling snippets, which need the
framework to run, are checked to import and call only what sae_ext.integrations has. The
README's frameworks table lists the seven with the versions the modules were matched to."""
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


# ------------------------------------------------------------------------------------------
# The enabling snippets (bash, diff, yaml: they need the framework to run) name real things
# ------------------------------------------------------------------------------------------

FRAMEWORKS = ["verl", "OpenRLHF", "TRL", "AReaL", "SkyRL", "NeMo-RL", "slime"]
SNIPPET = re.compile(r"^```(bash|diff|yaml)\n(.*?)^```", re.S | re.M)
DOTTED = re.compile(r"\bsae_ext\.integrations(?:\.\w+)+")
IMPORT = re.compile(r"^\+?\s*(from sae_ext\.integrations\S* import [\w ,]+|"
                    r"import sae_ext\.integrations\.\w+(?: as \w+)?)\s*$", re.M)


def _sections():
    """{framework: its section of integrations.md}."""
    text = _read("integrations.md")
    heads = list(re.finditer(r"^## (.+)$", text, re.M))
    return {h.group(1).strip(): text[h.end():heads[i + 1].start() if i + 1 < len(heads)
                                      else len(text)] for i, h in enumerate(heads)}


def _resolve(dotted):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _call_keywords(code, name):
    """The keyword names of each call ``name(...)`` in ``code`` (parentheses balanced)."""
    for m in re.finditer(re.escape(name) + r"\(", code):
        depth, i = 1, m.end()
        while depth and i < len(code):
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
        yield re.findall(r"(?<![=!<>])\b(\w+)=(?!=)", code[m.end():i - 1])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_framework_has_a_section_with_a_runnable_snippet_and_an_enabling_one(framework):
    section = _sections().get(framework)
    assert section is not None, f"docs/integrations.md has no '## {framework}' section"
    assert FENCE.search(section), f"'## {framework}' has no ```python block (run above)"
    assert SNIPPET.search(section), f"'## {framework}' has no enabling snippet"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_enabling_snippets_name_what_exists(framework):
    """Every sae_ext.integrations name in the section resolves; in the snippets, every name
    imported from it exists, and every call of one passes only keywords it accepts."""
    import inspect

    section = _sections()[framework]
    for dotted in set(DOTTED.findall(section)):
        _resolve(dotted)
    for _, snippet in SNIPPET.findall(section):
        new_side = "\n".join(line[1:] if line.startswith(("+", " ")) else line
                             for line in snippet.splitlines() if not line.startswith("-"))
        names = {}
        for stmt in IMPORT.findall(new_side):
            scope = {}
            exec(stmt.strip(), scope)  # the snippet's own import, as the framework would run it
            names.update({k: v for k, v in scope.items() if k != "__builtins__"})
        for alias, obj in names.items():
            for attr in set(re.findall(re.escape(alias) + r"\.(\w+)", new_side)):
                assert hasattr(obj, attr), f"{framework}: {alias}.{attr} does not exist"
                func = getattr(obj, attr)
                if callable(func) and not inspect.isclass(func):
                    params = inspect.signature(func).parameters
                    for kws in _call_keywords(new_side, f"{alias}.{attr}"):
                        unknown = [k for k in kws if k not in params]
                        assert not unknown, f"{framework}: {alias}.{attr}() takes no {unknown}"
            if callable(obj) and alias in re.findall(r"\b(\w+)\(", new_side):
                params = inspect.signature(obj).parameters
                for kws in _call_keywords(new_side, alias):
                    unknown = [k for k in kws if k not in params]
                    assert not unknown, f"{framework}: {alias}() takes no {unknown}"


def test_readme_table_lists_the_seven_with_the_versions_matched():
    from sae_ext.integrations import areal, nemo_rl, skyrl, slime, verl

    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        text = f.read()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ") and line.count("|") == 5}
    versions = {"verl": verl.TESTED_VERL_VERSION, "AReaL": areal.TESTED_AREAL_PYPI_VERSION,
                "SkyRL": skyrl.TESTED_SKYRL_VERSION, "NeMo-RL": nemo_rl.TESTED_NEMO_RL_VERSION,
                "slime": slime.TESTED_SLIME_VERSION, "OpenRLHF": "0.11.0", "TRL": "1.10.0"}
    for framework in FRAMEWORKS:
        assert framework in rows, f"README's frameworks table has no row for {framework}"
        assert versions[framework] in rows[framework], (framework, versions[framework])
