"""sae_ext.integrations._patch_when_imported, which the verl and SkyRL modules use to wrap a
trainer function as soon as the framework imports its trainer: on a module written here, since
SkyRL's trainer does not import in this environment (its Tinker backend needs Python 3.12)."""
import subprocess
import sys
import tempfile
import textwrap

from _integrations_common import subprocess_env

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from sae_ext import integrations

    calls = []

    def patch(module):  # idempotent, as the verl and SkyRL patches are
        calls.append(module.__name__)
        module.Trainer.patched = True

    {before}
    integrations._patch_when_imported("fakeframework.trainer", patch)
    integrations._patch_when_imported("fakeframework.trainer", patch)
    hooks = [f for f in sys.meta_path if getattr(f, "name", None) == "fakeframework.trainer"]
    assert len(hooks) == {hooks}, hooks
    assert integrations._patch_pending("fakeframework.trainer") == {pending}
    from fakeframework.trainer import Trainer
    import fakeframework.trainer
    assert Trainer.patched
    assert calls == ["fakeframework.trainer"] * {calls}, calls
    assert not integrations._patch_pending("fakeframework.other")
    print("ok")
""")


def _run(tmp, before, pending):
    # imported later: one hook however often it is asked for, one patch when the module runs;
    # already imported: patched at once, on every call (so the patch must be idempotent)
    code = CHILD.format(root=tmp, before=before, pending=pending, hooks=int(pending),
                        calls=1 if pending else 2)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=subprocess_env(), cwd=tmp, timeout=120)


def _framework(tmp):
    import os

    pkg = os.path.join(tmp, "fakeframework")
    os.makedirs(pkg)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    with open(os.path.join(pkg, "trainer.py"), "w") as f:
        f.write("class Trainer:\n    pass\n")


def test_patches_a_module_imported_later_once():
    with tempfile.TemporaryDirectory() as tmp:
        _framework(tmp)
        proc = _run(tmp, before="", pending=True)
        assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


def test_patches_an_already_imported_module_at_once():
    with tempfile.TemporaryDirectory() as tmp:
        _framework(tmp)
        proc = _run(tmp, before="import fakeframework.trainer", pending=False)
        assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
