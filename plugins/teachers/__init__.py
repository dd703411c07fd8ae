"""Teacher plugins: each adapts one diffusers model family to :class:`flashbench.method.teacher.Teacher`."""
