"""Labelling throughput against the stock `transformers.pipeline("text-classification")`.

    python benchmarks/label_throughput.py                  # 512 sentences, bf16 on 64 of them
    python benchmarks/label_throughput.py --quick          # a smoke run of a few minutes
    python benchmarks/label_throughput.py --trained-model RUN/model --workdir /tmp/bench

One run, one machine, the same sentences (distinct sentences of the seed articles and the
corpus, each one the splitter keeps whole) and the same BERT-base-shaped model (12
layers, hidden 768, vocab 64k, random weights: speed does not depend on them). The stock
pipeline runs at batch sizes 1, 8 and 32 and the best counts; the labeller runs the whole
command path (read a JSONL file, split, normalise, predict, write the outputs) with the
torch backend in fp32, int8 (torch.ao, legacy) and bf16, and with the ONNX Runtime backend
in fp32 and int8 (`backend=onnx`; the export, made once into WORKDIR/onnx-cache, is not
timed). bf16 runs on fewer sentences because it is slow on CPUs without bf16 hardware; the
table says so. Model loading is excluded on both sides. The paths take turns on chunks of
the sentences (--rounds), so load from other processes on a shared machine falls on all
of them alike.

Bound: the CPU's vector extensions are printed, and each path's physical bound is the
sentences/s it would reach if every multiply-add of the model (linear layers and attention,
on the sentences' real token counts, no padding) ran at the GEMM rate measured here for its
arithmetic: torch matmul for fp32 and bf16, ONNX Runtime's MatMulInteger (u8 x s8) for int8's
linear layers (its attention products stay fp32).

Agreement: on a trained model (--trained-model, or a tiny one trained here) the share of
(sentence, target) stances on which bf16 and int8 agree with fp32, ONNX fp32 with torch fp32,
ONNX int8 with ONNX fp32, and torch fp32 with the stock model run through the pipeline one
sentence at a time. benchmarks/onnx_agreement.py gives the ONNX figures in full.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from diplostance.labelling import label
from diplostance.modeling import train_wordpiece_tokenizer
from diplostance.predictors import load_predictor
from diplostance.predictors.onnx import cpu_extensions, export_onnx, usable_export, weights_hash
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
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts += [r["text"] for r in records if isinstance(r.get("text"), str)]  # other JSONL files: skipped
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


def onnx_cache(model_dir: Path, workdir: Path) -> Path:
    """WORKDIR/onnx-cache, holding the model's fp32 and int8 export (made once, reused by later runs)."""
    cache = workdir / "onnx-cache"
    source_hash = weights_hash(model_dir)
    if not usable_export(cache / source_hash, source_hash, "int8"):
        description = export_onnx(model_dir, cache / source_hash, int8=True, overwrite=True)  # its own cache
        print(f"exported {model_dir} to ONNX: fused {description['fused_operators']}, int8 {description['int8']}")
    return cache


def labeller_runner(model_dir: Path, precision: str, workdir: Path, batch_size: int, threads, backend="torch"):
    """Times the labeller's whole path: a JSONL file of the sentences (one article each) in, outputs written."""
    options = {"precision": precision, "batch_size": batch_size, "max_length": MAX_LENGTH, "num_threads": threads}
    if backend == "onnx":
        options |= {"backend": "onnx", "cache_dir": onnx_cache(model_dir, workdir)}
    predictor = load_predictor(model_dir, **options)
    labels = predictor.labels

    def run(texts: list[str], normalized: list[str]) -> tuple[float, np.ndarray]:
        source, out = workdir / f"in-{backend}-{precision}.jsonl", workdir / f"out-{backend}-{precision}.jsonl"
        with source.open("w", encoding="utf-8") as handle:
            for i, text in enumerate(texts):
                handle.write(json.dumps({"id": str(i), "text": text}, ensure_ascii=False) + "\n")
        cfg = {"model_dir": str(model_dir), "inputs": [str(source)], "output": str(out), "precision": precision}
        cfg |= {"batch_size": batch_size, "max_length": MAX_LENGTH, "overwrite": True, "progress_bar": False}
        cfg |= {"backend": backend, "num_threads": threads, "device": "cpu"}
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


