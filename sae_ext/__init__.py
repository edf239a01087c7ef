"""sae-ext: fused Segmental Advantage Estimation (SAE) and GAE for PPO.

`import sae_ext` loads the compiled library, which registers the `torch.ops.sae.*` ops;
this package adds their fake (meta) kernels and autograd, and typed wrappers.
"""
import torch  # first: _C links against torch's libraries

try:
    from ._build_info import BUILD as _BUILD
except ImportError as e:  # a source tree that was never built
    raise ImportError("sae_ext is not built: run `pip install --no-build-isolation -e .` in the "
                      "source tree (see README.md)") from e
from ._compat import incompatibility as _incompatibility

_why_not = _incompatibility(_BUILD, torch.__version__, torch.version.cuda)
if _why_not is not None:
    raise ImportError(_why_not)

from . import _C  # noqa: E402,F401  (loading it registers torch.ops.sae.*)
from . import _registrations  # noqa: E402,F401  (fake kernels and autograd)
from ._ops import (  # noqa: E402
    advantages,
    advantages_from_boundaries,
    check_inputs,
    gae,
    masked_whiten,
    segment_boundaries,
)

__version__ = _BUILD["version"]

__all__ = [
    "advantages",
    "advantages_from_boundaries",
    "check_inputs",
    "gae",
    "masked_whiten",
    "segment_boundaries",
    "__version__",
]
