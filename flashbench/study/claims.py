"""The ``[paper]`` checks: ``[[paper.claims]]`` (each names a metric some evaluator of the study produces,
and variants of the study) and ``[paper.compute]`` (the paper's training cost).
"""

from __future__ import annotations

from pydantic_core import core_schema as cs

from ..config import EvalConfig
from ..registry import closest
from .problems import _BAD, _desc, _Problems, _short, _unknown
from .values import _STR, _field, _model, _one_of, _parse_table, _positive, _problem, _problems_at, _typed

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
    return f"no evaluator of this study produces {_short(metric)} at any scale;{closest(metric, accepted)} metrics: {', '.join(accepted) or '(none)'}"


#: ``[paper.compute]``: the paper's training cost, which ``flashbench run`` projects this run's step time onto
#: (:mod:`flashbench.projection`); ``iterations`` and ``gpu_hours`` are required
COMPUTE_KEYS: dict[str, tuple[str, tuple]] = {
    "iterations": ("int", (_positive,)),
    "gpu_hours": ("float", (_positive,)),
    "global_batch": ("int", (_positive,)),
    "gpu": ("str", ()),
}
PaperCompute = _model("PaperCompute", {k: _typed(_field(*v)) for k, v in COMPUTE_KEYS.items()}, required=("iterations", "gpu_hours"))


def _parse_compute(paper: dict, p: _Problems) -> None:
    compute = paper.get("compute")
    if compute is None:
        return
    if not isinstance(compute, dict):
        p.add("paper.compute", f"must be a table ([paper.compute] with iterations and gpu_hours), got {_desc(compute)}")
        return

    def word(err: dict) -> str:
        if err["type"] == "missing":
            return "required (the paper's iterations and GPU-hours, e.g. iterations = 20000, gpu_hours = 26)"
        assert err["type"] == "extra_forbidden", err
        return _unknown("key", err["loc"][0], COMPUTE_KEYS)

    _parse_table(PaperCompute, compute, "paper.compute", p, word)


def claim_applies(claim: dict, scale: str) -> bool:
    """A claim with ``scales = [...]`` is judged at those scales only (e.g. the same statement in terms of
    the paper's guidance values at paper scale and of the toy teacher's range at toy scale)."""
    scales = claim.get("scales")
    return not isinstance(scales, list) or scale in scales


# What a claim names is checked against the study (validation context: "produced", "names", "scale",
# "scale_names" and the claim as written, "claim").


def _metric_produced(v: str, info) -> str:
    problem = _claim_metric_problem(v, info.context["produced"])
    if problem:
        raise _problem(problem)
    return v


def _variant_exists(v: str, info) -> str:
    names, scale = info.context["names"], info.context["scale"]
    if names is not None and (scale is None or claim_applies(info.context["claim"], scale)):
        # Teacher baselines are result rows of their own, named "teacher...".
        if v not in names and not v.startswith("teacher"):
            raise _problem(f"no variant named {v!r};{closest(v, names)} variants: {', '.join(names)}")
    return v


def _scale_names(v, info):
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise _problem(f"must be a non-empty array of scale names, got {_desc(v)}")
    scale_names = info.context["scale_names"]
    unknown = [_unknown("scale", x, scale_names) for x in v if scale_names and x not in scale_names]
    if unknown:
        raise _problems_at(unknown, v)
    return v


_NAMED_VARIANT = _typed(cs.chain_schema([_STR, cs.with_info_plain_validator_function(_variant_exists)]))
#: one ``[[paper.claims]]`` entry
PaperClaim = _model(
    "PaperClaim",
    {
        "text": _typed(_STR),
        "metric": _typed(cs.chain_schema([_STR, cs.with_info_plain_validator_function(_metric_produced)])),
        "better": _typed(_field("str", (_one_of(("lower", "higher")),))),
        "variant": _NAMED_VARIANT,
        "than": _NAMED_VARIANT,
        "nfe": _typed(_field("int", (_positive,))),
        "than_nfe": _typed(_field("int", (_positive,))),
        "scales": _typed(cs.with_info_plain_validator_function(_scale_names)),
    },
    required=("metric", "better", "variant", "than"),
)
assert tuple(PaperClaim.model_fields) == CLAIM_KEYS


def _parse_claims(paper: dict, names, p: _Problems, produced: set[str] | None = None, scale: str | None = None, scale_names: tuple = ()) -> None:
    """``produced``: the metrics the study's evaluators produce (None: unknown, any metric is accepted);
    variant names are checked for the claims that apply at ``scale``."""
    claims = paper.get("claims")
    if claims is None:
        return
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        p.add("paper.claims", "must be an array of tables: one [[paper.claims]] section per claim")
        return

    def word(err: dict) -> str:
        if err["type"] == "missing":
            return "required (a claim needs metric, better, variant and than)"
        assert err["type"] == "extra_forbidden", err
        return _unknown("key", err["loc"][0], CLAIM_KEYS)

    for i, claim in enumerate(claims):
        context = {"produced": produced, "names": names, "scale": scale, "scale_names": scale_names, "claim": claim}
        _parse_table(PaperClaim, claim, f"paper.claims[{i}]", p, word, context=context)
