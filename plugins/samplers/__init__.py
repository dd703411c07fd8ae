"""Built-in few-step samplers (``eval.sampler``): flash, trailing-euler, lcm, tcd."""
