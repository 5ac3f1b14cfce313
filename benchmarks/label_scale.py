"""Sentences per second of the local engine and of the Ray engine (1 and 2 actors), and Ray's overhead.

    python benchmarks/label_scale.py                          # 20,000 sentences in 40 files, tiny model
    python benchmarks/label_scale.py --model RUN/model --sentences 50000 --files 80
    python benchmarks/label_scale.py --gpus-per-actor 1 --actors 1,2,4   # on a GPU machine

Every engine labels the same JSON Lines files (whole articles of 5-15 corpus sentences) with the
same model: the tiny transformer trained here with `training=ci` for one epoch (the CI model's
architecture; the quality does not matter for speed) unless --model is given. A run's wall time
includes everything the command does: for Ray, starting the local runtime and the actors (each
loads the model). Per-actor throughput comes from the commit markers (sentences over the seconds
the actor spent predicting and writing its parts) and drives the paper estimate for an archive.
The overhead row labels one small file (the three seed articles) with each engine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from label_memory import write_articles  # noqa: E402  (benchmarks/ is not a package)


def build_model(workdir: Path) -> Path:
    run = workdir / "train"
    if not (run / "model" / "config.json").is_file():
        overrides = [
            "model=tiny",
            "training=ci",
            "training.epochs=1",
            "compare_baseline=false",
            "bootstrap_resamples=0",
        ]
        command = [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides, f"hydra.run.dir={run}"]
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    return run / "model"


def write_inputs(folder: Path, sentences: int, files: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    per_file, articles = sentences // files, 0
    for i in range(files):
        articles += write_articles(folder / f"part{i:03d}.jsonl", per_file + (i < sentences % files), seed=i)
    return articles


def run(model: Path, inputs: Path, out: Path, **options) -> tuple[float, object]:
    from diplostance.labelling import label

    shutil.rmtree(out.parent, ignore_errors=True)
    cfg = {"model_dir": str(model), "inputs": [str(inputs)], "output": str(out), "progress_bar": False, **options}
    started = time.perf_counter()
    summary = label(cfg)
    return time.perf_counter() - started, summary


def actor_rates(folder: Path) -> list[float]:
    """Sentences per second of each actor while it predicted and wrote its parts."""
    busy, done = defaultdict(float), defaultdict(int)
    for marker in (folder / "committed").glob("*.json"):
        meta = json.loads(marker.read_text())
        busy[meta["actor"]] += meta["seconds"]
        done[meta["actor"]] += meta["sentences"]
    return [done[a] / busy[a] for a in busy if busy[a] > 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a saved model folder (default: train a tiny one here)")
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=40, help="input files (Ray parallelises over files/parts)")
    parser.add_argument("--actors", default="1,2", help="Ray actor counts to time")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray runtime")
    parser.add_argument("--gpus-per-actor", type=float, default=0.0)
    parser.add_argument("--archive-articles", type=int, default=1_000_000, help="for the paper estimate")
    parser.add_argument("--workdir", type=Path, help="keep the model and inputs here (reused by later runs)")
    args = parser.parse_args(argv)

    from diplostance.errors import reported_as_user_errors
    from diplostance.output_guard import work_folder

    with reported_as_user_errors():  # it clears its output folders: never in a folder of the user's own files
        workdir = work_folder(args.workdir, "label_scale-", [ROOT / "annotations", ROOT / "seeds", args.model])
    model = args.model or build_model(workdir)
    inputs = workdir / f"inputs_{args.sentences}_{args.files}"
    if not inputs.is_dir():
        write_inputs(inputs, args.sentences, args.files)
    rows = []
    seconds, summary = run(model, inputs, workdir / "local" / "OUT.jsonl", engine="local")
    n, per_article = summary.counts.sentences, summary.counts.sentences / summary.counts.articles
    rows.append(("local (1 process, all cores)", seconds, n / seconds, ""))
    rates: dict[int, list[float]] = {}
    for actors in [int(a) for a in args.actors.split(",")]:
        ray = {"concurrency": actors, "num_cpus": args.cpus, "num_gpus_per_actor": args.gpus_per_actor,
               "num_cpus_per_actor": max(1, args.cpus // actors) if not args.gpus_per_actor else 1}  # fmt: skip
        out = workdir / f"ray{actors}" / "OUT.parquet"
        seconds, summary = run(model, inputs, out, engine="ray", ray=ray)
        assert summary.counts.sentences == n, (summary.counts, n)
        rates[actors] = actor_rates(out.parent / "OUT")
        each = ", ".join(f"{r:.0f}" for r in rates[actors])
        cpus = "" if args.gpus_per_actor else f" x {ray['num_cpus_per_actor']} CPU"
        rows.append((f"ray, {actors} actor(s){cpus}", seconds, n / seconds, each))

    seeds = ROOT / "seeds"
    small_local, _ = run(model, seeds, workdir / "small_local" / "OUT.jsonl", engine="local")
    small_ray, small = run(model, seeds, workdir / "small_ray" / "OUT.jsonl", engine="ray",
                           ray={"num_cpus": args.cpus})  # fmt: skip

    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs; model {model}; {n} sentences in {args.files} files")
    print("\n| engine | wall s | sentences/s (wall) | per-actor sentences/s (busy) |\n|---|---|---|---|")
    for name, secs, rate, each in rows:
        print(f"| {name} | {secs:.1f} | {rate:.0f} | {each} |")
    extra = small_ray - small_local
    print(f"\noverhead on a small input ({small.counts.sentences} sentences, the seed articles): "
          f"local {small_local:.1f} s, ray {small_ray:.1f} s (+{extra:.1f} s: runtime and actor start)")  # fmt: skip

    best = max(r for rs in rates.values() for r in rs) if rates else 0
    total = args.archive_articles * per_article
    print(f"\nPAPER ESTIMATE (not measured): {args.archive_articles:,} articles x {per_article:.1f} sentences "
          f"= {total:,.0f} sentences; at the measured per-actor rate r = {best:.0f} sentences/s of this model on "
          f"this machine, N nodes x g actors need about total / (N * g * r):")  # fmt: skip
    for nodes in (1, 4, 16):
        for per_node in (1, 8):
            print(f"  N={nodes:>2} nodes x g={per_node} actors: {total / (nodes * per_node * best) / 3600:7.2f} h")
    print(
        "  (a GPU actor's r must be measured with --gpus-per-actor 1 on a GPU machine; the model and the "
        "reading rate, about the files' size over the storage bandwidth, bound it)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
