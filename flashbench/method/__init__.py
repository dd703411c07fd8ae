"""Algorithm 1 of Flash Diffusion, backbone-agnostic: schedule maths, CFG, solvers, pi(t), losses,
the discriminator head, the training step and few-step sampling. No file or network I/O here."""
