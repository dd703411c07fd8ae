"""Run a few Flash steps data-parallel (launched by tests/test_distributed.py); each rank writes its LoRA."""
import sys
import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from flashbench.config import ComponentSpec, TrainConfig
from flashbench.method.trainer import FlashTrainer
from flashbench.plugins import collect_components

out = sys.argv[1]
acc = Accelerator(cpu=True)
c = collect_components()
teacher = c.get("teacher", "toy-digits").build({}, device="cpu")
ds = c.get("dataset", "toy-digits").build({})
cfg = TrainConfig(teacher=ComponentSpec("toy-digits"), dataset=ComponentSpec("toy-digits"), num_timesteps=8, phase_length=1,
                  iterations=3, batch_size=4, learning_rate=1e-2, disc_learning_rate=1e-2, guidance_min=1.5, guidance_max=3)
torch.manual_seed(0)
tr = FlashTrainer(teacher, c.get("conditioning", "text").build({}), c.get("solver", "ddim").build({}),
                  c.get("timesteps", "flash").build({}, num_timesteps=8, phase_length=1, num_phases=4), cfg,
                  distil=c.get("loss", "mse").build({}), gan=c.get("loss", "lsgan").build({}), dmd=c.get("loss", "dmd").build({}),
                  adapter_name="ddp", seed=acc.process_index, accelerator=acc)
rng = np.random.default_rng(100 + acc.process_index)  # each rank its own data
for it in range(3):
    tr.step(ds.train_batch(rng, 4), it)
save_file({n: p.detach().contiguous() for n, p in teacher.unet.named_parameters() if "lora_" in n}, f"{out}/rank{acc.process_index}.safetensors")
print("rank", acc.process_index, "of", acc.num_processes, "done")
