"""The plugin-manager factory: built-ins first, then entry points of group ``flashbench``.

There is no global manager: every call builds a fresh one. Set ``FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD=1``
to load only the built-ins (useful to bisect a broken third-party plugin).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import pluggy

from . import ENTRY_POINT_GROUP, PROJECT_NAME, hookspecs
from .registry import HOOK_FOR_KIND, KINDS, Component, Registry

BUILTIN_PLUGINS: tuple[str, ...] = (
    "flashbench_plugins.teachers.toy_digits",
    "flashbench_plugins.teachers.toy_digits_flow",
    "flashbench_plugins.teachers.sd15",
    "flashbench_plugins.teachers.inpaint",
    "flashbench_plugins.teachers.superres",
    "flashbench_plugins.teachers.sdxl",
    "flashbench_plugins.teachers.adapter_canny",
    "flashbench_plugins.teachers.adapter_depth",
    "flashbench_plugins.teachers.pixart_alpha",
    "flashbench_plugins.teachers.pixart_sigma",
    "flashbench_plugins.teachers.sd21_v",
    "flashbench_plugins.teachers.faceswap",
    "flashbench_plugins.teachers.sd3",
    "flashbench_plugins.teachers.flux",
    "flashbench_plugins.conditionings.text",
    "flashbench_plugins.datasets.toy_digits",
    "flashbench_plugins.datasets.image_captions",
    "flashbench_plugins.datasets.webdataset",
    "flashbench_plugins.datasets.coco",
    "flashbench_plugins.datasets.face_detectors",
    "flashbench_plugins.losses.mse",
    "flashbench_plugins.losses.lpips",
    "flashbench_plugins.losses.lsgan",
    "flashbench_plugins.losses.hinge",
    "flashbench_plugins.losses.wgan",
    "flashbench_plugins.losses.dmd",
    "flashbench_plugins.timesteps.flash",
    "flashbench_plugins.timesteps.uniform",
    "flashbench_plugins.timesteps.gaussian",
    "flashbench_plugins.timesteps.sharp",
    "flashbench_plugins.solvers.ddim",
    "flashbench_plugins.solvers.dpm_solver",
    "flashbench_plugins.solvers.flow_euler",
    "flashbench_plugins.samplers.flash",
    "flashbench_plugins.samplers.trailing_euler",
    "flashbench_plugins.samplers.lcm",
    "flashbench_plugins.samplers.tcd",
    "flashbench_plugins.evaluators.toy_fd",
    "flashbench_plugins.evaluators.toy_clip_score",
    "flashbench_plugins.evaluators.toy_lpips",
    "flashbench_plugins.evaluators.toy_kid",
    "flashbench_plugins.evaluators.fid",
    "flashbench_plugins.evaluators.kid",
    "flashbench_plugins.evaluators.clip_score",
    "flashbench_plugins.evaluators.lpips",
)


def get_plugin_manager(*, load_entry_points: bool = True, extra_plugins=()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
    for plugin in extra_plugins:
        pm.register(plugin)
    if load_entry_points and not os.environ.get("FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD"):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


@dataclass
class Components:
    """All registries of one plugin manager."""

    pm: pluggy.PluginManager
    registries: dict[str, Registry]

    def __getitem__(self, kind: str) -> Registry:
        return self.registries[kind]

    def get(self, kind: str, name: str) -> Component:
        return self.registries[kind].get(name)

    def all(self) -> list[Component]:
        return [c for kind in KINDS for c in self.registries[kind]]


def collect_components(pm: pluggy.PluginManager | None = None) -> Components:
    pm = pm or get_plugin_manager()
    dists = {plugin: dist.project_name for plugin, dist in pm.list_plugin_distinfo()}
    registries = {kind: Registry(kind) for kind in KINDS}

    def find(kind: str, name: str) -> Component:  # what flashbench.registry.lookup() gives these components' factories
        return registries[kind].get(name)

    for kind, hookname in HOOK_FOR_KIND.items():
        hook = getattr(pm.hook, hookname)
        for impl in hook.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            dist = dists.get(impl.plugin, PROJECT_NAME if plugin_name in BUILTIN_PLUGINS else "(unknown)")

            def register(name, factory, *, config=None, description="", tags=(), metric="", _kind=kind, _p=plugin_name, _d=dist):
                if not isinstance(metric, str) or (metric and _kind != "evaluator"):
                    raise ValueError(f"{_kind} {name!r} (plugin {_p}): metric= names an evaluator's result rows, as a string")
                registries[_kind].add(
                    Component(_kind, name, factory, config, description or (factory.__doc__ or "").strip().split("\n")[0], tuple(tags), _p, _d, metric, find)
                )

            impl.function(register=register)
    return Components(pm, registries)
