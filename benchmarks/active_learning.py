"""Does active learning pay? The Label Studio loop simulated on the shipped corpus, where every label is known.

python benchmarks/active_learning.py                       # 3 seeds, 50 + 150 a round up to 650 labels
python benchmarks/active_learning.py --seeds 0 1 2 3 4 --batch 50 --max-labels 800 --out outputs/al_fine

Pool: the training documents of annotations/ (their labels hidden until "annotated"); the
test split is held out and scored; dev is not used. Each seed starts from the same number
of randomly drawn pool sentences, then adds a batch per round chosen by `random`,
`uncertainty` (margin) or `diverse` (k-center greedy on tf-idf vectors of the 5 x batch
most uncertain) from diplostance.labelstudio.export.select, the functions the `export`
command uses, and retrains the tf-idf model on the labelled sentences (vocabulary, idf and
regressions, as train.py does). To keep it to minutes on 2 cores the model is fitted with
the config's fixed C (`--C`), without the dev grid and the `none` offset; the full-pool
reference is fitted the same way, so it is not the score of a `train.py model=tfidf` run.
Writes a learning-curve PNG, a Markdown table (mean and standard deviation of test
macro_f_avg per strategy and size) and the labels each strategy needs to reach the
full-pool score minus 0.02.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from diplostance.baseline import TfidfStanceModel
from diplostance.data import load_annotations
from diplostance.labelstudio.export import STRATEGIES, Candidate, select
from diplostance.scoring import stance_scores

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.02
OUTPUT_NAMES = ("active_learning.md", "active_learning.json", "active_learning.png")  # written into --out


def tfidf_options(c: float) -> dict:
    """The shipped tf-idf config with a fixed C and no dev-selected grid or offsets."""
    config = yaml.safe_load((ROOT / "configs" / "model" / "tfidf.yaml").read_text(encoding="utf-8"))["tfidf"]
    return {**config, "C": c, "C_grid": None, "none_offset_grid": None}


def fit_and_score(texts, rows, test_texts, test_rows, labels, options) -> tuple[TfidfStanceModel, float]:
    """Fit the tf-idf model (vocabulary, idf and regressions) on the labelled sentences, as train.py does."""
    model = TfidfStanceModel.fit(texts, rows, labels, options)
    preds = model.predict_proba(test_texts).argmax(-1)
    return model, stance_scores(preds, test_rows, labels.targets, labels.polarities)["macro_f_avg"]


def pool_candidates(indices, texts, doc_ids, probs, labels) -> list[Candidate]:
    return [
        Candidate(
            text=texts[i],
            doc_id=doc_ids[i],
            sent_idx=int(i),
            input="pool",
            probs={
                t: dict(zip(labels.polarities, map(float, probs[k, j]), strict=True))
                for j, t in enumerate(labels.targets)
            },
        )
        for k, i in enumerate(indices)
    ]


def run_curve(strategy, seed, pool, test, labels, options, start, batch, max_labels) -> list[tuple[int, float]]:
    texts, rows, doc_ids = pool
    labelled = [int(i) for i in np.random.default_rng(seed).choice(len(texts), size=start, replace=False)]
    curve = []
    while True:
        model, score = fit_and_score([texts[i] for i in labelled], rows[labelled], *test, labels, options)
        curve.append((len(labelled), score))
        if len(labelled) >= max_labels:
            return curve
        chosen = set(labelled)
        unlabelled = [i for i in range(len(texts)) if i not in chosen]
        probs = model.predict_proba([texts[i] for i in unlabelled])
        candidates = pool_candidates(unlabelled, texts, doc_ids, probs, labels)
        n = min(batch, max_labels - len(labelled))
        picked = select(candidates, labels, n, strategy, seed=seed * 1000 + len(labelled))
        labelled += [c.sent_idx for c in picked]


def labels_needed(curve: list[tuple[int, float]], goal: float) -> int | None:
    return next((n for n, score in curve if score >= goal), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--start", type=int, default=50, help="randomly drawn labelled sentences to start from")
    parser.add_argument("--batch", type=int, default=150, help="sentences added per round")
    parser.add_argument("--max-labels", type=int, default=650)
    parser.add_argument("--C", type=float, default=4.0, help="fixed regularisation (the config's no-dev C)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "active_learning")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    args = parser.parse_args()
    from diplostance.errors import reported_as_user_errors
    from diplostance.output_guard import check_output_files
    from diplostance.outputs import OutputPathError

    outputs = {f"--out ({name})": args.out / name for name in OUTPUT_NAMES}
    with reported_as_user_errors():  # before minutes of work: never over the corpus, an earlier run only on request
        check_output_files(outputs, [ROOT / "annotations", ROOT / "seeds"], args.overwrite)
        for out in outputs.values():
            if any(p.resolve() in out.resolve().parents for p in (ROOT / "annotations", ROOT / "seeds")):
                raise OutputPathError(f"--out {args.out} lies inside the corpus: choose another --out")

    data = load_annotations(ROOT / "annotations")
    labels, train, test_split = data.labels, data.split("train"), data.split("test")
    pool = (list(train["text"]), np.asarray(train["labels"]), list(train["doc_id"]))
    test = (list(test_split["text"]), np.asarray(test_split["labels"]))
    options = tfidf_options(args.C)
    started = time.perf_counter()
    _, full = fit_and_score(pool[0], pool[1], *test, labels, options)
    goal = full - TOLERANCE
    curves: dict[str, list] = {s: [] for s in args.strategies}
    for strategy in args.strategies:
        for seed in args.seeds:
            curve = run_curve(strategy, seed, pool, test, labels, options, args.start, args.batch, args.max_labels)
            curves[strategy].append(curve)
            print(f"{strategy} seed {seed}: {curve[-1][1]:.4f} at {curve[-1][0]} labels", flush=True)
    elapsed = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [n for n, _ in curves[args.strategies[0]][0]]
    lines = [
        f"Pool: {len(pool[0])} training sentences; test: {len(test[0])} sentences; tf-idf, C={args.C}; "
        f"seeds {args.seeds}; {elapsed:.0f} s.",
        f"Full pool (all {len(pool[0])} labels): macro_f_avg {full:.4f}; goal (minus {TOLERANCE}) {goal:.4f}.",
        "",
        "| labels | " + " | ".join(args.strategies) + " |",
        "|---|" + "---|" * len(args.strategies),
    ]
    for k, n in enumerate(sizes):
        cells = []
        for s in args.strategies:
            scores = np.array([curve[k][1] for curve in curves[s]])
            cells.append(f"{scores.mean():.4f} ± {scores.std():.4f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "| strategy | labels to reach the goal, per seed | mean curve reaches it at |", "|---|---|---|"]
    for s in args.strategies:
        per_seed = [labels_needed(curve, goal) for curve in curves[s]]
        mean_curve = [(n, float(np.mean([curve[k][1] for curve in curves[s]]))) for k, n in enumerate(sizes)]
        at = labels_needed(mean_curve, goal)
        shown = ", ".join(str(n) if n else f"> {args.max_labels}" for n in per_seed)
        lines.append(f"| {s} | {shown} | {at or f'> {args.max_labels}'} |")
    table = "\n".join(lines) + "\n"
    from diplostance.outputs import atomic_path, atomic_write_text

    atomic_write_text(args.out / "active_learning.md", table)  # each appears under its name only when complete
    atomic_write_text(
        args.out / "active_learning.json",
        json.dumps({"full_pool": full, "goal": goal, "seeds": args.seeds, "curves": curves}, indent=1) + "\n",
    )
    with atomic_path(args.out / "active_learning.png") as temporary:
        plot(curves, full, goal, temporary)
    print(table)
    print(f"wrote {args.out / 'active_learning.md'}, .json and .png")


def plot(curves: dict, full: float, goal: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for strategy, runs in curves.items():
        sizes = [n for n, _ in runs[0]]
        scores = np.array([[s for _, s in run] for run in runs])
        mean, std = scores.mean(0), scores.std(0)
        axis.plot(sizes, mean, marker="o", markersize=3, label=strategy)
        axis.fill_between(sizes, mean - std, mean + std, alpha=0.15)
    axis.axhline(full, color="black", linewidth=1, label="full pool")
    axis.axhline(goal, color="gray", linestyle="--", linewidth=1, label="full pool - 0.02")
    axis.set_ylim(top=max(axis.get_ylim()[1], full + 0.02))  # keep the full-pool line in view
    axis.set_xlabel("labelled sentences")
    axis.set_ylabel("test macro_f_avg (tf-idf)")
    axis.set_title("Active learning on the training pool (mean ± sd over seeds)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
