"""Verdicts on the paper's claims (``paper.claims``) and the measured effects (``paper.effects``): paired
differences with their 95% intervals, judged by :mod:`flashbench.stats`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..formatting import DASH, decimals, interval, number
from ..results import ResultStore
from ..stats import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, REPRODUCED, Difference, paired_difference, verdict
from .rows import TEACHER, TEACHER_FEWSTEP, _measured_metric, _ok_rows, _primary_nfe, metric_directions


@dataclass(frozen=True)
class ClaimResult:
    text: str
    metric: str
    better: str | None
    variant: str
    than: str  # the baseline actually compared with ("teacher" may resolve to "teacher-fewstep")
    nfe: int | None
    than_nfe: int | None
    value: float | None
    other: float | None
    difference: Difference | None  # variant - than, with its 95% interval
    verdict: str  # "reproduced" | "contradicted" | "inconclusive" | "not measured"
    sentence: str

    @property
    def seeds(self) -> int:
        return self.difference.seeds if self.difference else 0


def _claim_side(ok, name: str, metric: str, nfe: int | None, replicates) -> dict[int, tuple[float, Any]]:
    """Per seed: (value, bootstrap replicates or None) of ``name`` at ``nfe`` (a student of that name
    first; teacher names are teacher rows)."""
    if ok.empty or nfe is None:
        return {}
    sub = ok[(ok["variant"] == name) & (ok["metric"] == metric) & (ok["nfe"] == nfe)]
    if (sub["role"] == "student").any():
        sub = sub[sub["role"] == "student"]
    out: dict[int, tuple[float, Any]] = {}
    for seed, rows in sub.groupby(sub["seed"].fillna(-1), sort=True):
        row = rows.iloc[-1]
        out[int(seed)] = (float(row["value"]), replicates(row.get("bootstrap_file")) if "bootstrap_file" in row else None)
    return out


def _side_mean(side: dict) -> float:
    return float(sum(v for v, _ in side.values()) / len(side)) if side else math.nan


def own_teacher(ok, variant: str) -> str:
    """The name of the teacher baselines ``variant`` is compared with: ``"teacher"``, or, for a variant on
    another teacher than the study's first, the ``teacher_baseline`` its rows name (``"teacher@<teacher>"``)."""
    if ok.empty or "teacher_baseline" not in ok:
        return TEACHER
    named = ok.loc[(ok["variant"] == variant) & ok["teacher_baseline"].notna(), "teacher_baseline"]
    return str(named.iloc[0]) if len(named) else TEACHER


def _baseline(ok, than: str, metric: str, nfe: int | None, better: str | None, replicates, *, variant: str = "") -> tuple[str, dict]:
    """The baseline side of a claim. ``than = "teacher"`` is ``variant``'s own teacher (:func:`own_teacher`);
    at an NFE where that teacher was also sampled the student's way it is the *stronger* of the two teacher
    baselines (its own sampler with CFG, or the student's sampler without), by the mean over seeds."""
    if than != TEACHER:
        return than, _claim_side(ok, than, metric, nfe, replicates)
    than = own_teacher(ok, variant)
    side = _claim_side(ok, than, metric, nfe, replicates)
    fewstep = TEACHER_FEWSTEP + than[len(TEACHER) :]
    other = _claim_side(ok, fewstep, metric, nfe, replicates)
    if other and (
        not side or (better in ("lower", "higher") and (_side_mean(other) < _side_mean(side)) == (better == "lower") and _side_mean(other) != _side_mean(side))
    ):
        return fewstep, other
    return than, side


ONE_SEED_NOTE = (
    "One seed: the interval covers the sampling noise of the evaluated samples only, not training "
    "noise (seed to seed), which on the toy world is larger; run several seeds to include it."
)


