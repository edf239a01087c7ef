"""sae-ext: fused Segmental Advantage Estimation (SAE) and GAE for PPO.

`import sae_ext` loads the compiled library, which registers the `torch.ops.sae.*` ops;
this package adds their fake (meta) kernels and autograd, and typed wrappers.
"""
import torch  # noqa: F401  (first: _C links against torch's libraries)

from . import _C  # noqa: F401  (loading it registers torch.ops.sae.*)
from . import _registrations  # noqa: F401  (fake kernels and autograd)
from ._ops import (
    advantages,
    advantages_from_boundaries,
    gae,
    masked_whiten,
    segment_boundaries,
)

__version__ = "0.1.0"

__all__ = [
    "advantages",
    "advantages_from_boundaries",
    "gae",
    "masked_whiten",
    "segment_boundaries",
    "__version__",
]