def agreement(model_dir: Path, texts: list[str], workdir: Path) -> list[tuple[str, int, float]]:
    from transformers import pipeline

    fp32 = load_predictor(model_dir, precision="fp32").predict_proba(texts).argmax(-1)
    rows = []
    for precision in ("bf16", "int8"):
        other = load_predictor(model_dir, precision=precision).predict_proba(texts).argmax(-1)
        rows.append((f"torch {precision} vs torch fp32", fp32.size, float((other == fp32).mean())))
    cache = onnx_cache(model_dir, workdir)
    onnx = {p: load_predictor(model_dir, backend="onnx", precision=p, cache_dir=cache) for p in ("fp32", "int8")}
    onnx_fp32, onnx_int8 = (onnx[p].predict_proba(texts).argmax(-1) for p in ("fp32", "int8"))
    rows.append(("ONNX fp32 vs torch fp32", fp32.size, float((onnx_fp32 == fp32).mean())))
    rows.append(("ONNX int8 vs ONNX fp32", fp32.size, float((onnx_int8 == onnx_fp32).mean())))
    predictor = load_predictor(model_dir)
    pipe = pipeline("text-classification", model=str(model_dir), device=-1)
    normalized = [normalize(t, predictor.normalization) for t in texts]
    outputs = pipe(
        normalized, batch_size=1, truncation=True, max_length=MAX_LENGTH, top_k=None, function_to_apply="none"
    )
    rows.append(("fp32 vs stock model", fp32.size, float((pipeline_stances(outputs, predictor.labels) == fp32).mean())))
    return rows


def gemm_rates(threads: int, m: int = 512, k: int = 768, n: int = 3072, seconds: float = 0.5):
    """A function measuring the multiply-add rates (GFLOP/s, 2 per multiply-add) of a BERT-base
    feed-forward GEMM, per arithmetic; called once per round, the best of its calls counts."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def rate(step) -> float:
        """From the fastest single GEMM (a few ms): on a shared machine the quietest moment shows the hardware."""
        step()  # warm-up
        fastest, started = float("inf"), time.perf_counter()
        while time.perf_counter() - started < seconds:
            began = time.perf_counter()
            step()
            fastest = min(fastest, time.perf_counter() - began)
        return 2 * m * k * n / fastest / 1e9

    steps = {}
    for name, dtype in (("fp32 torch", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        steps[name] = lambda a=a, b=b: torch.matmul(a, b)
    # ONNX Runtime's kernels: fp32 MatMul (MLAS) and u8 x s8 MatMulInteger, the one under the int8 model's MatMuls.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    rng = np.random.default_rng(0)
    for name, op, a_type, weights, out_type in (
        ("fp32 ort", "MatMul", TensorProto.FLOAT, rng.standard_normal((k, n), dtype=np.float32), TensorProto.FLOAT),
        ("int8", "MatMulInteger", TensorProto.UINT8, rng.integers(-127, 128, (k, n), dtype=np.int8), TensorProto.INT32),
    ):
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["y"])],
            "gemm",
            [helper.make_tensor_value_info("a", a_type, [m, k])],
            [helper.make_tensor_value_info("y", out_type, [m, n])],
            [onnx.numpy_helper.from_array(weights, "b")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # onnx writes its newest IR version by default, which onnxruntime may not read yet
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        a = rng.integers(0, 256, (m, k), dtype=np.uint8) if op == "MatMulInteger" else rng.standard_normal((m, k))
        feed = {"a": a.astype(np.uint8 if op == "MatMulInteger" else np.float32)}
        steps[name] = lambda session=session, feed=feed: session.run(None, feed)
    best = dict.fromkeys(steps, 0.0)

    def measure() -> dict[str, float]:
        for name, step in steps.items():
            best[name] = max(best[name], rate(step))
        return {**best, "fp32": max(best["fp32 torch"], best["fp32 ort"])}  # the faster fp32 kernel bounds fp32

    return measure


def model_flops(config, token_counts: list[int]) -> tuple[float, float]:
    """(linear, attention) FLOPs of an encoder over sentences of these token counts, without padding."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = np.asarray(token_counts, dtype=float)
    linear = layers * 2 * tokens.sum() * (4 * h * h + 2 * h * i)
    attention = layers * 2 * 2 * (tokens**2).sum() * h  # Q K^T and (softmax) V
    return float(linear), float(attention)


