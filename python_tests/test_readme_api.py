"""The README's API block runs as written, on inputs of the shapes its comments state."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def api_block() -> str:
    text = README.read_text()
    section = text[text.index("## API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_block_runs():
    g = torch.Generator().manual_seed(0)
    B, T = 3, 16
    lengths = [5, 0, 11]
    N = sum(lengths)
    env = {
        "rewards": torch.randn(B, T, generator=g),
        "values": torch.randn(B, T, generator=g),
        "logprobs": -torch.rand(B, T, generator=g) * 3,
        "mask": torch.rand(B, T, generator=g) > 0.2,
        "rewards_n": torch.randn(N, generator=g),
        "values_n": torch.randn(N, generator=g),
        "logprobs_n": -torch.rand(N, generator=g) * 3,
        "cu_seqlens": torch.tensor([0, 5, 5, 16], dtype=torch.int32),
    }
    if not torch.distributed.is_initialized():
        # sae_ext.distributed needs a group: a one-rank gloo group is the unsharded op.
        import tempfile
        store = tempfile.NamedTemporaryFile(delete=False)
        torch.distributed.init_process_group("gloo", init_method=f"file://{store.name}",
                                             rank=0, world_size=1)
    try:
        exec(compile(api_block(), str(README), "exec"), env)
    finally:
        torch.distributed.destroy_process_group()
    import sae_ext
    # The last call, on one rank, is the unsharded op.
    want = sae_ext.advantages(env["rewards"], env["values"], env["logprobs"], env["mask"], lam=0.5)
    assert torch.equal(env["adv"], want[0]) and torch.equal(env["ret"], want[1])
    # Packed rows equal the padded op on each row.
    cu = env["cu_seqlens"].tolist()
    for b in range(B):
        lo, hi = cu[b], cu[b + 1]
        if hi == lo:
            continue
        row = [env[k][lo:hi].unsqueeze(0) for k in ("rewards_n", "values_n", "logprobs_n")]
        padded, _ = sae_ext.advantages(*row, torch.ones(1, hi - lo, dtype=torch.bool), lam=0.5)
        assert torch.equal(env["adv_n"][lo:hi], padded[0])
    n_valid = env["mask"].sum(1).double()
    assert torch.allclose(env["lam_b"].double(), (1 - 1 / (0.05 * n_valid)).clamp(0, 1))
