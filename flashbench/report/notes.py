"""What the report says besides its tables: failed and unfinished variants, the compute spent, provenance, the
notes a reader needs to weigh the numbers, the study's departures from the paper's protocol and, wherever the
paper and the authors' code differ, which side ran."""

from __future__ import annotations

from ..formatting import DASH, count
from ..results import ResultStore
from .rows import TEACHER, TEACHER_FEWSTEP, _unique_in_order

FD_UNBIASED_N = 5000  # below this many samples a Fréchet distance is visibly biased upwards (Chong & Forsyth 2020)
FRECHET_METRICS = ("fid", "fd")


def _failures(study: dict, df, store: ResultStore) -> tuple[list[dict], list[dict]]:
    failed = []
    if not df.empty:
        bad = df[df["status"].fillna("ok") != "ok"]
        for key, sub in bad.groupby("variant_key", sort=False):
            reasons = _unique_in_order(sub["reason"].tolist()) if "reason" in sub else []
            first = sub.iloc[0]
            failed.append(
                {
                    "key": str(key),
                    "variant": str(first["variant"]),
                    "seed": count(first["seed"]),
                    "role": str(first["role"]),
                    "metrics": ", ".join(str(m) for m in _unique_in_order(sub["metric"].tolist())) or DASH,
                    "reason": "; ".join(str(r) for r in reasons) or "no reason recorded",
                }
            )
    unfinished = []
    for v in study.get("variants", []):
        key = v.get("key") if isinstance(v, dict) else None
        if not key:
            continue
        try:
            done = store.is_done(str(key))
        except ValueError:
            done = False
        if not done:
            unfinished.append({"key": str(key), "variant": str(v.get("name", key)), "seed": count(v.get("seed"))})
    return failed, unfinished


def _compute_hours(df) -> str:
    """Hardware time the stored rows cost: training once per variant, sampling once per (variant, NFE)."""
    if df.empty:
        return DASH
    train = 0.0
    if "train_seconds" in df:
        train = float(df.drop_duplicates("variant_key")["train_seconds"].fillna(0).sum())
    sample = 0.0
    if "sample_seconds" in df:
        sample = float(df.drop_duplicates(["variant_key", "nfe"])["sample_seconds"].fillna(0).sum())
    return f"{(train + sample) / 3600:.3g} h ({train / 3600:.3g} h training, {sample / 3600:.3g} h sampling)"


