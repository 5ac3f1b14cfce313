"""Label Studio tasks from model output: which sentences to send to annotators, with the model's stances.

Input: a labelling output of `label.py` (one record per sentence with `stances` and `probs`)
or a `predictions.jsonl` of `evaluate.py` (per target `{stance, gold, probs}`). Every task
carries the sentence, the sentences before and after it in its article, its provenance
and the model's stances as a pre-annotation (`predictions`).

Selection (`select`): `uncertainty` (smallest margin between a target's two likeliest
polarities, or largest entropy summed over targets), `diverse` (k-center greedy on tf-idf
vectors of the most uncertain candidates, so near-duplicates of one article do not fill a
batch) and `random` (seeded). Each takes an optional per-article cap; a sentence whose
text is already annotated, or already chosen, is never sent.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diplostance.annotations import annotation_files, read_jsonl
from diplostance.errors import BadDataError, UserError
from diplostance.labelstudio.config import SENTENCE
from diplostance.outputs import atomic_write_text
from diplostance.schema import LabelSpace

STRATEGIES = ("uncertainty", "diverse", "random")
UNCERTAINTY_MEASURES = ("margin", "entropy")
DIVERSE_POOL_FACTOR = 5  # `diverse` spreads out over the n * factor most uncertain candidates


@dataclass
class Candidate:
    """One sentence the model labelled, and where it comes from."""

    text: str
    doc_id: str
    sent_idx: int
    input: str  # the labelled file (label.py's `source`) or the predictions file
    probs: dict[str, dict[str, float]]  # target -> polarity -> probability
    start: int | None = None
    end: int | None = None
    record_id: str | None = None  # evaluate.py's sentence id
    context_before: str = ""
    context_after: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def article(self) -> tuple[str, str]:
        return self.input, self.doc_id


def text_key(text: str) -> str:
    """Texts are compared with runs of whitespace collapsed, as the validator does."""
    return " ".join(text.split())


def _record_probs(record: dict, where: str) -> dict[str, dict[str, float]]:
    if isinstance(record.get("probs"), dict):  # label.py
        probs = record["probs"]
    elif isinstance(record.get("stances"), dict) and all(
        isinstance(v, dict) and "probs" in v for v in record["stances"].values()
    ):  # evaluate.py
        probs = {target: value["probs"] for target, value in record["stances"].items()}
    else:
        raise BadDataError(
            f"{where}: no probabilities: expected label.py's 'probs' or evaluate.py's stances.<target>.probs"
        )
    if not probs or not all(isinstance(p, dict) and p for p in probs.values()):
        raise BadDataError(f"{where}: 'probs' must map each target to its polarities' probabilities")
    return {target: {pol: float(p) for pol, p in by_pol.items()} for target, by_pol in probs.items()}


def read_candidates(path: str | Path, context: int = 1) -> list[Candidate]:
    """Every sentence of a labelling output or predictions file, with `context` sentences each side."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (give label.py's OUT.jsonl or evaluate.py's predictions.jsonl)")
    if path.suffix != ".jsonl":
        raise UserError(f"{path}: expected a JSON Lines file (label.py output.format=jsonl, or predictions.jsonl)")
    problems: list = []
    records = read_jsonl(path, problems)
    if problems:
        raise BadDataError(f"{problems[0]} ({len(problems)} unreadable line(s))")
    candidates, position = [], Counter()
    for record in records:
        data, where = record.data, f"{path}:{record.line}"
        missing = [k for k in ("doc_id", "text") if not isinstance(data.get(k), str)]
        if missing:
            raise BadDataError(f"{where}: missing {missing}: not a labelling output or predictions file")
        # label.py's `source` is the labelled file; evaluate.py's is the corpus source, its input is this file.
        is_labelling = "probs" in data
        source = str(data.get("source", path)) if is_labelling else str(path)
        key = (source, data["doc_id"])
        sent_idx = data.get("sent_idx")
        candidates.append(
            Candidate(
                text=data["text"],
                doc_id=data["doc_id"],
                sent_idx=sent_idx if isinstance(sent_idx, int) else position[key],
                input=source,
                probs=_record_probs(data, where),
                start=data.get("start"),
                end=data.get("end"),
                record_id=None if is_labelling else data.get("id"),
            )
        )
        position[key] += 1
    _add_context(candidates, context)
    return candidates


