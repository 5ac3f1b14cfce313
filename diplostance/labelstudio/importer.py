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

from diplostance.annotations import SPLITS, Problem, annotation_files, read_jsonl, read_registers, read_splits
from diplostance.errors import BadDataError, UserError
from diplostance.output_guard import check_output_files, same_file
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
    tasks = _without_repeats(tasks, result)
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
    _one_record_per_sentence(result)
    result.records.sort(key=lambda r: (r["doc_id"], r["sent_idx"]))
    return result


def _without_repeats(tasks: list, result: ImportResult) -> list:
    """The tasks with an exact repeat of an earlier task (same id, same content) left out, and said so."""
    kept, seen = [], {}
    for task in tasks:
        task_id = task.get("id") if isinstance(task, dict) else None
        key = json.dumps(task, sort_keys=True, ensure_ascii=False, default=str)
        if task_id is not None and seen.get(task_id) == key:
            result.problems.append(f"task {task_id}: appears more than once in the export; imported once")
            continue
        seen.setdefault(task_id, key)
        kept.append(task)
    return kept


def _to_review(result: ImportResult, record: dict, reason: str) -> None:
    """Move an imported record to the review file with the reason (and say so by task id)."""
    task_id = record["provenance"].get("labelstudio_task")
    result.problems.append(f"task {task_id}: {reason}")
    result.review.append(
        {
            "task_id": task_id,
            "doc_id": record["doc_id"],
            "sent_idx": record["sent_idx"],
            "text": record["text"],
            "reasons": [reason],
            "stances": record["stances"],
            "provenance": record["provenance"],
        }
    )


def _one_record_per_sentence(result: ImportResult) -> None:
    """Tasks giving the same sentence (doc_id and sent_idx): one record when they agree, review when not."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in result.records:
        groups[record["id"]].append(record)
    kept = []
    for record_id, group in groups.items():
        first, task_ids = group[0], [r["provenance"].get("labelstudio_task") for r in group]
        if len(group) == 1:
            kept.append(first)
        elif all(r["text"] == first["text"] and r["stances"] == first["stances"] for r in group):
            kept.append(first)
            for task_id in task_ids[1:]:
                result.problems.append(
                    f"task {task_id}: the same sentence ({record_id}) and labels as task {task_ids[0]}; imported once"
                )
        else:
            for record in group:
                _to_review(
                    result,
                    record,
                    f"the export gives sentence {record_id} (doc_id, sent_idx) in tasks {task_ids} "
                    "with different texts or labels",
                )
    result.records = kept


def corpus_index(annotations: Path, leave_out: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    """record id -> file, and doc_id -> (source, file) of the documents that are not `annotated`."""
    ids, documents, problems = {}, {}, []
    for path in annotation_files(annotations):
        if any(same_file(path, other) for other in leave_out):
            continue
        for record in read_jsonl(path, problems):  # unreadable lines are the validator's to report
            data = record.data
            if isinstance(data.get("id"), str):
                ids.setdefault(data["id"], path)
            if isinstance(data.get("doc_id"), str) and data.get("source") != SOURCE:
                documents.setdefault(data["doc_id"], (data.get("source"), path))
    return ids, documents


def check_against_corpus(result: ImportResult, annotations: Path, leave_out: tuple[Path, ...] = ()) -> None:
    """Records the corpus already has (an export imported twice) or whose document is a composed or
    seed document of the corpus go to review instead of into the output."""
    ids, documents = corpus_index(annotations, leave_out)
    kept = []
    for record in result.records:
        if record["doc_id"] in documents:
            source, path = documents[record["doc_id"]]
            _to_review(
                result,
                record,
                f"doc_id {record['doc_id']!r} is already a {source} document of the corpus ({path}): "
                "give the article its own doc_id",
            )
        elif record["id"] in ids:
            _to_review(result, record, f"already imported: {record['id']} is in {ids[record['id']]}")
        else:
            kept.append(record)
    result.records = kept


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
    rows = [t for t in tasks if isinstance(t, dict)]
    if tasks and not any(isinstance(t.get("data"), dict) for t in rows):
        if rows and all(not {"data", "annotations"} & set(t) for t in rows):
            raise BadDataError(
                f"{path}: a JSON-MIN export (flat rows without 'data' and 'annotations': one annotation per task, "
                "no annotators): export the project as JSON instead"
            )
        raise BadDataError(f"{path}: not a Label Studio JSON export: no element is a task with 'data'")
    return tasks


def plan_split(splits_path: str | Path, doc_ids: list[str], split: str) -> tuple[str | None, list[str]]:
    """splits.yaml's new text with the documents not yet in it added to `split` (None when none is new),
    and the added ids; nothing is written. Documents already there keep their place; comments and order stay.

    A block list gets the new items after its last one; a flow list (`train: [a, b]`, on one line or
    several) is rewritten as a block list holding the old items then the new ones.
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
        return None, []
    original = path.read_text(encoding="utf-8")
    items = [_list_item(d) for d in new]
    root = yaml.compose(original)
    value = next((v for k, v in root.value if k.value == split), None) if root is not None else None
    if isinstance(value, yaml.SequenceNode) and value.flow_style:
        key = next(k for k, v in root.value if v is value)
        block = "\n".join([f"{split}:", *(_list_item(str(item.value)) for item in value.value), *items])
        text = original[: key.start_mark.index] + block + original[value.end_mark.index :]
        text = text if text.endswith("\n") else text + "\n"
    else:
        lines = original.splitlines()
        key = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip() == f"{split}:"), None)
        if key is None:
            lines += [f"{split}:", *items]  # a split named nowhere
        else:
            end = key + 1
            while end < len(lines) and (lines[end].startswith("- ") or not lines[end].strip()):
                end += 1
            while end > key + 1 and not lines[end - 1].strip():  # keep blank lines after the list
                end -= 1
            lines[end:end] = items
        text = "\n".join(lines) + "\n"
    # The edited text must list exactly the old documents where they were, plus the new ones in `split`.
    expected = {**{d: s for d, (s, _) in current.items()}, **dict.fromkeys(new, split)}
    try:
        keys = [node.value for node, _ in yaml.compose(text).value]  # a repeated key would hide its first list
        after = {str(d): s for s, docs in (yaml.safe_load(text) or {}).items() for d in docs or []}
    except (yaml.YAMLError, AttributeError, TypeError):
        keys, after = [], None
    if after != expected or len(keys) != len(set(keys)):
        raise UserError(f"{path}: could not add documents to '{split}' safely; add them by hand: {new}")
    return text, new


