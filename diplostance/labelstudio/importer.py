"""A Label Studio JSON export back into annotation records (`source: annotated`).

Per task, the completed annotations vote per target; a target's label is kept when more
than half of them agree. Nothing is guessed and nothing is dropped silently: a task with
a tie or a disagreement, a skipped (cancelled) or unannotated task, an annotation that
leaves a target out or picks a value the schema does not know, and a task that our
export did not make, all go to the review file with the reason, and are counted in the
report by task id. Agreement per target (observed pairwise agreement and Krippendorff's
alpha, nominal) is computed over the tasks with two or more annotations.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import yaml

from diplostance.annotations import SPLITS, Problem, read_splits
from diplostance.errors import BadDataError, UserError
from diplostance.outputs import atomic_write_text
from diplostance.schema import LabelSpace
from diplostance.text import sentence_problem

SOURCE = "annotated"


@dataclass
class ImportResult:
    records: list[dict] = field(default_factory=list)
    review: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "task N: ..." lines
    agreement: dict = field(default_factory=dict)  # target -> {tasks, observed, alpha}


def annotator_id(annotation: dict) -> str:
    """`completed_by` is a user id in the JSON export, or a user object in some exports."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"labelstudio:{who}"


def annotation_choices(annotation: dict) -> dict[str, list]:
    """target (the control's `from_name`) -> the chosen values."""
    chosen: dict[str, list] = {}
    for item in annotation.get("result") or []:
        if item.get("type") == "choices" and isinstance(item.get("value"), dict):
            chosen.setdefault(item.get("from_name"), []).extend(item["value"].get("choices") or [])
    return chosen


def krippendorff_alpha(units: list[list[str]]) -> float | None:
    """Nominal Krippendorff's alpha over units with two or more values; None when undefined."""
    pairs, totals = Counter(), Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for a, b in combinations(values, 2):  # each ordered pair counts 1/(m-1)
            pairs[a, b] += 1 / (m - 1)
            pairs[b, a] += 1 / (m - 1)
        for value in values:
            totals[value] += 1
    n = sum(totals.values())
    if n < 2:
        return None
    observed = sum(w for (a, b), w in pairs.items() if a != b) / n
    expected = sum(totals[a] * totals[b] for a in totals for b in totals if a != b) / (n * (n - 1))
    return None if expected == 0 else 1.0 - observed / expected


def agreement_table(votes_by_target: dict[str, list[list[str]]]) -> dict:
    out = {}
    for target, units in votes_by_target.items():
        multi = [u for u in units if len(u) >= 2]
        pair_agree = [a == b for u in multi for a, b in combinations(u, 2)]
        alpha = krippendorff_alpha(multi)
        out[target] = {
            "tasks": len(multi),
            "observed": round(sum(pair_agree) / len(pair_agree), 4) if pair_agree else None,
            "alpha": None if alpha is None else round(alpha, 4),
        }
    return out


def _task_provenance(task: dict) -> dict:
    data = task.get("data") or {}
    keys = ("input", "start", "end", "record_id", "model_version", "selection", "uncertainty")
    provenance = {key: data[key] for key in keys if data.get(key) is not None}
    return provenance | {"labelstudio_task": task.get("id"), "labelstudio_project": task.get("project")}