def _provenance_view(provenance: dict, study: dict, df) -> dict:
    packages = provenance.get("packages") or {}
    gpus = provenance.get("gpus")
    if gpus:
        gpu = ", ".join(f"{g.get('name', '?')} ({g.get('memory_gib', '?')} GiB)" if isinstance(g, dict) else str(g) for g in gpus)
    else:
        gpu = "none" if gpus == [] else "not recorded"
    row_hashes = _unique_in_order(df["git_hash"].tolist()) if not df.empty and "git_hash" in df else []
    n_values = _unique_in_order(df["n"].tolist()) if not df.empty else []
    seeds = study.get("seeds")
    if seeds is None and not df.empty:
        seeds = _unique_in_order(df["seed"].tolist())
    # The global batch: processes x the per-process batch_size, beside the one the recipe states.
    processes, global_batch = provenance.get("processes"), provenance.get("global_batch")
    if isinstance(processes, int) and processes > 0 and isinstance(global_batch, list) and global_batch and all(isinstance(g, int) for g in global_batch):
        per_process = ", ".join(str(g // processes) for g in global_batch)
        batch = f"{', '.join(map(str, global_batch))} ({processes} process{'es' * (processes != 1)} x {per_process})"
    else:  # a run from before the global batch was recorded, or one where no variant trained
        batch = "not recorded" if global_batch is None else DASH
    trains = [v.get("train") for v in study.get("variants") or () if isinstance(v, dict)]
    stated = sorted({t.get("global_batch") for t in trains if isinstance(t, dict) and isinstance(t.get("global_batch"), int)} - {0})
    if stated:
        batch += f"; the recipe states {', '.join(map(str, stated))}"
    return {
        "items": [
            ("git commit", str(provenance.get("git_hash", "unknown"))),
            ("scale", str(provenance.get("scale", study.get("scale", "unknown")))),
            ("seeds", ", ".join(str(s) for s in (seeds or [])) or DASH),
            ("global batch", batch),
            ("samples per evaluation (n)", ", ".join(count(n) for n in sorted(n_values)) or DASH),
            ("python", str(provenance.get("python", "unknown"))),
            ("platform", str(provenance.get("platform", "unknown"))),
            ("CPU", f"{provenance.get('cpu', 'unknown')} ({provenance.get('cpu_count', '?')} cores)"),
            ("GPU", gpu),
            ("CUDA", str(provenance.get("cuda") or DASH)),
            ("host", str(provenance.get("hostname", "unknown"))),
            ("run started (UTC)", str(provenance.get("timestamp", "unknown"))),
            ("compute (training + sampling)", _compute_hours(df)),
        ],
        "packages": [(str(k), str(v) if v else "not installed") for k, v in packages.items()],
        # Rows from several commits: a resumed run crossed a code change; say so.
        "row_hashes": [str(h) for h in row_hashes] if len(row_hashes) > 1 else [],
    }


def _uncertainty_notes(ok, study: dict, seeds: list[int]) -> list[str]:
    """What a reader must know to weigh the numbers: one seed or several, rows without intervals, a
    Fréchet distance at a sample count where it is biased, the two teacher baselines."""
    notes = []
    if len(seeds) <= 1:
        notes.append(
            "One seed: each interval is a bootstrap over the evaluated samples and covers sampling noise only, not the seed-to-seed spread of training."
        )
    else:
        notes.append(
            f"{len(seeds)} seeds: each interval is a t-interval over the per-seed values, so the seed-to-seed "
            "spread of training and the sampling noise are both in it."
        )
    if not ok.empty and ("ci_low" not in ok or ok["ci_low"].isna().any()):
        missing = int(ok["ci_low"].isna().sum()) if "ci_low" in ok else len(ok)
        notes.append(
            f"{missing} of {len(ok)} result rows carry no interval (written before intervals were recorded, "
            "or by an evaluator without a bootstrap); a verdict resting on them is inconclusive."
        )
    if not ok.empty:
        fd = ok[ok["metric"].isin(FRECHET_METRICS)]
        n = pd_numeric(fd["n"]).dropna() if not fd.empty else []
        if len(n) and float(n.min()) < FD_UNBIASED_N:
            notes.append(
                f"Fréchet distances ({', '.join(sorted(set(fd['metric'])))}) here use {int(n.min()):,} samples, fewer "
                f"than {FD_UNBIASED_N:,}: at that n they are biased upwards (the bias shrinks roughly as 1/n), so compare "
                "them only at equal n; KID, where shown, is unbiased."
            )
    if not ok.empty and (ok["variant"] == TEACHER_FEWSTEP).any():
        notes.append(
            f"Two teacher baselines at each student NFE: \"{TEACHER}\" is the teacher's own sampler with CFG "
            f"(2 NFE a step), \"{TEACHER_FEWSTEP}\" the teacher through the student's few-step sampler without CFG. "
            "A claim against the teacher is judged against the stronger of the two."
        )
    return notes


def _departures(study: dict) -> list[str]:
    """The study's stated departures from the paper's protocol at the run's scale (``[paper.departures]``,
    one list per scale), and the circular measurements the run itself holds: a variant distilled with the
    toy LPIPS loss, measured by toy-lpips / toy-fd on the same network."""
    scale = str(study.get("scale") or "")
    stated = (study.get("paper") or {}).get("departures") or {}
    out = [str(x) for x in stated.get(scale, [])] if isinstance(stated, dict) and isinstance(stated.get(scale), list) else []
    circular = []
    for v in study.get("variants", []):
        train, ev = (v.get("train") or {}), (v.get("eval") or {})
        loss = train.get("distil_loss") or {}
        loss = loss if isinstance(loss, dict) else {"name": loss}  # a component without options is stored by name
        evaluators = {e.get("name") if isinstance(e, dict) else e for e in ev.get("evaluators", [])}
        net = loss.get("net", (loss.get("options") or {}).get("net", "auto"))
        if loss.get("name") == "lpips" and "toy-lpips" in evaluators and net in ("auto", "toy-digits") and v.get("name") not in circular:
            circular.append(str(v.get("name")))
    if circular:
        out.append(
            f"circular: {', '.join(circular)} distil with the toy LPIPS loss, whose network also computes toy-lpips and "
            "toy-fd; their lpips_to_teacher (and fd) measure the quantity they were trained on"
        )
    return out


# Where the paper and the authors' code differ (docs/studies.md): training field -> component -> option ->
# (default when the study leaves it out, {value: what it means}). The defaults mirror the plugins' configs.
PAPER_OR_CODE = {
    "timesteps": {
        "flash": {"spread": ("paper", {"paper": "the paper's Eq. 7 spread, exp(-d^2)", "code": "the authors' code's spread, exp(-2 d^2)"})},
        "gaussian": {"std": (0, {0: "the authors' width 1/sqrt(2K) (the paper gives none)"})},
    },
    "adv_loss": {
        "lsgan": {
            "scores": ("raw", {"raw": "LSGAN on raw scores with the 1/2 (Eq. 8)", "sigmoid": "LSGAN on sigmoid scores (the authors' code)"}),
            "head": ("paper", {"paper": "the paper's discriminator head", "code": "the authors' small discriminator head"}),
        },
        "hinge": {"head": ("paper", {"paper": "the paper's discriminator head", "code": "the authors' small discriminator head"})},
        "wgan": {
            "clip": (0.01, {0.01: "WGAN critic clipped to +-0.01 (Arjovsky et al., the authors' code)", 0: "WGAN without a Lipschitz constraint"}),  # noqa: E501
            "head": ("paper", {"paper": "the paper's discriminator head", "code": "the authors' small discriminator head"}),
        },
    },
    "distil_loss": {
        "lpips": {
            "crop": (
                64,
                {
                    64: "LPIPS distillation on the centre 64x64-latent crop (the authors' code; a latent no larger than 64x64, as the toy world's 16x16 pixels, is decoded whole)",  # noqa: E501
                    0: "LPIPS distillation on the full image",
                },
            ),
            "clamp": (True, {True: "decoded images clamped to [-1, 1] before LPIPS (the authors' code)", False: "decoded images not clamped before LPIPS"}),
        }
    },
}


def _method_choices(study: dict) -> list[str]:
    """Which side ran wherever the paper and the authors' code differ, with the variants it applies to when
    not all of them (e.g. "pi: the paper's Eq. 7 spread, exp(-d^2)")."""
    seen: dict[str, list[str]] = {}
    variants = [v for v in study.get("variants", []) if isinstance(v, dict)]
    for v in variants:
        train = v.get("train") or {}
        lines = []
        for field, components in PAPER_OR_CODE.items():
            spec = train.get(field)
            spec = spec if isinstance(spec, dict) else {"name": spec}
            for option, (default, meanings) in components.get(spec.get("name"), {}).items():
                value = spec.get(option, default)
                label = meanings.get(value, f"{spec.get('name')} {option} = {value}")
                lines.append(f"{field} {spec.get('name')}: {label}")
        if train.get("lcm_boundary"):
            lines.append("the authors' LCM boundary condition on the student (lcm_boundary = true)")
        if train.get("draws") == "per_batch":
            lines.append("one start index and one omega per batch, DMD its own omega (the authors' code; draws = per_batch)")
        if train.get("phase_counting") == "optimizer_calls":
            lines.append("the authors' phase counter, two optimizer calls per batch (phase_counting = optimizer_calls)")
        for line in lines:
            names = seen.setdefault(line, [])
            if v.get("name") not in names:
                names.append(str(v.get("name")))
    all_names = _unique_in_order(str(v.get("name")) for v in variants)
    return [line if len(names) == len(all_names) else f"{line} ({', '.join(names)})" for line, names in seen.items()]


def pd_numeric(series):
    import pandas as pd

    return pd.to_numeric(series, errors="coerce")
