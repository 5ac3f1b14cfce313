"""Score a saved model on a dataset split and write the run's outputs.

Scoring goes through the local `evaluate` module (loaded by path, no Hub); 95%
bootstrap intervals and the `seed` slice are added beside the overall figures.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import datasets
import evaluate
import numpy as np

from diplostance.data import DataError, StanceData
from diplostance.holders import evaluate_holder_folder
from diplostance.outputs import FINISHED_MARKER
from diplostance.predictors import load_predictor
from diplostance.reports import REAL_TEXT_SLICES, write_confusion_plots, write_report
from diplostance.schema import IGNORE_INDEX, LabelSpace
from diplostance.scoring import STANCE_METRIC_PATH, bootstrap_intervals

SEED_SOURCE = "seed"


def slice_order(name: str) -> tuple[int, str]:
    return (REAL_TEXT_SLICES.index(name) if name in REAL_TEXT_SLICES else len(REAL_TEXT_SLICES), name)


def align_references(dataset: datasets.Dataset, data_labels: LabelSpace, model_labels: LabelSpace) -> np.ndarray:
    """Gold labels re-indexed into the model's (target, polarity) layout.

    Model targets the data does not annotate become IGNORE_INDEX (left out of the
    metrics); data targets or polarities the model does not know are an error.
    """
    unknown_targets = sorted(set(data_labels.targets) - set(model_labels.targets))
    unknown_polarities = sorted(set(data_labels.polarities) - set(model_labels.polarities))
    if unknown_targets or unknown_polarities:
        raise DataError(
            f"the data has target(s) {unknown_targets} / polarit(ies) {unknown_polarities} that the model does not "
            f"predict (model targets {list(model_labels.targets)}, polarities {list(model_labels.polarities)})"
        )
    gold = np.asarray(dataset["labels"], dtype=int).reshape(len(dataset), len(data_labels.targets))
    refs = np.full((len(dataset), len(model_labels.targets)), IGNORE_INDEX, dtype=int)
    mapped = np.array([model_labels.polarities.index(p) for p in data_labels.polarities])
    for t, target in enumerate(data_labels.targets):
        column = gold[:, t]
        annotated = column != IGNORE_INDEX
        refs[annotated, model_labels.targets.index(target)] = mapped[column[annotated]]
    return refs


@functools.cache
def stance_metric() -> evaluate.EvaluationModule:
    """The local `evaluate` module, loaded by path once per process."""
    return evaluate.load(STANCE_METRIC_PATH)


def score(predictions: np.ndarray, references: np.ndarray, labels: LabelSpace, n_resamples: int, seed: int) -> dict:
    result = stance_metric().compute(
        predictions=predictions.tolist(),
        references=references.tolist(),
        targets=list(labels.targets),
        polarities=list(labels.polarities),
    )
    if n_resamples:
        result["bootstrap"] = bootstrap_intervals(
            predictions, references, labels.targets, labels.polarities, n_resamples=n_resamples, seed=seed
        )
    return result


def score_dataset(
    probs: np.ndarray,
    refs: np.ndarray,
    sources: list[str],
    model_labels: LabelSpace,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Overall metrics, plus each slice apart (`seed`, `news`, `composed`, `annotated`, ...).

    `sources` gives each sentence's slice. `seed_slice` repeats the seed slice under the
    name the quality gate and older reports read.
    """
    preds = probs.argmax(axis=-1)
    metrics = score(preds, refs, model_labels, n_resamples, seed)
    names = np.array(sources)
    metrics["slices"] = {
        name: {
            "sentences": int((names == name).sum()),
            **score(preds[names == name], refs[names == name], model_labels, n_resamples, seed),
        }
        for name in sorted(set(sources), key=slice_order)
    }
    if SEED_SOURCE in metrics["slices"]:
        metrics["seed_slice"] = {k: v for k, v in metrics["slices"][SEED_SOURCE].items() if k != "sentences"}
    return metrics


def prediction_records(dataset: datasets.Dataset, probs: np.ndarray, refs: np.ndarray, labels: LabelSpace):
    for i, row in enumerate(dataset):
        stances = {}
        for t, target in enumerate(labels.targets):
            stances[target] = {
                "stance": labels.polarities[int(probs[i, t].argmax())],
                "gold": None if refs[i, t] == IGNORE_INDEX else labels.polarities[refs[i, t]],
                "probs": {p: round(float(probs[i, t, k]), 6) for k, p in enumerate(labels.polarities)},
            }
        yield {
            "id": row["id"],
            "doc_id": row["doc_id"],
            "source": row["source"],
            "slice": row.get("slice", row["source"]),
            "text": row["text"],
            "stances": stances,
        }


def write_outputs(
    out_dir: Path,
    title: str,
    metrics: dict,
    dataset: datasets.Dataset,
    probs: np.ndarray,
    refs: np.ndarray,
    model_labels: LabelSpace,
    baseline: dict | None = None,
    companions: dict[str, dict] | None = None,
) -> None:
    """metrics.json, predictions.jsonl, confusion PNGs and report.md into out_dir.

    Written into a hidden staging folder, then renamed into place one by one, metrics.json
    last: a file appears under its name only when complete, and metrics.json marks a finished run.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-outputs-", dir=out_dir))
    try:
        records = list(prediction_records(dataset, probs, refs, model_labels))
        with (staging / "predictions.jsonl").open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        plots = write_confusion_plots(staging, metrics, model_labels.polarities)
        write_report(
            staging / "report.md", title, metrics, records, plots, model_labels.polarities, baseline, companions
        )
        (staging / FINISHED_MARKER).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        for name in sorted(os.listdir(staging), key=lambda n: n == FINISHED_MARKER):
            os.replace(staging / name, out_dir / name)
    except OSError as error:
        if error.filename is None:  # a failed write (a full disk) names no file: name the folder
            raise OSError(error.errno, error.strerror, str(out_dir)) from error
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def evaluate_model(
    model_dir: str | Path,
    data: StanceData,
    split: str,
    out_dir: Path,
    title: str,
    predictor_options: dict | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    baseline: dict | None = None,
    ensemble: dict | None = None,
    embedder: dict | None = None,
) -> dict:
    """Load a saved model, predict a split, score it and write every output.

    `baseline`, `ensemble` and `embedder` are the metrics of the models trained beside this one:
    report.md shows them side by side and, when there is an ensemble, leads with it."""
    predictor = load_predictor(model_dir, **(predictor_options or {}))
    dataset = data.split(split)
    probs = predictor.predict_proba(dataset["text"])
    refs = align_references(dataset, data.labels, predictor.labels)
    slices = dataset["slice"] if "slice" in dataset.column_names else dataset["source"]
    metrics = score_dataset(probs, refs, slices, predictor.labels, n_resamples, seed)
    # what was evaluated: the split's own files (a training run read the train files too)
    metrics["model_dir"], metrics["split"], metrics["data"] = str(model_dir), split, data.describe(split)
    if data.summary:  # sentences per split, and labels as read and as mapped by the data's maps
        metrics["data_summary"] = data.summary
    metrics["warnings"] = list(data.warnings)  # suspicious but legal input, repeated in report.md
    holders = evaluate_holder_folder(model_dir, dataset, getattr(data, "holders", {}), n_resamples, seed)
    if holders is not None:  # the folder's stance-holder model on the split's gold holders
        metrics["holders"] = holders
    companions = {name: m for name, m in (("ensemble", ensemble), ("embedding classifier", embedder)) if m}
    write_outputs(out_dir, title, metrics, dataset, probs, refs, predictor.labels, baseline, companions)
    return metrics
