"""Human-readable outputs: the per-label table, report.md, confusion plots, sweep tables."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from diplostance.errors import BadDataError, UserError
from diplostance.regression import main_model_metrics

MAX_ERRORS_SHOWN = 40
# Slices of real or realistic text, in the order reports lead with them.
REAL_TEXT_SLICES = ("seed", "annotated", "news")
# Slices of text written for the corpus (news: composed in the register of real news).
COMPOSED_SLICES = ("composed", "news")


def _fmt(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.3f}"  # an f_avg with no favor or against gold label


def per_label_table(metrics: dict) -> str:
    """Markdown: one row per target and polarity, then each target's f_avg and macro-F1."""
    lines = ["| target | polarity | precision | recall | F1 | support |", "|---|---|---|---|---|---|"]
    for target, scores in metrics["targets"].items():
        for polarity, s in scores["labels"].items():
            lines.append(
                f"| {target} | {polarity} | {_fmt(s['precision'])} | {_fmt(s['recall'])} | "
                f"{_fmt(s['f1'])} | {s['support']} |"
            )
        lines.append(f"| **{target}** | f_avg {_fmt(scores['f_avg'])} | | | macro-F1 {_fmt(scores['macro_f1'])} | |")
    lines.append(
        f"| **overall** | macro_f_avg {_fmt(metrics['macro_f_avg'])} | | | "
        f"macro_f1 {_fmt(metrics['macro_f1'])} | {metrics['num_examples']} sentences |"
    )
    return "\n".join(lines)


def summary_table(named_metrics: dict[str, dict]) -> str:
    """Markdown: macro_f_avg (with CI) and each target's f_avg for several models or slices."""
    targets = list(dict.fromkeys(t for m in named_metrics.values() for t in m["targets"]))
    lines = [
        "| | macro_f_avg | 95% CI | " + " | ".join(f"{t} f_avg" for t in targets) + " | macro_f1 |",
        "|---|---|---|" + "---|" * len(targets) + "---|",
    ]
    for name, m in named_metrics.items():
        ci = m.get("bootstrap", {}).get("macro_f_avg")
        cells = [_fmt(m["targets"][t]["f_avg"]) if t in m["targets"] else "–" for t in targets]
        ci_text = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "–"
        lines.append(
            f"| {name} | {_fmt(m['macro_f_avg'])} | {ci_text} | " + " | ".join(cells) + f" | {_fmt(m['macro_f1'])} |"
        )
    return "\n".join(lines)


def write_confusion_plots(out_dir: Path, metrics: dict, polarities) -> list[str]:
    names = []
    for target, scores in metrics["targets"].items():
        matrix = scores["confusion"]
        fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=110)
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(polarities)), polarities)
        ax.set_yticks(range(len(polarities)), polarities)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(target)
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
        fig.tight_layout()
        name = f"confusion_{target}.png"
        fig.savefig(out_dir / name)
        plt.close(fig)
        names.append(name)
    return names


def _confusion_markdown(matrix, polarities) -> str:
    lines = ["| gold \\ predicted | " + " | ".join(polarities) + " |", "|---|" + "---|" * len(polarities)]
    lines += [f"| {p} | " + " | ".join(str(v) for v in row) + " |" for p, row in zip(polarities, matrix, strict=True)]
    return "\n".join(lines)


def _members(ensemble: dict) -> str:
    weights = (ensemble.get("choice") or {}).get("weights") or []
    names = (ensemble.get("choice") or {}).get("members") or []
    return ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights, strict=False)) or "see ensemble/"


def _label_mapping(labels: dict) -> str:
    """A line with the labelled rows per spelling as read and per label as mapped, where a map changed them."""
    changed = [
        f"{kind} {_counts(counts['as_read'])} → {_counts(counts['mapped'])}"
        for kind, counts in labels.items()
        if counts.get("as_read") != counts.get("mapped")
    ]
    return "Labelled rows as read → as mapped (data maps): " + "; ".join(changed) + "." if changed else ""


def _counts(counts: dict) -> str:
    return "{" + ", ".join(f"{name}: {n}" for name, n in counts.items()) + "}"


