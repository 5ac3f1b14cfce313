"""Batch labelling: every sentence of new articles gets each target's stance, plus a per-article profile.

- `inputs`: listing and reading `.txt`/`.jsonl` files, folders, globs and URIs; input errors.
- `records`: predicting a window of articles; sentence records and per-article summaries.
- `local`: the local engine (one process, streaming, resumable from `OUT.partial/`).
- `ray_engine`: the Ray Data engine (parallel reading, a pool of predicting actors, one
  committed part per input file or slice of one, exactly once across reruns).
- `options`, `model`: what both engines share (options, outputs, predictor, fingerprint).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from omegaconf import DictConfig

from diplostance.holders import load_holder_model
from diplostance.labelling.inputs import (
    Article,
    InputError,
    Source,
    discover_inputs,
    iter_items,
    read_source,
    refuse_outputs_among_inputs,
)
from diplostance.labelling.model import check_arithmetic, load_labelling_predictor, run_fingerprint
from diplostance.labelling.options import (
    Counts,
    LabellingError,
    LabelOptions,
    LabelSummary,
    OutputExistsError,
    OutputPaths,
    RayOptions,
    expand_output_shorthand,
    output_paths,
)
from diplostance.labelling.records import doc_summary, flat_columns, flatten, label_window, sentence_records
from diplostance.predictors import check_model_folder

log = logging.getLogger(__name__)

__all__ = [
    "Article",
    "Counts",
    "InputError",
    "LabelOptions",
    "LabelSummary",
    "LabellingError",
    "OutputExistsError",
    "OutputPaths",
    "RayOptions",
    "Source",
    "discover_inputs",
    "doc_summary",
    "expand_output_shorthand",
    "flat_columns",
    "flatten",
    "iter_items",
    "label",
    "label_window",
    "load_labelling_predictor",
    "output_paths",
    "read_source",
    "sentence_records",
]


def _own_run_folder() -> list[str]:
    """The folder Hydra writes this command's log and config into (scripts/label.py): never an input, even
    when it lies inside one (`inputs=[.]` started in the article folder)."""
    from hydra.core.hydra_config import HydraConfig

    return [HydraConfig.get().runtime.output_dir] if HydraConfig.initialized() else []


def label(cfg: Mapping | DictConfig | LabelOptions, predictor=None) -> LabelSummary:
    """Label every article named by `cfg.inputs`; see `configs/label.yaml` for the options.

    `predictor` (from `load_labelling_predictor`, with the same precision) saves loading the
    model again when a program labels several batches with the local engine.

    Raises ModelFolderError, DeviceError or LabellingError before any input is read when the
    model folder, the device, the options or the output location cannot work. Bad input files
    or lines do not raise: they are counted and written to the errors output.
    """
    started = time.perf_counter()
    options = cfg if isinstance(cfg, LabelOptions) else LabelOptions.from_config(cfg)
    kind, labels = check_model_folder(options.model_dir)
    load_holder_model(options.model_dir)  # a holders.json that cannot be used stops here, before any input
    if kind == "tfidf" and options.precision != "fp32":
        log.warning("precision=%s applies to transformer models; the tfidf model ignores it", options.precision)
    elif options.engine == "local" or not options.ray.num_gpus_per_actor:
        check_arithmetic(options, kind)  # ray actors with GPUs check on their own machine
    sources = discover_inputs(options.inputs, exclude=_own_run_folder())
    refuse_outputs_among_inputs(options.output, options.inputs, sources)
    fingerprint = run_fingerprint(options, kind, sources)
    if options.engine == "ray":
        from diplostance.labelling.ray_engine import label_with_ray

        summary = label_with_ray(options, kind, labels, sources, fingerprint)
    else:
        from diplostance.labelling.local import label_locally

        options.output.records.parent.mkdir(parents=True, exist_ok=True)
        summary = label_locally(options, kind, labels, sources, fingerprint, predictor)
    summary.seconds = time.perf_counter() - started
    for warning in summary.counts.warnings():  # sentences cut, text the vocabulary cannot read
        log.warning(warning)
    return summary
