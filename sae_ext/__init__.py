"""sae-ext: fused Segmental Advantage Estimation (SAE) and GAE for PPO.

`import sae_ext` loads the compiled library, which registers the `torch.ops.sae.*` ops;
this package adds their fake (meta) kernels and autograd, and typed wrappers.
"""
import os as _os
import sys as _sys

import torch  # first: _C links against torch's libraries

try:
    from ._build_info import BUILD as _BUILD
except ImportError as e:  # a source tree that was never built
    raise ImportError("sae_ext is not built: run `pip install --no-build-isolation -e .` in the "
                      "source tree (see README.md)") from e
from ._compat import incompatibility as _incompatibility

_here = _os.path.dirname(_os.path.abspath(__file__))
_source_tree = _os.path.dirname(_here) if _os.path.isfile(_os.path.join(_here, "..", "setup.py")) else None
_why_not = _incompatibility(_BUILD, torch.__version__, torch.version.cuda, _source_tree)
# `python -m sae_ext.info` imports this package first (while sys.argv[0] is still "-m"): it
# must not fail on the one case it exists to explain, so it loads nothing and reports.
_running_info = _sys.argv[:1] == ["-m"] and "sae_ext.info" in getattr(_sys, "orig_argv", ())
if _why_not is not None and not _running_info:
    raise ImportError(_why_not)

if _why_not is None:
    from . import _C  # noqa: E402,F401  (loading it registers torch.ops.sae.*)
    from . import _registrations  # noqa: E402,F401  (fake kernels and autograd)
    from ._ops import (  # noqa: E402
        advantages,
        advantages_from_boundaries,
        advantages_varlen,
        check_inputs,
        gae,
        gae_varlen,
        length_adaptive_lam,
        masked_whiten,
        segment_boundaries,
    )

__version__ = _BUILD["version"]


def __getattr__(name):
    # sae_ext.info.build_info() works after a plain `import sae_ext`. Imported on first use,
    # not here: `python -m sae_ext.info` must find it not yet imported.
    if name == "info":
        import importlib

        return importlib.import_module(".info", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "advantages",
    "advantages_from_boundaries",
    "advantages_varlen",
    "check_inputs",
    "gae",
    "gae_varlen",
    "length_adaptive_lam",
    "masked_whiten",
    "segment_boundaries",
    "__version__",
]