def _list_item(doc_id: str) -> str:
    return f"- {yaml.safe_dump(doc_id, default_style=None).splitlines()[0]}"


def assign_split(splits_path: str | Path, doc_ids: list[str], split: str) -> list[str]:
    """Add the documents not yet in splits.yaml to `split` (see `plan_split`); the file is replaced
    atomically. Returns the added ids."""
    text, new = plan_split(splits_path, doc_ids, split)
    if text is not None:
        atomic_write_text(splits_path, text)
    return new


def check_register(register: str | None, schema_path: Path) -> None:
    if register is None:
        return
    registers = read_registers(schema_path)
    if register not in registers:
        raise UserError(f"--register {register!r} is not one of the registers of {schema_path}: {list(registers)}")


def import_export(
    export_path: str | Path,
    out: str | Path,
    labels: LabelSpace,
    review_path: str | Path | None = None,
    register: str | None = None,
    annotations: str | Path | None = None,
    split: str | None = None,
    overwrite: bool = False,
) -> tuple[ImportResult, Path, list[str]]:
    """Import a Label Studio JSON export; returns the result, the review file and the documents added to `split`.

    Everything is checked before anything is written: the outputs (never the export or a file of the
    annotation folder's schema or splits, never an existing file unless `overwrite`), the register, the
    export, and the edit of splits.yaml. With `annotations`, a record the corpus already has, or whose
    doc_id is a composed or seed document of the corpus, goes to review. The records (JSON Lines), the
    review file and splits.yaml are each written whole or not at all.
    """
    out = Path(out)
    review_path = Path(review_path) if review_path else out.with_name(out.stem + ".review.jsonl")
    folder = Path(annotations) if annotations else None
    schema, splits = (folder / "schema.yaml", folder / "splits.yaml") if folder else (None, None)
    check_output_files({"--out": out, "--review": review_path}, [export_path, schema, splits], overwrite)
    if register is not None:
        if schema is None:
            raise UserError("--register needs the annotation folder whose schema.yaml lists the registers")
        check_register(register, schema)
    if split and folder is None:
        raise UserError("--split needs the annotation folder whose splits.yaml to edit")
    result = convert_tasks(read_export(export_path), labels, register)
    if folder is not None and folder.is_dir():
        check_against_corpus(result, folder, leave_out=(out, review_path))
    splits_text, added = (None, [])
    if split:
        splits_text, added = plan_split(splits, [r["doc_id"] for r in result.records], split)
    atomic_write_text(review_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.review))
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records))
    if splits_text is not None:
        atomic_write_text(splits, splits_text)
    return result, review_path, added
