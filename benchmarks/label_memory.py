"""Labelling memory does not grow with the input: peak RSS for 50k sentences against 5k.

    python benchmarks/label_memory.py                       # 5,000 and 50,000 sentences
    python benchmarks/label_memory.py --model RUN/model --sizes 5000,50000 --format parquet

Each size runs in a fresh subprocess (so the peaks are independent) that labels a JSONL
input of whole articles built from corpus sentences, through the same `label()` call the
command makes, and reports its peak resident set size (VmHWM). A
"0 (model loaded)" row shows what the process holds before labelling anything. The model
is a small trained transformer (--model, or one trained here): the question is whether
memory follows the input, not how large BERT is.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_articles(path: Path, n_sentences: int, seed: int = 0) -> int:
    """A JSONL file of articles (5-15 corpus sentences each) holding exactly n_sentences sentences."""
    from diplostance.text import split_sentences

    texts = []
    for source in sorted((ROOT / "annotations" / "corpus").glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [t for t in dict.fromkeys(texts) if len(split_sentences(t)) == 1]
    rng = random.Random(seed)
    written = articles = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < n_sentences:
            k = min(rng.randint(5, 15), n_sentences - written)
            record = {"id": f"doc{articles:06d}", "text": " ".join(rng.choices(texts, k=k))}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            written, articles = written + k, articles + 1
    return articles


def child(args: argparse.Namespace) -> None:
    """Label one input and print what it took, as JSON."""
    from diplostance.labelling import LabelOptions, label, load_labelling_predictor
    from diplostance.predictors import check_model_folder

    started = time.perf_counter()
    cfg = {"model_dir": str(args.model), "inputs": [str(args.input)], "output": {"path": str(args.output)}}
    cfg |= {"overwrite": True, "progress_bar": False, "window_sentences": args.window, "num_threads": args.threads}
    cfg["output"]["format"] = args.format
    if args.input.stat().st_size == 0:  # the baseline: load the model, label nothing
        options = LabelOptions.from_config(cfg)
        load_labelling_predictor(options, check_model_folder(options.model_dir)[0]).predict_proba(["نص قصير."])
        sentences = 0
    else:
        sentences = label(cfg).counts.sentences
    print(
        json.dumps(
            {"sentences": sentences, "peak_mib": peak_rss_kib() / 1024, "seconds": time.perf_counter() - started}
        )
    )


def peak_rss_kib() -> int:
    """This process's peak RSS. Linux's VmHWM belongs to the process's own memory map; ru_maxrss
    can report the parent's peak instead, because exec after vfork records the parent's map."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def train_tiny(run_dir: Path) -> Path:
    if (run_dir / "model" / "config.json").is_file():
        return run_dir / "model"
    from hydra import compose, initialize_config_dir

    from diplostance.training import train

    overrides = [f"data.directory={ROOT / 'annotations'}", "experiment=tiny_fast", "training.progress_bar=false"]
    overrides += ["training.epochs=3", "compare_baseline=false", "bootstrap_resamples=0"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        train(compose(config_name="train", overrides=overrides), run_dir)
    return run_dir / "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,50000", help="sentence counts; the ratio is last / first")
    parser.add_argument("--model", type=Path, help="model folder (default: a tiny model trained here)")
    parser.add_argument("--format", default="jsonl", choices=["jsonl", "csv", "parquet"])
    parser.add_argument("--window", type=int, default=512, help="window_sentences")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from diplostance.errors import reported_as_user_errors
    from diplostance.output_guard import work_folder

    with reported_as_user_errors():  # never a folder of the user's own files, never an input
        workdir = work_folder(args.workdir, "label-memory-", [ROOT / "annotations", ROOT / "seeds", args.model])
    model = args.model or train_tiny(workdir / "trained")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in [0, *sizes]:
        source = workdir / f"in-{size}.jsonl"
        if size:
            articles = write_articles(source, size)
        else:
            source.write_text("")
            articles = 0
        command = [sys.executable, __file__, "--child", "--model", str(model), "--input", str(source)]
        command += ["--output", str(workdir / f"out-{size}.jsonl"), "--format", args.format]
        command += ["--window", str(args.window)] + (["--threads", str(args.threads)] if args.threads else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((size, articles, result))

    print(f"# Labelling memory ({args.format} output, window_sentences={args.window}, model {model})\n")
    print("| sentences | articles | seconds | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|")
    for size, articles, result in rows:
        name = f"{result['sentences']}" if size else "0 (model loaded)"
        print(f"| {name} | {articles} | {result['seconds']:.1f} | {result['peak_mib']:.1f} |")
    first, last = rows[1][2]["peak_mib"], rows[-1][2]["peak_mib"]
    ratio = last / first
    verdict = "met" if ratio <= 1.2 else "MISSED"
    print(f"\npeak RSS {rows[-1][0]} / {rows[1][0]} sentences: {ratio:.3f} (target at most 1.2: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