def _add_context(candidates: list[Candidate], context: int) -> None:
    by_article: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_article[candidate.article].append(candidate)
    for sentences in by_article.values():
        sentences.sort(key=lambda c: c.sent_idx)
        for i, candidate in enumerate(sentences):
            if context > 0:
                candidate.context_before = " ".join(c.text for c in sentences[max(0, i - context) : i])
                candidate.context_after = " ".join(c.text for c in sentences[i + 1 : i + 1 + context])


def annotated_texts(directory: str | Path | None) -> set[str]:
    """The (whitespace-collapsed) texts of every annotation file in `directory`: never sent again."""
    if not directory:
        return set()
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such annotation folder (--annotations)")
    texts, problems = set(), []
    for path in annotation_files(directory):
        records = read_jsonl(path, problems)  # the validator reports unreadable lines
        texts.update(text_key(r.data["text"]) for r in records if isinstance(r.data.get("text"), str))
    return texts


def prob_array(candidates: Sequence[Candidate], labels: LabelSpace) -> np.ndarray:
    """(n, targets, polarities) probabilities; a target the input lacks is uniform."""
    n_pol = len(labels.polarities)
    out = np.full((len(candidates), len(labels.targets), n_pol), 1.0 / n_pol)
    for i, candidate in enumerate(candidates):
        for t, target in enumerate(labels.targets):
            if target in candidate.probs:
                out[i, t] = [candidate.probs[target].get(p, 0.0) for p in labels.polarities]
    return out


def uncertainty(probs: np.ndarray, measure: str = "margin") -> np.ndarray:
    """Higher is less sure. margin: 1 - the smallest (over targets) gap between the two likeliest
    polarities; entropy: the sum over targets of each target's entropy. probs: (n, targets, polarities)."""
    if measure == "margin":
        top = np.sort(probs, axis=-1)
        return 1.0 - (top[..., -1] - top[..., -2]).min(axis=-1)
    if measure == "entropy":
        p = np.clip(probs, 1e-12, 1.0)
        return -(p * np.log(p)).sum(axis=-1).sum(axis=-1)
    raise UserError(f"--uncertainty must be one of {list(UNCERTAINTY_MEASURES)}, got {measure!r}")


def _capped(order: Iterable[int], articles: Sequence, n: int, per_article: int | None) -> list[int]:
    chosen, taken = [], Counter()
    for i in order:
        if per_article and taken[articles[i]] >= per_article:
            continue
        chosen.append(i)
        taken[articles[i]] += 1
        if len(chosen) == n:
            break
    return chosen