def write_report(
    path: Path,
    title: str,
    metrics: dict,
    records: list[dict],
    plots: list[str],
    polarities,
    baseline: dict | None = None,
    companions: dict[str, dict] | None = None,
) -> None:
    """The run's report; `companions` (name -> metrics: the ensemble, the embedding classifier) are
    compared beside this model, and an `ensemble` among them is the headline: it is what to use."""
    companions = companions or {}
    slices = metrics.get("slices", {})
    real = [name for name in REAL_TEXT_SLICES if name in slices]
    parts = [
        f"# {title}",
        "",
        f"Data: {metrics.get('data', '')}, split `{metrics.get('split', '')}`, {metrics['num_examples']} sentences"
        + (" (" + ", ".join(f"{name}: {s['sentences']}" for name, s in slices.items()) + ")." if slices else "."),
        "",
    ]
    mapped = _label_mapping(metrics.get("data_summary", {}).get("labels", {}))
    if mapped:
        parts += [mapped, ""]
    # Only data that says it is composed gets the warning: a file's own slices (`external`, a source column's
    # values) are the user's text, usually real.
    if slices and set(slices) <= set(COMPOSED_SLICES):
        parts += [
            "> **Warning:** "
            + ("the test data has no real text: " if not real else "the only realistic slice is composed: ")
            + "composed sentences overstate quality on real news (by 0.3 or more macro_f_avg in the past). "
            "Judge the model on real articles (seed or annotated slices) before trusting these figures.",
            "",
        ]
    if "ensemble" in companions:
        ensemble = companions["ensemble"]
        parts += [
            f"**Headline model: the ensemble** (`ensemble/model`, members {_members(ensemble)}): macro_f_avg "
            f"{_fmt(ensemble['macro_f_avg'])} on all test sentences"
            + "".join(
                f", {_fmt(ensemble['slices'][name]['macro_f_avg'])} on the {name} slice"
                for name in real
                if name in ensemble.get("slices", {})
            )
            + ". The other rows are its members, trained in this run.",
            "",
        ]
    compared = {}
    for name in real:  # real and realistic text first: that is what the model is used on
        for label, other in companions.items():
            if name in other.get("slices", {}):
                compared[f"{label} ({name} slice)"] = other["slices"][name]
        compared[f"this model ({name} slice)"] = slices[name]
        if baseline and name in baseline.get("slices", {}):
            compared[f"tfidf baseline ({name} slice)"] = baseline["slices"][name]
    for label, other in companions.items():
        compared[f"{label} (all)"] = other
    compared["this model (all)"] = metrics
    if baseline:
        compared["tfidf baseline (all)"] = baseline
    for name, scores in slices.items():
        if name not in real:
            compared[f"this model ({name} slice)"] = scores
    parts += ["## Summary with 95% bootstrap intervals", "", summary_table(compared)]
    if "bootstrap" in metrics:
        b = metrics["bootstrap"]
        parts += [
            "",
            f"Percentile bootstrap over sentences, {b['n_resamples']} resamples. Per-target f_avg intervals: "
            + ", ".join(f"{t} [{_fmt(v['f_avg'][0])}, {_fmt(v['f_avg'][1])}]" for t, v in b["targets"].items()),
        ]
    for name in real:
        parts += ["", f"## {name.capitalize()} slice", "", per_label_table(slices[name])]
    parts += ["", "## Per-label metrics (all)", "", per_label_table(metrics)]
    for warning in metrics.get("warnings", []):
        parts += ["", f"> Warning: {warning}"]
    if metrics.get("holders"):  # the stance-holder model on the gold holders (diplostance.holders)
        from diplostance.holders import holder_report_lines

        parts += holder_report_lines(metrics["holders"])
    parts += ["", "## Confusion matrices", ""]
    for (target, scores), plot in zip(metrics["targets"].items(), plots, strict=True):
        parts += [
            f"### {target}",
            "",
            f"![{target}]({plot})",
            "",
            _confusion_markdown(scores["confusion"], polarities),
            "",
        ]
    errors = [
        r for r in records if any(s["gold"] is not None and s["gold"] != s["stance"] for s in r["stances"].values())
    ]
    parts += [
        "## Misclassified sentences",
        "",
        f"{len(errors)} of {len(records)} sentences have at least one wrong "
        f"target" + (f"; the first {MAX_ERRORS_SHOWN} are shown." if len(errors) > MAX_ERRORS_SHOWN else "."),
        "",
        "| id | slice | text | wrong (gold → predicted) |",
        "|---|---|---|---|",
    ]
    for r in errors[:MAX_ERRORS_SHOWN]:
        wrong = "; ".join(
            f"{t}: {s['gold']} → {s['stance']}"
            for t, s in r["stances"].items()
            if s["gold"] is not None and s["gold"] != s["stance"]
        )
        text = r["text"].replace("|", "\\|").replace("\n", " ")
        parts.append(f"| {r['id']} | {r.get('slice', r['source'])} | {text} | {wrong} |")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


