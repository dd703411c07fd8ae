"""Study files: one TOML file per table or figure panel, resolved into a list of runnable variants.

A study file has these sections (every one but ``[study]`` optional)::

    [study]            name (required, [a-z0-9_-]+), title, reproduces, panel, version,
                       default_scale, seeds (default [0]), primary_nfe (default: the first eval NFE)
    [paper]            free-form reference values for the report, kept as-is; ``[[paper.claims]]``
                       entries (text, metric, better = "lower"|"higher", variant, than, nfe) are checked, and
                       ``[paper.compute]`` (iterations, gpu_hours, global_batch, gpu: the paper's training cost)
    [base]             the paper recipe: any :class:`~flashbench.config.TrainConfig` field, and a
                       ``[base.eval]`` table of :class:`~flashbench.config.EvalConfig` fields
    [scale.<name>]     a named scale: overrides of ``[base]`` (same keys). ``paper`` always exists and
                       is ``[base]`` itself (plus ``[scale.paper]`` overrides if given)
    [[variants]]       explicit variants: ``name`` plus overrides (and an optional ``eval`` table)
    [matrix]           axes: a field (or ``"eval.<field>"``) and a non-empty array of values; the
                       cartesian product of all axes, applied to each explicit variant
    [scale.<s>.matrix] replaces ``[matrix]`` at scale ``<s>`` (e.g. guidance values or K that suit
                       the toy teacher)
    [[scale.<s>.variants]] explicit variants that exist at scale ``<s>`` only (e.g. evaluation-only
                       baselines that load a published checkpoint)

Resolution of one variant, last wins: TrainConfig/EvalConfig defaults <- ``[base]`` <-
``[scale.<s>]`` <- the explicit variant <- the matrix cell. Names: ``variant/k=v,k2=v2`` with both,
``k=v,k2=v2`` with a matrix only, the variant's name without a matrix, ``base`` with neither. Each
variant runs once per seed.

Validation collects every problem before reporting any; each is a :class:`StudyError` that names the
file and the key path (``studies/x.toml: scale.toy.iterations: must be a positive integer, got -3``).
Each problem prints as one line (control characters in keys, names and paths escaped). Hostile input
is bounded before anything recurses or runs: files over MAX_FILE_BYTES, nesting deeper than MAX_DEPTH,
more than MAX_VARIANTS variants or MAX_SEEDS seeds, NaN/inf and NUL characters in any value are refused.
Types, ranges and cross-field rules are checked in every section, whatever the scale (by pydantic: typed models
of ``[study]``, the layers, ``[paper.compute]`` and the claims, a TypeAdapter per component config); component names,
tags and options are checked for the resolved scale (``flashbench validate`` resolves every scale: built-in
components are registered whatever weights a machine has). A claim's ``metric`` must be produced by an
evaluator of the study at some scale, by the name the evaluator declared at registration (or stand for
one: the paper's ``fid`` for the toy ``fd``); an evaluator that declares none makes any metric acceptable.

Nothing here imports torch.

The package, one module per rule: :mod:`~flashbench.study.reading` (reading the file and the bounds on
hostile input), :mod:`~flashbench.study.problems` (collecting problems), :mod:`~flashbench.study.values`
(field types and range checks as pydantic schemas, the models' helpers, and pydantic's errors in the study's
words), :mod:`~flashbench.study.header` (``[study]`` and seeds),
:mod:`~flashbench.study.layers` (base/scale/variant/matrix values and their merge),
:mod:`~flashbench.study.naming` (variant names and keys), :mod:`~flashbench.study.components` (component
names, tags and options), :mod:`~flashbench.study.claims` (``[paper]`` claims and compute) and
:mod:`~flashbench.study.model` (:class:`Variant`, :class:`Study`, :func:`load_study`).
"""

from __future__ import annotations

from .claims import CLAIM_KEYS, COMPUTE_KEYS, claim_applies
from .header import STUDY_KEYS
from .model import SECTIONS, Study, Variant, load_study, study_scales, validate_study
from .naming import VARIANT_NAME_RE, _slug
from .reading import MAX_DEPTH, MAX_FILE_BYTES, MAX_NAME_CHARS, MAX_SEED, MAX_SEEDS, MAX_VARIANTS, NAME_RE
from .values import (
    CONVERTERS,
    DRAWS,
    EVAL_CHECKS,
    EVAL_TYPES,
    MIXED_PRECISION,
    NUM_PHASES,
    PASSTHROUGH,
    PHASE_COUNTING,
    TRACKERS,
    TRAIN_CHECKS,
    TRAIN_TYPES,
    Check,
    Converter,
)

__all__ = [
    "Variant",
    "Study",
    "load_study",
    "validate_study",
    "study_scales",
    "MAX_VARIANTS",
    "NUM_PHASES",
    "MAX_FILE_BYTES",
    "MAX_DEPTH",
    "MAX_SEEDS",
    "MAX_NAME_CHARS",
    "COMPUTE_KEYS",
]
