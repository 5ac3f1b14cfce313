"""Labelling throughput against the stock `transformers.pipeline("text-classification")`.

    python benchmarks/label_throughput.py                  # 512 sentences, bf16 on 64 of them
    python benchmarks/label_throughput.py --quick          # a smoke run of about a minute
    python benchmarks/label_throughput.py --trained-model RUN/model --workdir /tmp/bench

One run, one machine, the same sentences (distinct sentences of the seed articles and the
corpus, each one the splitter keeps whole) and the same BERT-base-shaped model (12
layers, hidden 768, vocab 64k, random weights: speed does not depend on them). The stock
pipeline runs at batch sizes 1, 8 and 32 and the best counts; the labeller runs the whole
command path (read a JSONL file, split, normalise, predict, write the outputs) in fp32,
int8 and bf16. bf16 runs on fewer sentences because this CPU has no bf16 matrix unit and
the path is slow; the table says so. Model loading is excluded on both sides. The paths
take turns on chunks of the sentences (--rounds), so load from other processes on a
shared machine falls on all of them alike.

Agreement: on a trained model (--trained-model, or a tiny one trained here) the share of
(sentence, target) stances on which bf16 and int8 agree with fp32, and on which fp32
agrees with the stock model run through the pipeline one sentence at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from diplostance.labelling import label
from diplostance.modeling import train_wordpiece_tokenizer
from diplostance.predictor import load_predictor
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization, normalize, split_sentences

ROOT = Path(__file__).resolve().parents[1]

BASE_SHAPE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
VOCAB_SIZE = 64_000
MAX_LENGTH = 128


def corpus_sentences() -> list[str]:
    """Distinct sentences of the seed articles and the annotated corpus that split_sentences keeps whole."""
    texts = []
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        texts += [s.text for s in split_sentences(path.read_text(encoding="utf-8"))]
    for path in sorted((ROOT / "annotations").rglob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [t for t in dict.fromkeys(texts) if [s.text for s in split_sentences(t)] == [t]]


def build_base_model(folder: Path, texts: list[str], labels: LabelSpace, seed: int = 0) -> Path:
    """A real model folder: WordPiece trained on the project's text, padded to 64k entries, random BERT-base."""
    from transformers import AutoModelForSequenceClassification, BertConfig, BertTokenizer

    trained = train_wordpiece_tokenizer(texts, vocab_size=16_000).get_vocab()
    vocab = dict(sorted(trained.items(), key=lambda item: item[1]))
    for i in range(VOCAB_SIZE - len(vocab)):  # filler entries: the embedding matrix gets the 64k shape
        vocab[f"[unused{i}]"] = len(vocab)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=False, strip_accents=False, tokenize_chinese_chars=False)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        **BASE_SHAPE,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=labels.num_labels,
        id2label=labels.id2label,
        label2id=labels.label2id,
    )
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    TextNormalization().save(folder)
    return folder


def pipeline_stances(outputs, labels: LabelSpace) -> np.ndarray:
    """(n, targets) polarity indices from pipeline outputs with top_k=None, function_to_apply='none'."""
    label2id = labels.label2id
    logits = np.empty((len(outputs), labels.num_labels))
    for row, scores in enumerate(outputs):
        for entry in scores:
            logits[row, label2id[entry["label"]]] = entry["score"]
    return logits.reshape(len(outputs), len(labels.targets), len(labels.polarities)).argmax(-1)


def pipeline_runner(pipe, batch_size: int, labels: LabelSpace):
    """Times the stock pipeline on the model's input text (normalised, so both sides see the same)."""
    kwargs = {"batch_size": batch_size, "truncation": True, "max_length": MAX_LENGTH}
    kwargs |= {"top_k": None, "function_to_apply": "none"}  # raw logits: per-target argmax is comparable

    def run(texts: list[str], normalized: list[str]) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        outputs = pipe(normalized, **kwargs)
        return time.perf_counter() - started, pipeline_stances(outputs, labels)

    run(["جملة للإحماء."], ["جملة للإحماء."])  # warm-up
    return run