def tfidf_vectors(texts: Sequence[str]):
    """L2-normalised character n-gram tf-idf rows (sparse): cosine similarity is a dot product."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(texts)


def k_center_greedy(vectors, scores: np.ndarray, n: int, articles: Sequence, per_article: int | None) -> list[int]:
    """Start from the highest score, then add the row farthest (cosine) from everything chosen so far;
    ties go to the higher score. Rows of an article at its cap are passed over."""
    m = vectors.shape[0]
    if m == 0 or n <= 0:
        return []
    first = int(np.argmax(scores))
    chosen, taken = [first], Counter([articles[first]])
    distance = 1.0 - np.asarray((vectors @ vectors[first].T).todense()).ravel()
    available = np.ones(m, dtype=bool)
    available[first] = False
    while len(chosen) < n:
        if per_article:
            for i in np.flatnonzero(available):
                if taken[articles[i]] >= per_article:
                    available[i] = False
        if not available.any():
            break
        candidates = np.flatnonzero(available)
        best = candidates[np.lexsort((-scores[candidates], -distance[candidates]))[0]]
        chosen.append(int(best))
        taken[articles[best]] += 1
        available[best] = False
        distance = np.minimum(distance, 1.0 - np.asarray((vectors @ vectors[best].T).todense()).ravel())
    return chosen


def select(
    candidates: Sequence[Candidate],
    labels: LabelSpace,
    n: int,
    strategy: str,
    measure: str = "margin",
    per_article: int | None = None,
    seed: int = 0,
    exclude: set[str] = frozenset(),
) -> list[Candidate]:
    """Up to `n` candidates by `strategy`; texts in `exclude` (and repeats of a text) are never chosen."""
    if strategy not in STRATEGIES:
        raise UserError(f"--select must be one of {list(STRATEGIES)}, got {strategy!r}")
    seen, eligible = set(exclude), []
    for candidate in candidates:
        key = text_key(candidate.text)
        if key and key not in seen:
            seen.add(key)
            eligible.append(candidate)
    if not eligible or n <= 0:
        return []
    articles = [c.article for c in eligible]
    scores = uncertainty(prob_array(eligible, labels), measure)
    for candidate, score in zip(eligible, scores, strict=True):
        candidate.extra = {"selection": strategy, "uncertainty": round(float(score), 4)}
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(eligible))
        chosen = _capped(order, articles, n, per_article)
    else:
        by_uncertainty = np.argsort(-scores, kind="stable")
        if strategy == "uncertainty":
            chosen = _capped(by_uncertainty, articles, n, per_article)
        else:
            pool = by_uncertainty[: max(n * DIVERSE_POOL_FACTOR, n)]
            vectors = tfidf_vectors([eligible[i].text for i in pool])
            picked = k_center_greedy(vectors, scores[pool], n, [articles[i] for i in pool], per_article)
            chosen = [int(pool[i]) for i in picked]
    return [eligible[i] for i in chosen]


def task(candidate: Candidate, labels: LabelSpace, model_version: str) -> dict:
    """One Label Studio task: data for the config's fields and provenance, the model's stances as a prediction."""
    result, confidence = [], []
    for target in labels.targets:
        probs = candidate.probs.get(target)
        if not probs:
            continue
        stance = max(probs, key=probs.get)
        confidence.append(probs[stance])
        result.append(
            {
                "id": target,
                "from_name": target,
                "to_name": SENTENCE,
                "type": "choices",
                "value": {"choices": [stance]},
                "score": round(probs[stance], 4),
            }
        )
    data = {
        "text": candidate.text,
        "context_before": candidate.context_before,
        "context_after": candidate.context_after,
        "doc_id": candidate.doc_id,
        "sent_idx": candidate.sent_idx,
        "input": candidate.input,
        "start": candidate.start,
        "end": candidate.end,
        **({"record_id": candidate.record_id} if candidate.record_id else {}),
        "model_version": model_version,
        **candidate.extra,
    }
    score = round(float(np.mean(confidence)), 4) if confidence else 0.0
    return {"data": data, "predictions": [{"model_version": model_version, "score": score, "result": result}]}


def check_targets(candidates: Sequence[Candidate], labels: LabelSpace, path: Path) -> None:
    """The input's targets and polarities must be the schema's: the tasks' choices must exist in the config."""
    for candidate in candidates[:1]:
        unknown = sorted(set(candidate.probs) - set(labels.targets))
        if unknown:
            raise BadDataError(f"{path}: targets {unknown} are not in the schema {list(labels.targets)}")
        for target, probs in candidate.probs.items():
            extra = sorted(set(probs) - set(labels.polarities))
            if extra:
                raise BadDataError(f"{path}: {target}: polarities {extra} are not in the schema")


def export_tasks(
    input_path: str | Path,
    out: str | Path,
    labels: LabelSpace,
    n: int,
    strategy: str,
    measure: str = "margin",
    per_article: int | None = None,
    seed: int = 0,
    annotations: str | Path | None = None,
    model_version: str | None = None,
    context: int = 1,
) -> dict:
    """Select and write the tasks (a JSON list, written whole or not at all); returns counts for the report."""
    input_path = Path(input_path)
    candidates = read_candidates(input_path, context)
    check_targets(candidates, labels, input_path)
    exclude = annotated_texts(annotations)
    chosen = select(candidates, labels, n, strategy, measure, per_article, seed, exclude)
    version = model_version or f"diplostance:{input_path.stem}"
    tasks = [task(c, labels, version) for c in chosen]
    atomic_write_text(out, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    already = sum(text_key(c.text) in exclude for c in candidates)
    return {
        "sentences": len(candidates),
        "already_annotated": already,
        "tasks": len(tasks),
        "articles": len({c.article for c in chosen}),
        "most_per_article": max(Counter(c.article for c in chosen).values(), default=0),
    }
