"""A few full-method Flash steps on the toy teacher, data-parallel when launched by `accelerate launch`
(tests/test_distributed.py) or on one process. The global batch is GLOBAL_BATCH whatever the number of
processes: each process trains on its slice. Each process writes its LoRA and discriminator head."""

import sys

from accelerate import Accelerator
from safetensors.torch import save_file

from flashbench.config import ComponentSpec, TrainConfig
from flashbench.plugins import collect_components
from flashbench.training import TrainingLoop, build_trainer

GLOBAL_BATCH, STEPS = 8, 4
out = sys.argv[1]
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0  # of the LoRA initialisation, the data and the noise
acc = Accelerator(cpu=True)
c = collect_components()
teacher = c.get("teacher", "toy-digits").build({}, device="cpu")
ds = c.get("dataset", "toy-digits").build({})
cfg = TrainConfig(
    teacher=ComponentSpec("toy-digits"),
    dataset=ComponentSpec("toy-digits"),
    solver=ComponentSpec("ddim"),
    num_timesteps=8,
    phase_length=1,
    iterations=STEPS,
    batch_size=GLOBAL_BATCH // acc.num_processes,
    learning_rate=1e-3,
    disc_learning_rate=1e-3,
    guidance_min=1.5,
    guidance_max=3,
    trackers=(),
)
tr = build_trainer(cfg, c, teacher=teacher, seed=seed, adapter_name="ddp", accelerator=acc)  # mse + lsgan + dmd
summary = TrainingLoop(tr).run(ds, STEPS, seed=seed, progress=False)
weights = {f"lora.{i}": p.detach().contiguous() for i, p in enumerate(tr.lora_params)}
weights.update({f"head.{n}": p.detach().contiguous() for n, p in acc.unwrap_model(tr.head).named_parameters()})
save_file(weights, f"{out}/world{acc.num_processes}_rank{acc.process_index}_seed{seed}.safetensors")
sys.stdout.write(f"rank {acc.process_index} of {acc.num_processes} done\n")  # one write: the two ranks share stdout
sys.stdout.flush()
