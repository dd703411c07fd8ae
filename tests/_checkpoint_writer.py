"""Write checkpoints of a 48 MB model in a loop until killed (tests/test_resume.py SIGKILLs it mid-write)."""

import sys
from pathlib import Path

import numpy as np
import torch

from flashbench import checkpoint

path = Path(sys.argv[1])
params = [torch.nn.Parameter(torch.zeros(3_000_000)) for _ in range(4)]
opt = torch.optim.Adam(params, lr=1e-3)
gen = torch.Generator().manual_seed(0)
rng = np.random.default_rng(0)
for step in range(1, 10**6):
    for p in params:
        p.data.fill_(float(step))
    checkpoint.save(path, modules={"lora": params}, optimizers={"opt": opt}, generator=gen, data_rng=rng, meta={"step": step, "fingerprint": "writer"})
    print(step, flush=True)
