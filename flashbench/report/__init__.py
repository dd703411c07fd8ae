"""Tables and the HTML report of one study run, built from stored results only (never recomputed).

``render_report(run_dir)`` reads ``study.json``, ``provenance.json`` and the rows of complete
variants (see ``flashbench.results`` for the row schema) and writes:

- ``tables/main.{csv,md,tex}``: one row per (role, variant, NFE); per metric the mean over seeds
  and, with several seeds, the sample standard deviation (ddof=1); cost columns (trainable
  parameters, seconds per training step, teacher and student NFEs per training step, training
  hours); samples ``n``. Teacher baselines first (NFE descending), then students in the study's
  variant order.
- ``tables/panel.{csv,md,tex}``: the students at the study's ``primary_nfe``, one row per variant,
  with its axis values and metrics: the figure panel the study reproduces.
- ``tables/paper.{csv,md,tex}`` (studies with ``paper.reference``): every row of the paper's table
  beside the measured row it corresponds to (same role and NFE), then this run's rows the paper
  does not have.
- ``report.md``: the same tables and verdicts as Markdown (no images), readable on a code host.
- ``report.html``: one self-contained file (inline CSS and SVG, images and table exports as data
  URIs, no scripts): the paper's direction beside this run's verdicts on the paper's claims, the
  paper's numbers beside the measured ones, the figure panel as plots (bars per metric; a study
  with a ``guidance_fixed`` axis also gets the FID-vs-CLIP curve of Figure 5d, the sampled range
  marked), the tables, sample grids (teacher at many steps, teacher at the student's NFE, each
  student; same prompts and initial noise), failed and unfinished variants, provenance.

Tables, in every format, mark each metric ↑ (higher is better) or ↓, show "mean ± std" where
there are several seeds, and put the best non-teacher value of each metric in bold.

``render_index(directory)`` writes ``directory/index.html`` over every report found there (one
level of sub-folders too); ``publish_reports(run_dirs, dest)`` re-renders runs, copies each
report into ``dest`` and rewrites its index. ``flashbench report --help``.

Optional study keys the report understands: ``paper.direction`` (text), ``paper.claims`` (list of
``{text, metric, better: "lower"|"higher", variant, than}``), ``paper.reference`` (list of flat
dicts, e.g. ``{"method": "Flash", "nfe": 4, "fid": 22.5}``: the paper's values; an optional
``variant`` key names the measured variant it corresponds to, ``"teacher"`` for the teacher
baselines, ``"none"`` for none; without it, a method starting with "teacher" is the teacher and a
method whose name starts with (or ends) a variant's name is that variant).
Optional runner files: ``variants/<key>/<stem>.json`` beside a grid ``<stem>.png`` with
``{"prompts": [...], "caption": "..."}`` is shown with that grid.

The package, one part per module: :mod:`.rows` (reading the stored rows), :mod:`.tables` (the pandas tables),
:mod:`.formats` (tables as HTML cells, Markdown and LaTeX), :mod:`.claims` (verdicts and measured effects),
:mod:`.plots` (inline SVG), :mod:`.samples` (sample grids), :mod:`.notes` (failures, provenance, caveats),
:mod:`.render` (``render_report``) and :mod:`.publish` (the index, publishing, the summary table). Numbers are
written as :mod:`flashbench.formatting` writes them. The command is ``flashbench report`` (:mod:`flashbench.cli`).
"""

from __future__ import annotations

from .claims import ClaimResult, evaluate_claims, measured_effects
from .publish import INDEX_FILE, publish_reports, read_report_meta, render_index, summary_markdown
from .render import render_report
from .rows import METRIC_ALIASES, metric_directions
from .tables import main_table, paper_directions, paper_table, panel_table

__all__ = [
    "render_report",
    "render_index",
    "publish_reports",
    "read_report_meta",
    "summary_markdown",
    "main_table",
    "panel_table",
    "paper_table",
    "evaluate_claims",
    "ClaimResult",
    "metric_directions",
    # also read by other modules: the study loader (METRIC_ALIASES), the command line (INDEX_FILE)
    "measured_effects",
    "paper_directions",
    "METRIC_ALIASES",
    "INDEX_FILE",
]