def bound_rate(path: str, n: int, flops: tuple[float, float], rates: dict[str, float]) -> float:
    """Sentences/s if every multiply-add ran at the measured GEMM rate of the path's arithmetic."""
    linear, attention = flops
    if "int8" in path:
        seconds = linear / (rates["int8"] * 1e9) + attention / (rates["fp32"] * 1e9)
    else:
        seconds = (linear + attention) / (rates["bf16" if "bf16" in path else "fp32"] * 1e9)
    return n / seconds


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

    from diplostance.errors import reported_as_user_errors
    from diplostance.output_guard import work_folder

    with reported_as_user_errors():  # never a folder of the user's own files, never an input
        corpus = [ROOT / "annotations", ROOT / "seeds", args.trained_model]
        workdir = work_folder(args.workdir, "label-bench-", corpus)
    available = corpus_sentences()
    random.Random(args.seed).shuffle(available)
    if args.sentences > len(available):
        parser.error(f"--sentences: only {len(available)} distinct sentences are available")
    texts = available[: args.sentences]
    labels = LabelSpace.load(ROOT / "annotations" / "schema.yaml")
    model_dir = workdir / "bert-base-random"
    if not (model_dir / "config.json").is_file():
        build_base_model(model_dir, available, labels, args.seed)

    import onnxruntime

    threads = args.threads or torch.get_num_threads()
    normalization = TextNormalization.load(model_dir)
    predictor = load_predictor(model_dir)
    token_counts = [len(x) for x in predictor.encode(texts)]
    print(f"# Labelling throughput: {len(texts)} sentences, {np.mean(token_counts):.1f} tokens mean")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} and onnxruntime {onnxruntime.__version__} with {threads} threads; load average "
        f"before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"CPU vector extensions: {' '.join(cpu_extensions()) or 'unknown'}")
    measure_gemm = gemm_rates(threads)
    measure_gemm()
    print("model: BERT-base shape (12 layers, hidden 768, vocab 64,000), random weights\n")
    flops = model_flops(predictor.model.config, token_counts)
    del predictor

    # Every path is timed on the same chunks, in turn, with the order rotated per chunk, so a
    # neighbour's load on this shared machine falls on all of them alike.
    pipe = pipeline("text-classification", model=str(model_dir), device=-1)
    runners = {f"stock pipeline, batch {b}": pipeline_runner(pipe, int(b), labels) for b in args.batch_sizes.split(",")}
    for precision in ("fp32", "int8", "bf16"):
        runners[f"labeller {precision}"] = labeller_runner(model_dir, precision, workdir, args.batch_size, threads)
    for precision in ("fp32", "int8"):
        runners[f"labeller onnx {precision}"] = labeller_runner(
            model_dir, precision, workdir, args.batch_size, threads, backend="onnx"
        )
    normalized = [normalize(t, normalization) for t in texts]
    chunks = np.array_split(np.arange(len(texts)), args.rounds)
    bf16_chunks = np.array_split(np.arange(min(args.bf16_sentences, len(texts))), args.rounds)
    seconds = dict.fromkeys(runners, 0.0)
    stances = {name: {} for name in runners}
    for c in range(args.rounds):
        rates = measure_gemm()  # the GEMM rates take their turn too; the best measurement counts
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

    print("GEMM rates (512x768 @ 768x3072, fastest single GEMM; fp32 is the faster of torch and ORT): ", end="")
    print(", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()) + "\n")
    best = max((r for r in rows if r[0].startswith("stock")), key=lambda r: r[1] / r[2])
    best_rate = best[1] / best[2]
    print("| path | sentences | seconds | sentences/s | x best stock pipeline | GEMM bound, sentences/s | of bound |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n, seconds, _ in rows:
        bound = bound_rate(name, len(texts), flops, rates)
        line = f"| {name} | {n} | {seconds:.1f} | {n / seconds:.1f} | {n / seconds / best_rate:.2f}x |"
        print(f"{line} {bound:.0f} ({bound / best_rate:.1f}x) | {n / seconds / bound:.0%} |")
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
        for name, n, share in agreement(trained, sample, workdir / "trained-onnx"):
            print(f"| {name} | {n} | {share:.2%} |")
    print(f"\nmodel folders in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