def labeller_runner(model_dir: Path, precision: str, workdir: Path, batch_size: int):
    """Times the labeller's whole path: a JSONL file of the sentences (one article each) in, outputs written."""
    predictor = load_predictor(model_dir, precision=precision, batch_size=batch_size, max_length=MAX_LENGTH)
    labels = predictor.labels

    def run(texts: list[str], normalized: list[str]) -> tuple[float, np.ndarray]:
        source, out = workdir / f"in-{precision}.jsonl", workdir / f"out-{precision}.jsonl"
        with source.open("w", encoding="utf-8") as handle:
            for i, text in enumerate(texts):
                handle.write(json.dumps({"id": str(i), "text": text}, ensure_ascii=False) + "\n")
        cfg = {"model_dir": str(model_dir), "inputs": [str(source)], "output": str(out), "precision": precision}
        cfg |= {"batch_size": batch_size, "max_length": MAX_LENGTH, "overwrite": True, "progress_bar": False}
        started = time.perf_counter()
        summary = label(cfg, predictor=predictor)
        seconds = time.perf_counter() - started
        assert summary.counts.sentences == len(texts), "the labeller split a benchmark sentence"
        stances = np.empty((len(texts), len(labels.targets)), dtype=int)
        for line in out.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            stances[int(record["doc_id"])] = [labels.polarities.index(record["stances"][t]) for t in labels.targets]
        return seconds, stances

    run(["جملة للإحماء."], ["جملة للإحماء."])  # warm-up
    return run


