"""The component cache of a study run: each component built once, with the context its kind names."""

from __future__ import annotations

import logging

from ..config import ComponentSpec, TrainConfig

log = logging.getLogger("flashbench")


class StudyResources:
    """Components built once per study, keyed by their spec (the teacher is the expensive one)."""

    def __init__(self, components, device):
        self.components, self.device = components, device
        self._cache: dict = {}
        self.loads: dict[str, int] = {}

    def _get(self, kind: str, spec: ComponentSpec, **available):
        """``spec`` built once, its factory given exactly the context the kinds table names for ``kind``
        (:mod:`flashbench.kinds`; the device always available, the rest from ``available``)."""
        from ..kinds import BY_NAME

        available = {"device": self.device, **available}
        context = {name: available.get(name) for name in BY_NAME[kind].context}
        key = (kind, spec.name, repr(sorted(spec.options.items())), id(context.get("teacher")))
        if key not in self._cache:
            self.loads[kind] = self.loads.get(kind, 0) + 1
            log.info("loading %s %s", kind, spec.name)
            self._cache[key] = self.components.get(kind, spec.name).build(spec.options, **context)
        return self._cache[key]

    def teacher(self, spec):
        return self._get("teacher", spec)

    def dataset(self, spec):
        return self._get("dataset", spec)

    def conditioning(self, spec):
        return self._get("conditioning", spec)

    def evaluator(self, spec):
        return self._get("evaluator", spec)

    def sampler(self, spec: ComponentSpec):
        return self._get("sampler", spec)

    def loss(self, spec, teacher=None):
        return self._get("loss", spec, teacher=teacher) if spec.enabled else None

    # built afresh at each use, not cached: each trainer and each teacher sampler gets its own
    def solver(self, spec: ComponentSpec):
        return self.components.get("solver", spec.name).build(spec.options)

    def timesteps(self, train: TrainConfig):
        """The training timestep distribution, for the grid, phases and schedules of ``train``."""
        return self.components.get("timesteps", train.timesteps.name).build(
            train.timesteps.options, num_timesteps=train.num_timesteps, phase_length=train.phase_length, num_phases=len(train.lambda_adv)
        )