def convert_tasks(tasks: list, labels: LabelSpace, register: str | None = None) -> ImportResult:
    result = ImportResult()
    votes_by_target: dict[str, list[list[str]]] = defaultdict(list)
    for task in tasks:
        task_id = task.get("id") if isinstance(task, dict) else None
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            result.problems.append(f"task {task_id}: not a Label Studio task (no 'data')")
            result.review.append({"task_id": task_id, "reasons": ["not a task"], "task": task})
            continue
        reasons: list[str] = []
        doc_id, sent_idx, text = data.get("doc_id"), data.get("sent_idx"), data.get("text")
        if not isinstance(doc_id, str) or not isinstance(sent_idx, int) or not isinstance(text, str):
            reasons.append("not a diplostance task (its data lacks doc_id, sent_idx or text)")
        elif not text.strip() or sentence_problem(text):
            reasons.append(f"unusable text: {sentence_problem(text) or 'empty'}")
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        completed = [a for a in annotations if not a.get("was_cancelled")]
        for cancelled in (a for a in annotations if a.get("was_cancelled")):
            result.problems.append(f"task {task_id}: skipped (cancelled) by {annotator_id(cancelled)}")
        if not completed:
            reasons.append("skipped by every annotator" if annotations else "no annotation")
        votes: dict[str, dict[str, str]] = {}  # target -> annotator -> polarity
        for annotation in completed:
            who, chosen = annotator_id(annotation), annotation_choices(annotation)
            for name in sorted(set(chosen) - set(labels.targets), key=str):
                reasons.append(f"unknown control {name!r} in {who}'s annotation")
            for target in labels.targets:
                values = chosen.get(target, [])
                if not values:
                    reasons.append(f"{who} left target {target} out")
                elif len(values) > 1 or values[0] not in labels.polarities:
                    reasons.append(f"{who} chose {values} for {target}, not one of {list(labels.polarities)}")
                else:
                    votes.setdefault(target, {})[who] = values[0]
        for target, by_annotator in votes.items():
            votes_by_target[target].append(list(by_annotator.values()))
        stances, split_votes = {}, {}
        for target in labels.targets:
            counts = Counter(votes.get(target, {}).values())
            if counts:
                label, top = counts.most_common(1)[0]
                if top * 2 > len(completed):
                    stances[target] = label
                else:
                    split_votes[target] = dict(counts)
        if split_votes:
            reasons.append("no majority for " + ", ".join(f"{t} {v}" for t, v in split_votes.items()))
        for reason in reasons:
            result.problems.append(f"task {task_id}: {reason}")
        if reasons:
            result.review.append(
                {
                    "task_id": task_id,
                    "doc_id": doc_id,
                    "sent_idx": sent_idx,
                    "text": text,
                    "reasons": reasons,
                    "votes": votes,
                    "provenance": _task_provenance(task),
                }
            )
            continue
        record = {
            "id": f"{doc_id}-{sent_idx:02d}",
            "doc_id": doc_id,
            "sent_idx": sent_idx,
            "text": text,
            "stances": stances,
            "source": SOURCE,
            "annotator": "+".join(sorted({annotator_id(a) for a in completed})),
            "annotations": [
                {
                    "annotator": annotator_id(a),
                    "created_at": a.get("created_at"),
                    "updated_at": a.get("updated_at"),
                    "lead_time": a.get("lead_time"),
                    "stances": {t: v[annotator_id(a)] for t, v in votes.items() if annotator_id(a) in v},
                }
                for a in completed
            ],
            "provenance": _task_provenance(task),
        }
        if register:
            record["register"] = register
        result.records.append(record)
    result.agreement = agreement_table(votes_by_target)
    result.records.sort(key=lambda r: (r["doc_id"], r["sent_idx"]))
    return result


def read_export(path: str | Path) -> list:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (export the project from Label Studio as JSON)")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadDataError(f"{path}: not a Label Studio JSON export: {error}") from error
    if not isinstance(tasks, list):
        raise BadDataError(f"{path}: a Label Studio JSON export is a list of tasks, got {type(tasks).__name__}")
    return tasks


def assign_split(splits_path: str | Path, doc_ids: list[str], split: str) -> list[str]:
    """Add the documents not yet in splits.yaml to `split`; documents already there keep their place.

    The file is edited as text (comments and order stay) and replaced atomically. Returns the added ids.
    """
    if split not in SPLITS:
        raise UserError(f"--split must be one of {list(SPLITS)}, got {split!r}")
    path = Path(splits_path)
    problems: list[Problem] = []
    current = read_splits(path, problems)
    if problems:
        raise BadDataError(f"{problems[0]} (fix splits.yaml before importing into it)")
    new = [d for d in dict.fromkeys(doc_ids) if d not in current]
    if not new:
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    items = [f"- {yaml.safe_dump(d, default_style=None).splitlines()[0]}" for d in new]
    heads = (f"{split}:", f"{split}: []")
    key = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip() in heads), None)
    if key is None:
        lines += [f"{split}:", *items]  # a split named nowhere, or written as a flow list: refused below
    else:
        lines[key] = f"{split}:"
        end = key + 1
        while end < len(lines) and (lines[end].startswith("- ") or not lines[end].strip()):
            end += 1
        while end > key + 1 and not lines[end - 1].strip():  # keep blank lines after the list
            end -= 1
        lines[end:end] = items
    text = "\n".join(lines) + "\n"
    # The edited text must list exactly the old documents where they were, plus the new ones in `split`.
    expected = {**{d: s for d, (s, _) in current.items()}, **dict.fromkeys(new, split)}
    keys = [node.value for node, _ in yaml.compose(text).value]  # a repeated key would hide its first list
    after = {str(d): s for s, docs in (yaml.safe_load(text) or {}).items() for d in docs or []}
    if after != expected or len(keys) != len(set(keys)):
        raise UserError(f"{path}: could not add documents to '{split}' safely; add them by hand: {new}")
    atomic_write_text(path, text)
    return new


def import_export(
    export_path: str | Path,
    out: str | Path,
    labels: LabelSpace,
    review_path: str | Path | None = None,
    register: str | None = None,
) -> tuple[ImportResult, Path]:
    """Write the records (JSON Lines) and the review file, each whole or not at all."""
    result = convert_tasks(read_export(export_path), labels, register)
    out = Path(out)
    review_path = Path(review_path) if review_path else out.with_name(out.stem + ".review.jsonl")
    atomic_write_text(review_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.review))
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records))
    return result, review_path