def evaluate_claims(study: dict, df, store: ResultStore | None = None) -> list[ClaimResult]:
    """Verdicts on the paper's claims: ``variant`` minus ``than`` on the claim's metric at the claim's NFE
    (default: the study's primary NFE, the paper's protocol), with the 95% interval of that *paired*
    difference (:func:`flashbench.stats.paired_difference`); *reproduced* / *contradicted* /
    *inconclusive* by where the interval lies (:func:`flashbench.stats.verdict`). ``store`` gives the
    rows' bootstrap replicates; without it (or for rows written before intervals) a one-seed verdict is
    inconclusive and says why."""
    ok = _ok_rows(df)
    primary = _primary_nfe(study, ok)
    directions = metric_directions(df)
    load = store.load_replicates if store is not None else (lambda _: None)
    out = []
    scale = str(study.get("scale") or "")
    for claim in (study.get("paper") or {}).get("claims") or []:
        if scale and isinstance(claim.get("scales"), list) and scale not in claim["scales"]:
            continue  # stated for another scale (e.g. in terms of the paper's guidance values)
        variant, than = str(claim.get("variant", "")), str(claim.get("than", ""))
        # the paper's metric, or what stands for it in this run (FID -> the toy world's fd)
        metric = _measured_metric(str(claim.get("metric", "")), directions) or str(claim.get("metric", ""))
        nfe = int(claim["nfe"]) if claim.get("nfe") is not None else primary
        than_nfe = int(claim["than_nfe"]) if claim.get("than_nfe") is not None else nfe
        better = claim.get("better")
        if better not in ("lower", "higher") and directions.get(metric) is not None:
            better = "higher" if directions[metric] else "lower"
        a = _claim_side(ok, variant, metric, nfe, load)
        than_used, b = _baseline(ok, than, metric, than_nfe, better, load, variant=variant)
        text = str(claim.get("text", f"{variant} beats {than} on {metric}"))
        at = f"at {nfe} NFE" if nfe is not None else "(no primary NFE)"
        at_than = at if than_nfe == nfe else f"at {than_nfe} NFE"
        common = sorted(set(a) & set(b))
        if not common or better not in ("lower", "higher"):
            missing = [name for name, side in ((variant, a), (than, b)) if not side]
            why = (
                f"no {metric} result for {' and '.join(missing)} {at}"
                if missing
                else f"no seed in common between {variant} and {than}"
                if not common
                else f"the direction of {metric} is unknown"
            )
            out.append(
                ClaimResult(
                    text,
                    metric,
                    better,
                    variant,
                    than_used,
                    nfe,
                    than_nfe,
                    _side_mean(a) if a else None,
                    _side_mean(b) if b else None,
                    None,
                    NOT_MEASURED,
                    f"Not measured: {why}.",
                )
            )
            continue
        per_seed = {s_: (a[s_][0], b[s_][0], a[s_][1], b[s_][1]) for s_ in common}
        diff = paired_difference(per_seed)
        result = verdict(diff, better)
        va, vb = _side_mean({s_: a[s_] for s_ in common}), _side_mean({s_: b[s_] for s_ in common})
        value_text, interval_text = _difference_text(diff)
        baseline = (
            than_used
            if than_used == than
            else f"{than} ({than_used}: the stronger teacher baseline)"
            if than_used.startswith(TEACHER_FEWSTEP)
            else f"{than} ({than_used}: its own teacher)"
        )
        sentence = (
            f"{result.capitalize()}: {metric} {number(va)} for {variant} {at} vs {number(vb)} for {baseline} {at_than}"
            f"{' (mean over ' + str(len(common)) + ' seeds)' if len(common) > 1 else ''}; "
            f"difference {value_text}, 95% interval {interval_text or 'no interval'} ({diff.method}); {better} is better."
        )
        if not diff.has_interval:
            sentence += " Without an interval the data cannot decide (rows written before intervals were recorded)."
        elif len(common) == 1:
            sentence += " " + ONE_SEED_NOTE
        out.append(ClaimResult(text, metric, better, variant, than_used, nfe, than_nfe, va, vb, diff, result, sentence))
    return out


def measured_effects(study: dict, df, store: ResultStore | None = None) -> list[dict]:
    """``[[paper.effects]]`` (``variant``, ``than``, optional ``metrics`` and ``nfe``): what a choice changes,
    with no direction to judge (e.g. where the paper and the authors' code differ). Per metric, the paired
    difference ``variant - than`` and its 95% interval, as for a claim, and whether the interval excludes 0."""
    ok = _ok_rows(df)
    primary = _primary_nfe(study, ok)
    directions = metric_directions(df)
    load = store.load_replicates if store is not None else (lambda _: None)
    out = []
    for effect in (study.get("paper") or {}).get("effects") or []:
        if not isinstance(effect, dict):
            continue
        variant, than = str(effect.get("variant", "")), str(effect.get("than", ""))
        nfe = int(effect["nfe"]) if effect.get("nfe") is not None else primary
        wanted = effect.get("metrics") or list(directions)
        for name in wanted:
            metric = _measured_metric(str(name), directions) or str(name)
            a, b = _claim_side(ok, variant, metric, nfe, load), _claim_side(ok, than, metric, nfe, load)
            common = sorted(set(a) & set(b))
            diff = paired_difference({s_: (a[s_][0], b[s_][0], a[s_][1], b[s_][1]) for s_ in common}) if common else None
            resolved = diff is not None and diff.has_interval and (diff.low > 0 or diff.high < 0)
            out.append(
                {
                    "text": str(effect.get("text", f"{variant} vs {than}")),
                    "variant": variant,
                    "than": than,
                    "metric": metric,
                    "nfe": nfe,
                    "higher_is_better": directions.get(metric),
                    "difference": diff,
                    "verdict": "not measured" if diff is None else "resolved" if resolved else "within noise",
                }
            )
    return out


def _effects_table(effects: list[dict]):
    import pandas as pd

    rows = []
    for e in effects:
        d = e["difference"]
        value_text, interval_text = _difference_text(d) if d is not None else (DASH, None)
        rows.append(
            {
                "effect": e["text"],
                "metric": e["metric"],
                "nfe": e["nfe"],
                "difference": value_text,
                "95% interval": interval_text or DASH,
                "seeds": 0 if d is None else d.seeds,
                "the data": e["verdict"],
            }
        )
    return pd.DataFrame(rows, columns=["effect", "metric", "nfe", "difference", "95% interval", "seeds", "the data"])


def _difference_text(diff: Difference) -> tuple[str, str | None]:
    """A paired difference and its 95% interval (None without one), both at the difference's precision."""
    places = decimals(diff.value) if diff.value else 3
    return number(diff.value, places), interval(diff.low, diff.high, places) if diff.has_interval else None


def _claims_summary(claims: list[ClaimResult]) -> dict[str, int]:
    """How many claims got each verdict: reproduced, contradicted, inconclusive, not measured."""
    return {v.replace(" ", "_"): sum(c.verdict == v for c in claims) for v in (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)}


def _summary_text(counts: dict[str, int], total: int) -> str:
    """ "2 reproduced, 1 contradicted, 3 inconclusive of 6" (zero counts left out)."""
    parts = [f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n]
    return f"{', '.join(parts)} of {total}" if total else DASH
