"""The figure panel as inline SVG (bars per metric; Figure 5(d)'s FID-vs-CLIP curve for a guidance axis), built
here from escaped pieces so that every label is escaped by hand."""

from __future__ import annotations

import html
import math
from typing import Any

from ..formatting import is_missing, mean_interval, number
from .formats import DOWN, PRETTY, UP
from .rows import CI_HIGH, CI_LOW, TEACHER

GUIDANCE_AXIS = "guidance_fixed"


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (the first and last enclose the data)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    v = start
    while v < hi + step * 0.999 and len(ticks) < 50:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _tick_label(v: float, ticks: list[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else (1 if step % 1 else 0)
    return f"{v:.{decimals}f}"


def _direction_text(higher: bool | None) -> str:
    return "" if higher is None else (f" {UP} higher is better" if higher else f" {DOWN} lower is better")


def _svg_bars(metric: str, higher: bool | None, points: list[tuple[str, float, float, float]], reference: tuple[str, float] | None) -> str:
    """Horizontal bars, one per ``(label, mean, low, high)``, whiskers over the 95% interval [low, high]
    (NaN: none), the best bar highlighted, an optional reference line (the teacher at the same NFE).

    Bars start at zero unless every value sits in a band narrower than 30% of its magnitude (CLIP scores
    of 0.90-0.92): then the axis starts near the smallest value, and the title says so, or every bar would
    look the same."""
    label_w, plot_w, value_w, row_h, top, bottom = 210, 360, 170, 24, 44, 34
    width, height = label_w + plot_w + value_w, top + row_h * len(points) + bottom
    lows = [m if is_missing(lo) else min(m, lo) for _, m, lo, _ in points]
    highs = [m if is_missing(hi) else max(m, hi) for _, m, _, hi in points]
    if reference is not None:
        lows.append(reference[1])
        highs.append(reference[1])
    d_lo, d_hi = min(lows), max(highs)
    narrow = (d_lo > 0 and d_hi - d_lo < 0.3 * d_hi) or (d_hi < 0 and d_hi - d_lo < 0.3 * -d_lo)
    if narrow:
        pad = (d_hi - d_lo) * 0.15 or abs(d_hi) * 0.02
        ticks = _ticks(d_lo - pad, d_hi + pad)
    else:
        ticks = _ticks(min(0.0, d_lo), max(0.0, d_hi))
    lo, hi = ticks[0], ticks[-1]
    x = lambda v: label_w + (v - lo) / (hi - lo) * plot_w  # noqa: E731
    best = (max if higher else min)(p[1] for p in points) if higher is not None and points else None
    note = f" (axis from {_tick_label(lo, ticks)}, not zero)" if narrow and lo > 0 else ""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(metric)} per variant" class="chart bars">',
        f'<text x="4" y="16" class="t">{_e(metric)}<tspan class="v">{_e(_direction_text(higher))}{_e(note)}</tspan></text>',
    ]
    for t in ticks:
        tx = x(t)
        parts.append(f'<line x1="{tx:.1f}" y1="{top - 8}" x2="{tx:.1f}" y2="{height - bottom + 2}" class="grid"/>')
        parts.append(f'<text x="{tx:.1f}" y="{height - bottom + 16}" text-anchor="middle" class="v">{_e(_tick_label(t, ticks))}</text>')
    zero = x(min(max(0.0, lo), hi))  # bars grow from zero, or from the axis' edge when it excludes zero
    for i, (label, mean, low, high) in enumerate(points):
        shown = mean_interval(mean, math.nan, low, high)
        y = top + row_h * i
        cy = y + row_h / 2
        short = label if len(label) <= 30 else label[:29] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{cy + 4:.1f}" text-anchor="end"><title>{_e(label)}</title>{_e(short)}</text>')
        x0, x1 = sorted((zero, x(mean)))
        cls = "bar best" if best is not None and mean == best else "bar"
        parts.append(
            f'<rect x="{x0:.1f}" y="{y + 5:.1f}" width="{max(x1 - x0, 1):.1f}" height="{row_h - 10}" class="{cls}">'
            f'<title>{_e(label)}: {_e(shown)}</title></rect>'
        )
        if not (is_missing(low) or is_missing(high)):
            a, b = x(low), x(high)
            parts.append(f'<path d="M{a:.1f},{cy - 4:.1f}v8M{a:.1f},{cy:.1f}H{b:.1f}M{b:.1f},{cy - 4:.1f}v8" class="err"/>')
        parts.append(f'<text x="{label_w + plot_w + 8}" y="{cy + 4:.1f}" class="v{" bestv" if cls.endswith("best") else ""}">{_e(shown)}</text>')
    parts.append(f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{height - bottom + 2}" class="ax"/>')
    if reference is not None:
        rx = x(reference[1])
        parts.append(f'<line x1="{rx:.1f}" y1="{top - 8}" x2="{rx:.1f}" y2="{height - bottom + 2}" class="ref"/>')
        parts.append(
            f'<text x="{min(rx, label_w + plot_w):.1f}" y="{top - 12}" text-anchor="{"start" if rx < label_w + 90 else "end"}" class="refl">'
            f'{_e(reference[0])}: {_e(number(reference[1]))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


class _LabelPlacer:
    """Puts point labels where they overlap neither the markers nor the labels placed before them (the
    first of a few candidate positions that is free; the first candidate when none is)."""

    CANDIDATES = ((8, -8, "start"), (8, 15, "start"), (-8, -8, "end"), (-8, 15, "end"), (0, -13, "middle"), (0, 22, "middle"))

    def __init__(self, markers: list[tuple[float, float]], char_w: float = 6.0, height: float = 11.0):
        self.boxes = [(x - 6, y - 6, x + 6, y + 6) for x, y in markers]
        self.char_w, self.height = char_w, height

    def place(self, x: float, y: float, text: str) -> tuple[float, float, str]:
        width = self.char_w * len(text)
        chosen = None
        for dx, dy, anchor in self.CANDIDATES:
            left = x + dx - (width if anchor == "end" else width / 2 if anchor == "middle" else 0)
            box = (left, y + dy - self.height + 2, left + width, y + dy + 2)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in self.boxes):
                chosen = (x + dx, y + dy, anchor, box)
                break
        if chosen is None:
            dx, dy, anchor = self.CANDIDATES[0]
            chosen = (x + dx, y + dy, anchor, (x + dx, y + dy - self.height, x + dx + width, y + dy))
        self.boxes.append(chosen[3])
        return chosen[0], chosen[1], chosen[2]


def _svg_tradeoff(
    x_metric: str,
    x_higher: bool | None,
    y_metric: str,
    y_higher: bool | None,
    fixed: list[tuple[str, float, float, float, float, float, float]],
    sampled: list[tuple[str, float, float, float, float, float, float]],
    teacher: tuple[str, float, float] | None,
) -> str:
    """Figure 5(d): y (FID) against x (CLIP) for each fixed guidance (a curve in order of omega), the
    sampled-range variants as marked points, the teacher as a grey square. Points:
    (label, x, x_low, x_high, y, y_low, y_high), whiskers over the 95% intervals."""
    left, right, top, bottom = 64, 200, 40, 50
    plot_w, plot_h = 420, 280
    width, height = left + plot_w + right, top + plot_h + bottom
    pts = fixed + sampled
    xs = [v for p in pts for v in p[1:4] if not is_missing(v)] + ([teacher[1]] if teacher else [])
    ys = [v for p in pts for v in p[4:7] if not is_missing(v)] + ([teacher[2]] if teacher else [])
    xt, yt = _ticks(min(xs), max(xs)), _ticks(min(ys), max(ys))
    X = lambda v: left + (v - xt[0]) / (xt[-1] - xt[0]) * plot_w  # noqa: E731
    Y = lambda v: top + plot_h - (v - yt[0]) / (yt[-1] - yt[0]) * plot_h  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(y_metric)} against {_e(x_metric)}" class="chart tradeoff">',
        f'<text x="4" y="16" class="t">{_e(y_metric)} against {_e(x_metric)}, one point per guidance setting</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for t in xt:
        parts.append(f'<line x1="{X(t):.1f}" y1="{top}" x2="{X(t):.1f}" y2="{top + plot_h}" class="grid"/>')
        parts.append(f'<text x="{X(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="v">{_e(_tick_label(t, xt))}</text>')
    for t in yt:
        parts.append(f'<line x1="{left}" y1="{Y(t):.1f}" x2="{left + plot_w}" y2="{Y(t):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" class="v">{_e(_tick_label(t, yt))}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 10}" text-anchor="middle">{_e(x_metric)}{_e(_direction_text(x_higher))}</text>')
    parts.append(
        f'<text transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">{_e(y_metric)}{_e(_direction_text(y_higher))}</text>'
    )

    def whiskers(px, xlo, xhi, py, ylo, yhi):
        out = []
        if not (is_missing(xlo) or is_missing(xhi)):
            out.append(f'<line x1="{X(xlo):.1f}" y1="{Y(py):.1f}" x2="{X(xhi):.1f}" y2="{Y(py):.1f}" class="err"/>')
        if not (is_missing(ylo) or is_missing(yhi)):
            out.append(f'<line x1="{X(px):.1f}" y1="{Y(ylo):.1f}" x2="{X(px):.1f}" y2="{Y(yhi):.1f}" class="err"/>')
        return out

    if len(fixed) > 1:
        path = " ".join(f"{X(p[1]):.1f},{Y(p[4]):.1f}" for p in fixed)
        parts.append(f'<polyline points="{path}" class="curve"/>')
    markers = [(X(p[1]), Y(p[4])) for p in pts] + ([(X(teacher[1]), Y(teacher[2]))] if teacher else [])
    placer = _LabelPlacer(markers)
    labels = []  # the sampled range's label is placed first: it is the point the figure is about
    for label, px, xlo, xhi, py, ylo, yhi in sampled:
        parts += whiskers(px, xlo, xhi, py, ylo, yhi)
        cx, cy = X(px), Y(py)
        parts.append(
            f'<path d="M{cx:.1f},{cy - 8:.1f}L{cx + 8:.1f},{cy:.1f}L{cx:.1f},{cy + 8:.1f}L{cx - 8:.1f},{cy:.1f}Z" '
            f'class="sampled"><title>{_e(label)}: {_e(x_metric)} {_e(mean_interval(px, math.nan, xlo, xhi))}, {_e(y_metric)} '
            f'{_e(mean_interval(py, math.nan, ylo, yhi))}</title></path>'
        )
        labels.append((*placer.place(cx, cy, label), "pl sl", label))
    for label, px, xlo, xhi, py, ylo, yhi in fixed:
        parts += whiskers(px, xlo, xhi, py, ylo, yhi)
        parts.append(
            f'<circle cx="{X(px):.1f}" cy="{Y(py):.1f}" r="5" class="dot"><title>{_e(label)}: {_e(x_metric)} '
            f'{_e(mean_interval(px, math.nan, xlo, xhi))}, {_e(y_metric)} {_e(mean_interval(py, math.nan, ylo, yhi))}</title></circle>'
        )
        labels.append((*placer.place(X(px), Y(py), label), "pl", label))
    if teacher is not None:
        label, tx, ty = teacher
        parts.append(
            f'<rect x="{X(tx) - 5:.1f}" y="{Y(ty) - 5:.1f}" width="10" height="10" class="teacher">'
            f'<title>{_e(label)}: {_e(x_metric)} {_e(number(tx))}, {_e(y_metric)} {_e(number(ty))}</title></rect>'
        )
        labels.append((*placer.place(X(tx), Y(ty), label), "pl v", label))
    for lx_, ly_, anchor, cls, label in labels:
        parts.append(f'<text x="{lx_:.1f}" y="{ly_:.1f}" text-anchor="{anchor}" class="{cls}">{_e(label)}</text>')
    lx, ly = left + plot_w + 14, top + 8
    parts.append(f'<circle cx="{lx + 5}" cy="{ly}" r="5" class="dot"/><text x="{lx + 16}" y="{ly + 4}" class="v">fixed ω (line: ω rising)</text>')
    parts.append(f'<path d="M{lx + 5},{ly + 14}l7,7l-7,7l-7,-7Z" class="sampled"/><text x="{lx + 16}" y="{ly + 25}" class="v">ω sampled from its range</text>')
    if teacher is not None:
        parts.append(
            f'<rect x="{lx}" y="{ly + 37}" width="10" height="10" class="teacher"/><text x="{lx + 16}" y="{ly + 46}" class="v">teacher, same NFE</text>'
        )  # noqa: E501
    parts.append("</svg>")
    return "".join(parts)


