"""The ``[paper]`` checks: ``[[paper.claims]]`` (each names a metric some evaluator of the study produces,
and variants of the study) and ``[paper.compute]`` (the paper's training cost).
"""
from __future__ import annotations

from ..config import EvalConfig
from ..registry import closest
from .problems import _BAD, _desc, _Problems, _short, _unknown
from .values import _as_str, _one_of, _parse_value, _positive

CLAIM_KEYS = ("text", "metric", "better", "variant", "than", "nfe", "than_nfe", "scales")


def _produced_metrics(evaluator_sets: list, components) -> set[str] | None:
    """The metric names the given evaluator settings produce (``_Set`` values; None: a layer that does not
    set them, i.e. the default evaluators), from what each evaluator declared at registration; None when
    one is not registered or declares none (its metric is unknown: any claim may be on it)."""
    produced: set[str] = set()
    for s in evaluator_sets:
        specs = EvalConfig().evaluators if s is None else s.value
        if specs is _BAD:  # already reported where it was written
            continue
        for spec in specs:
            if spec.name not in components["evaluator"]:
                return None
            metric = components["evaluator"].get(spec.name).metric
            if not metric:
                return None
            produced.add(metric)
    return produced


def _claim_metric_problem(metric: str, produced: set[str] | None) -> str | None:
    """Why a claim cannot be judged on ``metric``: no evaluator of the study produces it, nor (for a paper's
    metric name, e.g. "fid") the metric that stands for it in this run (the report's METRIC_ALIASES)."""
    if produced is None:
        return None
    from ..report import METRIC_ALIASES

    if any(m in produced for m in (metric, *METRIC_ALIASES.get(metric, ()))):
        return None
    accepted = sorted(produced | {paper for paper, ours in METRIC_ALIASES.items() if produced & set(ours)})
    return (f"no evaluator of this study produces {_short(metric)} at any scale;{closest(metric, accepted)} "
            f"metrics: {', '.join(accepted) or '(none)'}")


#: ``[paper.compute]``: the paper's training cost, which ``flashbench run`` projects this run's step time onto
#: (:mod:`flashbench.projection`); ``iterations`` and ``gpu_hours`` are required
COMPUTE_KEYS: dict[str, tuple[str, tuple]] = {
    "iterations": ("int", (_positive,)), "gpu_hours": ("float", (_positive,)), "global_batch": ("int", (_positive,)), "gpu": ("str", ()),
}


def _parse_compute(paper: dict, p: _Problems) -> None:
    compute = paper.get("compute")
    if compute is None:
        return
    if not isinstance(compute, dict):
        p.add("paper.compute", f"must be a table ([paper.compute] with iterations and gpu_hours), got {_desc(compute)}")
        return
    for k, v in compute.items():
        if k not in COMPUTE_KEYS:
            p.add(f"paper.compute.{k}", _unknown("key", k, COMPUTE_KEYS))
        else:
            _parse_value(*COMPUTE_KEYS[k], v, f"paper.compute.{k}", p)
    for k in ("iterations", "gpu_hours"):
        if k not in compute:
            p.add(f"paper.compute.{k}", "required (the paper's iterations and GPU-hours, e.g. iterations = 20000, gpu_hours = 26)")


def claim_applies(claim: dict, scale: str) -> bool:
    """A claim with ``scales = [...]`` is judged at those scales only (e.g. the same statement in terms of
    the paper's guidance values at paper scale and of the toy teacher's range at toy scale)."""
    scales = claim.get("scales")
    return not isinstance(scales, list) or scale in scales


def _parse_claims(paper: dict, names, p: _Problems, produced: set[str] | None = None, scale: str | None = None,
                  scale_names: tuple = ()) -> None:
    """``produced``: the metrics the study's evaluators produce (None: unknown, any metric is accepted);
    variant names are checked for the claims that apply at ``scale``."""
    claims = paper.get("claims")
    if claims is None:
        return
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        p.add("paper.claims", "must be an array of tables: one [[paper.claims]] section per claim")
        return
    for i, claim in enumerate(claims):
        key = f"paper.claims[{i}]"
        for k, v in claim.items():
            kp = f"{key}.{k}"
            if k not in CLAIM_KEYS:
                p.add(kp, _unknown("key", k, CLAIM_KEYS))
            elif k in ("nfe", "than_nfe"):
                _parse_value("int", (_positive,), v, kp, p)
            elif k == "better":
                _parse_value("str", (_one_of(("lower", "higher")),), v, kp, p)
            elif k == "metric":
                problem = _claim_metric_problem(v, produced) if _as_str(v, kp, p) is not _BAD else None
                if problem:
                    p.add(kp, problem)
            elif k == "scales":
                if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                    p.add(kp, f"must be a non-empty array of scale names, got {_desc(v)}")
                else:
                    for x in v:
                        if scale_names and x not in scale_names:
                            p.add(kp, _unknown("scale", x, scale_names))
            elif _as_str(v, kp, p) is not _BAD and k in ("variant", "than") and names is not None \
                    and (scale is None or claim_applies(claim, scale)):
                # Teacher baselines are result rows of their own, named "teacher...".
                if v not in names and not v.startswith("teacher"):
                    p.add(kp, f"no variant named {v!r};{closest(v, names)} variants: {', '.join(names)}")
        for k in ("metric", "better", "variant", "than"):
            if k not in claim:
                p.add(f"{key}.{k}", "required (a claim needs metric, better, variant and than)")