MEMBER_BLOCKS = (("model", "main model"), ("baseline", "tfidf baseline"), ("embedder", "embedding classifier"))


def headline_lines(metrics: dict, run_dir: str | Path) -> list[str]:
    """The console's last lines after training: the headline model (the ensemble when the run has one: what
    to use), its folder and its test score, then the other models of the run with theirs."""
    run_dir = Path(run_dir)
    ci = (metrics.get("bootstrap") or {}).get("macro_f_avg")
    interval = f" (95% CI [{_fmt(ci[0])}, {_fmt(ci[1])}])" if ci else ""
    name = (metrics.get("config") or {}).get("model", {}).get("name", "model")
    if metrics.get("headline") == "ensemble":
        members = " + ".join((metrics.get("ensemble", {}).get("choice") or {}).get("members") or [])
        title = f"the ensemble ({members})" if members else "the ensemble"
    else:
        title = name
    lines = [
        f"headline model: {title}, test macro_f_avg {_fmt(metrics.get('macro_f_avg'))}{interval} "
        f"on split `{metrics.get('split', 'test')}`",
        f"  folder: {metrics.get('model_dir', run_dir / 'model')}",
    ]
    others = [
        f"{label if key != 'model' else name} {_fmt(metrics[key]['macro_f_avg'])}"
        for key, label in MEMBER_BLOCKS
        if metrics.get("headline") == "ensemble" and isinstance(metrics.get(key), dict)
    ]
    if others:
        lines.append("  its members, test macro_f_avg: " + ", ".join(others) + f" (metrics.json in {run_dir})")
    return lines


def sweep_table(directory: str | Path) -> str:
    """One comparison table over every run folder (holding metrics.json) under `directory`."""
    directory = Path(directory)
    rows = []
    for metrics_path in sorted(directory.glob("**/metrics.json")):
        if metrics_path.parent.name == "baseline":
            continue
        run = metrics_path.parent
        overrides_path = run / ".hydra" / "overrides.yaml"
        overrides = (
            overrides_path.read_text(encoding="utf-8").strip().replace("\n", " ") if overrides_path.is_file() else ""
        )
        try:
            # a run's row is its main model's (model/); its ensemble/ and embedder/ folders have rows of their own
            metrics = main_model_metrics(json.loads(metrics_path.read_text(encoding="utf-8")))
            metrics["targets"].items()
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise BadDataError(f"{metrics_path}: not a readable metrics.json ({error})") from error
        rows.append((run.relative_to(directory).as_posix() or ".", overrides, metrics))
    if not rows:
        raise UserError(f"{directory}: no run folder with a metrics.json (give a multirun or run folder)")
    targets = list(dict.fromkeys(t for *_, m in rows for t in m["targets"]))
    lines = [
        "| run | overrides | macro_f_avg | " + " | ".join(f"{t} f_avg" for t in targets) + " | macro_f1 |",
        "|---|---|---|" + "---|" * len(targets) + "---|",
    ]
    undefined_last = lambda r: (r[2].get("macro_f_avg") is None, -(r[2].get("macro_f_avg") or 0.0))  # noqa: E731
    for name, overrides, m in sorted(rows, key=undefined_last):
        cells = [_fmt(m["targets"][t]["f_avg"]) if t in m["targets"] else "–" for t in targets]
        lines.append(
            f"| {name} | {overrides} | {_fmt(m['macro_f_avg'])} | " + " | ".join(cells) + f" | {_fmt(m['macro_f1'])} |"
        )
    return "\n".join(lines)