def _variant_train(study: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for v in study.get("variants", []):
        if isinstance(v, dict) and isinstance(v.get("train"), dict):
            out.setdefault(str(v.get("name")), v["train"])
    return out


def _guidance_label(value: Any, train: dict | None) -> tuple[str, bool]:
    """("ω = 5", False) for a fixed guidance; ("ω ~ U[3, 13]", True) for the sampled range (value 0)."""
    try:
        g = float(value)
    except (TypeError, ValueError):
        return str(value), False
    if g > 0:
        return f"ω = {g:g}", False
    lo, hi = (train or {}).get("guidance_min"), (train or {}).get("guidance_max")
    if lo is None or hi is None:
        return "ω sampled", True
    return f"ω ~ U[{float(lo):g}, {float(hi):g}]", True


def _tradeoff_metrics(directions: dict[str, bool | None]) -> tuple[str, str] | None:
    """(CLIP-like x, FID-like y): clip_score and fid/fd by name, else the first higher- and lower-is-better metric."""
    lower = [m for m, d in directions.items() if d is False]
    higher = [m for m, d in directions.items() if d is True]
    y = next((m for m in ("fid", "fd") if m in lower), lower[0] if lower else None)
    x = next((m for m in ("clip_score",) if m in higher), higher[0] if higher else None)
    return (x, y) if x and y else None


def _figure_plots(study: dict, panel, main, directions, nfe) -> list[dict]:
    """The panel as plots: for a guidance axis the FID-vs-CLIP curve, then bars per metric."""
    from markupsafe import Markup

    plots: list[dict] = []
    if panel.empty:
        return plots
    # the reference line: the teacher with its own sampler and CFG at the same NFE
    teacher = main[(main["role"] == "teacher") & (main["variant"] == TEACHER) & (main["nfe"] == nfe)] if not main.empty and nfe is not None else main.iloc[0:0]
    trains = _variant_train(study)

    def cell(row, metric) -> tuple[float, float, float]:
        """(mean, low, high): the 95% interval, NaN where the row has none."""
        lo, hi = row.get(f"{metric}{CI_LOW}", math.nan), row.get(f"{metric}{CI_HIGH}", math.nan)
        return float(row[metric]), (math.nan if is_missing(lo) else float(lo)), (math.nan if is_missing(hi) else float(hi))

    pair = _tradeoff_metrics(directions)
    if GUIDANCE_AXIS in panel.columns and pair and all(m in panel for m in pair):
        xm, ym = pair
        fixed, sampled = [], []
        for _, r in panel.iterrows():
            if is_missing(r[xm]) or is_missing(r[ym]):
                continue
            label, is_sampled = _guidance_label(r[GUIDANCE_AXIS], trains.get(str(r["variant"])))
            point = (label, *cell(r, xm), *cell(r, ym))
            try:
                order = float(r[GUIDANCE_AXIS])
            except (TypeError, ValueError):
                order = math.inf
            (sampled if is_sampled else fixed).append((order, point))
        fixed_pts = [p for _, p in sorted(fixed, key=lambda t: t[0])]
        sampled_pts = [p for _, p in sampled]
        tpoint = None
        if not teacher.empty and not is_missing(teacher[xm].iloc[0]) and not is_missing(teacher[ym].iloc[0]):
            tpoint = (f"teacher, {nfe} NFE", float(teacher[xm].iloc[0]), float(teacher[ym].iloc[0]))
        if fixed_pts or sampled_pts:
            plots.append(
                {
                    "title": f"{ym} against {xm} at {nfe} NFE",
                    "caption": "As Figure 5(d) of the paper: each fixed guidance scale ω is a point on the curve (in order "
                    "of ω); the marked point samples ω uniformly from its range during training, as Flash does.",
                    "svg": Markup(_svg_tradeoff(xm, directions.get(xm), ym, directions.get(ym), fixed_pts, sampled_pts, tpoint)),
                }
            )
    if len(panel) < 2:
        return plots
    for metric, higher in directions.items():
        if metric not in panel:
            continue
        points = []
        for _, r in panel.iterrows():
            if is_missing(r[metric]):
                continue
            label = str(r["variant"])
            if GUIDANCE_AXIS in panel.columns:
                label = _guidance_label(r[GUIDANCE_AXIS], trains.get(label))[0]
            points.append((label, *cell(r, metric)))
        if not points:
            continue
        reference = None
        if not teacher.empty and metric in teacher and not is_missing(teacher[metric].iloc[0]):
            reference = (f"teacher {nfe} NFE", float(teacher[metric].iloc[0]))
        plots.append(
            {
                "title": f"{metric} at {nfe} NFE",
                "caption": "",
                # Built from escaped pieces only (see _svg_bars), so it is safe to mark as markup.
                "svg": Markup(_svg_bars(metric, higher, points, reference)),
            }
        )
    if "teacher_nfe_per_step" in panel and panel["teacher_nfe_per_step"].notna().any():
        # the panel varies the teacher's cost per training step (K, Fig. 5e): plot it as well
        points = [
            (str(r["variant"]), float(r["teacher_nfe_per_step"]), math.nan, math.nan) for _, r in panel.iterrows() if not is_missing(r["teacher_nfe_per_step"])
        ]
        plots.append({"title": "teacher NFE per training step", "caption": "", "svg": Markup(_svg_bars(PRETTY["teacher_nfe_per_step"], None, points, None))})
    return plots