def train_tiny(run_dir: Path, quick: bool) -> Path:
    """A small transformer trained on the shipped corpus (reused when run_dir already has one)."""
    if (run_dir / "model" / "config.json").is_file():
        return run_dir / "model"
    from hydra import compose, initialize_config_dir

    from diplostance.training import train

    overrides = [f"data.directory={ROOT / 'annotations'}", "experiment=tiny_fast", "training.progress_bar=false"]
    if quick:
        overrides += ["training.epochs=3", "model.hidden_size=32", "model.num_layers=1", "model.intermediate_size=64"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    train(cfg, run_dir)
    return run_dir / "model"


def agreement(model_dir: Path, texts: list[str]) -> list[tuple[str, int, float]]:
    from transformers import pipeline

    fp32 = load_predictor(model_dir, precision="fp32").predict_proba(texts).argmax(-1)
    rows = []
    for precision in ("bf16", "int8"):
        other = load_predictor(model_dir, precision=precision).predict_proba(texts).argmax(-1)
        rows.append((f"{precision} vs fp32", fp32.size, float((other == fp32).mean())))
    predictor = load_predictor(model_dir)
    pipe = pipeline("text-classification", model=str(model_dir), device=-1)
    normalized = [normalize(t, predictor.normalization) for t in texts]
    outputs = pipe(
        normalized, batch_size=1, truncation=True, max_length=MAX_LENGTH, top_k=None, function_to_apply="none"
    )
    rows.append(("fp32 vs stock model", fp32.size, float((pipeline_stances(outputs, predictor.labels) == fp32).mean())))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=512, help="sentences timed (at least 512 for the figure)")
    parser.add_argument("--bf16-sentences", type=int, default=64, help="the first N of them for the slow bf16 path")
    parser.add_argument("--batch-sizes", default="1,8,32", help="stock pipeline batch sizes; the best counts")
    parser.add_argument("--batch-size", type=int, default=16, help="the labeller's batch size (label.yaml's default)")
    parser.add_argument("--rounds", type=int, default=4, help="chunks the paths take turns on")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    parser.add_argument("--trained-model", type=Path, help="model folder for the agreement figures")
    parser.add_argument("--agreement-sentences", type=int, default=0, help="0: every distinct corpus sentence")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep the model folders here (reused by later runs)")
    parser.add_argument("--quick", action="store_true", help="48 sentences, bf16 on 8, a quickly trained model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.sentences, args.bf16_sentences = min(args.sentences, 48), min(args.bf16_sentences, 8)
        args.rounds = min(args.rounds, 2)
        args.agreement_sentences = args.agreement_sentences or 200
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="label-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    available = corpus_sentences()
    random.Random(args.seed).shuffle(available)
    if args.sentences > len(available):
        parser.error(f"--sentences: only {len(available)} distinct sentences are available")
    texts = available[: args.sentences]
    labels = LabelSpace.load(ROOT / "annotations" / "schema.yaml")
    model_dir = workdir / "bert-base-random"
    if not (model_dir / "config.json").is_file():
        build_base_model(model_dir, available, labels, args.seed)

    normalization = TextNormalization.load(model_dir)
    lengths = load_predictor(model_dir).encode(texts)
    print(f"# Labelling throughput: {len(texts)} sentences, {np.mean([len(x) for x in lengths]):.1f} tokens mean")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads; load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("model: BERT-base shape (12 layers, hidden 768, vocab 64,000), random weights\n")

    # Every path is timed on the same chunks, in turn, with the order rotated per chunk, so a
    # neighbour's load on this shared machine falls on all of them alike.
    pipe = pipeline("text-classification", model=str(model_dir), device=-1)
    runners = {f"stock pipeline, batch {b}": pipeline_runner(pipe, int(b), labels) for b in args.batch_sizes.split(",")}
    for precision in ("fp32", "int8", "bf16"):
        runners[f"labeller {precision}"] = labeller_runner(model_dir, precision, workdir, args.batch_size)
    normalized = [normalize(t, normalization) for t in texts]
    chunks = np.array_split(np.arange(len(texts)), args.rounds)
    bf16_chunks = np.array_split(np.arange(min(args.bf16_sentences, len(texts))), args.rounds)
    seconds = dict.fromkeys(runners, 0.0)
    stances = {name: {} for name in runners}
    for c in range(args.rounds):
        names = list(runners)[c % len(runners) :] + list(runners)[: c % len(runners)]
        for name in names:
            rows_of = bf16_chunks[c] if name == "labeller bf16" else chunks[c]
            took, got = runners[name]([texts[i] for i in rows_of], [normalized[i] for i in rows_of])
            seconds[name] += took
            stances[name].update(zip(rows_of.tolist(), got, strict=True))
    rows = []  # (name, sentences, seconds, stances in sentence order)
    for name in runners:
        n = len(stances[name])
        shown = f"{name} (first {n} sentences only)" if name == "labeller bf16" else name
        rows.append((shown, n, seconds[name], np.array([stances[name][i] for i in sorted(stances[name])])))

    best = max((r for r in rows if r[0].startswith("stock")), key=lambda r: r[1] / r[2])
    best_rate = best[1] / best[2]
    print("| path | sentences | seconds | sentences/s | x best stock pipeline |")
    print("|---|---:|---:|---:|---:|")
    for name, n, seconds, _ in rows:
        print(f"| {name} | {n} | {seconds:.1f} | {n / seconds:.1f} | {n / seconds / best_rate:.2f}x |")
    fastest = max((r for r in rows if r[0].startswith("labeller")), key=lambda r: r[1] / r[2])
    ratio = fastest[1] / fastest[2] / best_rate
    verdict = "met" if ratio >= 5 else "MISSED"
    print(f"\nbest stock: {best[0]}; fastest labeller path: {fastest[0]} at {ratio:.2f}x (target 5x: {verdict})")
    fp32_stances = next(r[3] for r in rows if r[0] == "labeller fp32")
    for name, _, _, got in rows:
        if name.startswith("stock"):
            same = float((got == fp32_stances).mean())
            print(f"fp32 labeller stances equal to {name}: {same:.2%} of {fp32_stances.size}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if not args.skip_agreement:
        trained = args.trained_model or train_tiny(workdir / "trained", args.quick)
        sample = corpus_sentences()
        if args.agreement_sentences:
            sample = sample[: args.agreement_sentences]
        print(f"\n## Agreement with fp32 on a trained model ({trained}), {len(sample)} sentences\n")
        print("| comparison | stances compared | agreement |")
        print("|---|---:|---:|")
        for name, n, share in agreement(trained, sample):
            print(f"| {name} | {n} | {share:.2%} |")
    print(f"\nmodel folders in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
