"""The GPU check: everything that must work and be fast on a CUDA machine, in one run and one table.

    python benchmarks/gpu_check.py                 # about 10 minutes on one GPU
    python benchmarks/gpu_check.py --quick         # fewer epochs, steps and sentences
    python benchmarks/gpu_check.py --workdir /tmp/gpu-check --sentences 20000

On a machine without CUDA it stops at once with one line (exit 2). Otherwise it runs, each step
on its own so one failure does not hide the others:

1. `scripts/train.py` on the GPU (tiny model, class weights on) in fp32, bf16 and fp16; a
   pretrained-style BERT (a random BERT-base saved with `save_pretrained`, `model=arabert
   model.name_or_path=FOLDER`) in bf16; `training=gpu`; and `torchrun --standalone
   --nproc_per_node=<GPUs>` (NCCL).
2. Training throughput through the real Trainer (benchmarks/train_throughput.py): optimizer steps/s
   and samples/s of the tiny model, a 12-layer 384-wide encoder and the BERT-base shape, with
   `training=default` (fp32) and `training=gpu` (bf16, and fp16).
3. `scripts/evaluate.py` with `device=cuda` in bf16 and fp16, and the share of (sentence, target)
   stances of the trained tiny model on which the GPU's fp16/bf16 agree with the CPU's fp32.
4. Labelling N sentences (default 20,000, articles of about 10 corpus sentences in a JSONL file)
   through label.py's whole path (`diplostance.labelling.label`: read, split, normalise, tokenise,
   predict, write) with the BERT-base shape, `device=cuda`, in fp32, bf16 and fp16 (the default
   feeding: worker processes split, normalise and tokenise, the predictor pads with numpy and reads
   back once per window), and bf16 with `prepare_workers=0` (one process); the predictor's fast path
   alone (`predict_encoded` on token ids, and `predict_proba` from text, with its attention
   implementation); the stock `pipeline("text-classification")` on the same GPU at its best batch
   size (fp32 and bf16 weights); the ratios; and the Ray engine with `ray.num_gpus_per_actor=1` when
   Ray is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = "error: benchmarks/gpu_check.py needs a CUDA GPU, and torch sees none on this machine (run it where one is)"


def cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, check: str, setting: str, result: str, figure: str = "") -> None:
        self.rows.append((check, setting, result, figure))
        print(f"[gpu_check] {check} | {setting} | {result} | {figure}", flush=True)

    def markdown(self) -> str:
        lines = ["| check | setting | result | figure |", "|---|---|---|---|"]
        lines += [f"| {c} | {s} | {r} | {f} |" for c, s, r, f in self.rows]
        return "\n".join(lines)


def failure(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return "FAILED: " + (lines[-1][:160] if lines else "?").replace("|", "/")


def run_script(args: list[str], log: Path, timeout: int = 900) -> tuple[bool, float, str]:
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    with log.open("w") as handle:
        done = subprocess.run(args, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    seconds = time.perf_counter() - started
    tail = log.read_text(errors="replace")
    return done.returncode == 0, seconds, "" if done.returncode == 0 else failure(tail)


def train_checks(table: Table, work: Path, bert_dir: Path, quick: bool, gpus: int) -> Path | None:
    """train.py on the GPU in every precision and model kind, training=gpu, torchrun; the fp32 tiny model folder."""
    epochs = "training.epochs=2" if quick else "training.epochs=4"
    common = [epochs, "bootstrap_resamples=0", "compare_baseline=false", "training.progress_bar=false"]
    runs = {
        "tiny fp32, class weights": ["model=tiny"],
        "tiny bf16": ["model=tiny", "training.precision=bf16"],
        "tiny fp16": ["model=tiny", "training.precision=fp16"],
        "tiny training=gpu (bf16)": ["model=tiny", "training=gpu"],
        "pretrained BERT-base folder bf16": [
            "model=arabert",
            f"model.name_or_path={bert_dir}",
            "training.precision=bf16",
            "training.epochs=1",
        ],
    }
    tiny_model = None
    for name, overrides in runs.items():
        run_dir = (
            work / "train" / name.split(",")[0].replace(" ", "_").replace("=", "-").replace("(", "").replace(")", "")
        )
        ok, seconds, why = run_script(
            [sys.executable, "scripts/train.py", *common, *overrides, f"hydra.run.dir={run_dir}"],
            work / f"{run_dir.name}.log",
        )
        figure = ""
        if ok:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            figure = f"{seconds:.0f} s, test macro_f_avg {metrics['macro_f_avg']:.3f}, device cuda"
            if name.startswith("tiny fp32"):
                tiny_model = run_dir / "model"
        table.add("train.py", name, "ok" if ok else why, figure)
    run_dir = work / "train" / "torchrun"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    ok, seconds, why = run_script(
        [*torchrun, "scripts/train.py", "model=tiny", *common, f"hydra.run.dir={run_dir}"], work / "torchrun.log"
    )
    figure = ""
    if ok:
        world = json.loads((run_dir / "metrics.json").read_text())["training"]["world_size"]
        figure = f"{seconds:.0f} s, world_size {world}"
    table.add("torchrun (nccl)", f"--nproc_per_node={gpus}, tiny", "ok" if ok else why, figure)
    return tiny_model


def throughput_checks(table: Table, quick: bool) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import measure

    plans = [("tiny", 80, 10), ("12x384", 60, 10), ("base", 40, 10)]
    settings = [("default", "fp32"), ("gpu", "bf16"), ("gpu", "fp16")]
    for shape, steps, warmup in plans:
        if quick:
            steps, warmup = max(steps // 2, 15), 5
        for training, precision in settings:
            try:
                r = measure(shape, training, precision, steps, warmup)
                figure = f"{r['steps_per_s']:.1f} steps/s, {r['samples_per_s']:.0f} samples/s (batch {r['batch']})"
                table.add("training throughput", f"{shape}, training={training}, {precision}", "ok", figure)
            except Exception as error:
                table.add("training throughput", f"{shape}, training={training}, {precision}", failure(error))


def corpus_and_inputs(work: Path, sentences: int) -> tuple[list[str], Path]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from label_throughput import corpus_sentences

    texts = corpus_sentences()
    rnd = random.Random(0)
    source = work / f"articles-{sentences}.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        written = article = 0
        while written < sentences:
            size = min(10, sentences - written)
            text = "\n".join(rnd.choice(texts) for _ in range(size))
            handle.write(json.dumps({"id": f"a{article}", "text": text}, ensure_ascii=False) + "\n")
            written, article = written + size, article + 1
    return texts, source


def agreement_checks(table: Table, work: Path, tiny_model: Path | None, texts: list[str]) -> None:
    if tiny_model is None:
        table.add("evaluate.py / agreement", "device=cuda", "skipped: no trained tiny model (see train.py above)")
        return
    from diplostance.predictors import load_predictor

    for precision in ("bf16", "fp16"):
        out = work / f"evaluate-{precision}"
        ok, seconds, why = run_script(
            [
                sys.executable,
                "scripts/evaluate.py",
                f"model_dir={tiny_model}",
                "device=cuda",
                f"precision={precision}",
                f"hydra.run.dir={out}",
            ],
            work / f"evaluate-{precision}.log",
        )
        table.add("evaluate.py", f"device=cuda precision={precision}", "ok" if ok else why, f"{seconds:.0f} s")
    cpu = load_predictor(tiny_model, device="cpu", precision="fp32").predict_proba(texts).argmax(-1)
    for precision in ("fp32", "bf16", "fp16"):
        gpu = load_predictor(tiny_model, device="cuda", precision=precision).predict_proba(texts).argmax(-1)
        share = float((gpu == cpu).mean())
        table.add("agreement with CPU fp32", f"cuda {precision}, {cpu.size} stances", "ok", f"{share:.2%}")


def labelling_checks(table: Table, work: Path, bert_dir: Path, source: Path, texts: list[str], sentences: int) -> None:
    import torch

    from diplostance.labelling import label
    from diplostance.labelling.local import prepare_workers
    from diplostance.labelling.options import LabelOptions
    from diplostance.predictors import load_predictor

    rates = {}
    for precision, workers in (("fp32", None), ("bf16", None), ("fp16", None), ("bf16", 0)):
        what = f"device=cuda precision={precision}" + ("" if workers is None else f" prepare_workers={workers}")
        try:
            predictor = load_predictor(bert_dir, device="cuda", precision=precision)
            options = {"model_dir": str(bert_dir), "inputs": [str(source)], "device": "cuda", "precision": precision}
            options |= {"overwrite": True, "progress_bar": False, "prepare_workers": workers}
            label({**options, "output": str(work / "warm.jsonl")}, predictor=predictor)  # CUDA kernels, allocator
            started = time.perf_counter()
            out = work / f"labels-{precision}-{workers}.jsonl"
            summary = label({**options, "output": str(out)}, predictor=predictor)
            seconds = time.perf_counter() - started
            used = prepare_workers(LabelOptions.from_config({**options, "output": str(out)}), predictor)
            rates[what] = summary.counts.sentences / seconds
            figure = f"{rates[what]:,.0f} sentences/s ({summary.counts.sentences} in {seconds:.1f} s, {used} workers)"
            table.add("label.py, BERT-base shape", what, "ok", figure)
            del predictor
            torch.cuda.empty_cache()
        except Exception as error:
            traceback.print_exc()
            table.add("label.py, BERT-base shape", what, failure(error))
    fast = predictor_checks(table, bert_dir, texts, sentences)
    stock = stock_pipeline(table, bert_dir, texts, min(sentences, 5000))
    if stock and rates:
        best = max(rates, key=rates.get)
        ratio = rates[best] / stock
        verdict = "target 10x met" if ratio >= 10 else "target 10x MISSED"
        table.add("label.py / stock pipeline", f"label.py {best} vs best stock", "ok", f"{ratio:.1f}x ({verdict})")
    for name, rate in fast.items():
        if stock:
            table.add("predictor / stock pipeline", f"{name} vs best stock", "ok", f"{rate / stock:.1f}x")
    if rates:
        best = max(rates.values())
        verdict = "met" if best >= 20_000 else "MISSED"
        table.add("label.py target", ">= 20,000 sentences/s", verdict, f"{best:,.0f} sentences/s")
    ray_check(table, work, bert_dir, source)


def predictor_checks(table: Table, bert_dir: Path, texts: list[str], n: int) -> dict[str, float]:
    """The transformer predictor's fast path alone, in one process: predict_encoded on token ids (the
    device side: numpy padding, pinned non-blocking copies, one read back) and predict_proba from text
    (normalise and tokenise here, then the same). Sentences/s by name."""
    import torch

    from diplostance.predictors import load_predictor

    sample = [texts[i % len(texts)] for i in range(n)]
    rates = {}
    for precision in ("bf16", "fp16"):
        try:
            predictor = load_predictor(bert_dir, device="cuda", precision=precision)
            ids = predictor.encode(sample)
            predictor.predict_encoded(ids[: 4 * predictor.batch_size])  # warm-up: kernels, allocator
            details = f"batch {predictor.batch_size}, attention {predictor.attention}"
            for call, data in (("predict_encoded", ids), ("predict_proba", sample)):
                started = time.perf_counter()
                getattr(predictor, call)(data)  # ends with the one read back: the device has finished
                rate = n / (time.perf_counter() - started)
                rates[f"{call} {precision}"] = rate
                table.add("predictor (fast path)", f"{call} {precision}, {details}", "ok", f"{rate:,.0f} sentences/s")
            del predictor
            torch.cuda.empty_cache()
        except Exception as error:
            traceback.print_exc()
            table.add("predictor (fast path)", precision, failure(error))
    return rates


def stock_pipeline(table: Table, bert_dir: Path, texts: list[str], n: int) -> float | None:
    import torch
    from transformers import pipeline

    from diplostance.text import TextNormalization, normalize

    normalization = TextNormalization.load(bert_dir)
    sample = [normalize(texts[i % len(texts)], normalization) for i in range(n)]
    best = None
    for dtype in (torch.float32, torch.bfloat16):
        pipe = pipeline("text-classification", model=str(bert_dir), device=0, dtype=dtype)
        for batch in (64, 256, 1024):
            kwargs = {"batch_size": batch, "truncation": True, "max_length": 128, "top_k": None}
            pipe(sample[:batch], **kwargs)  # warm-up
            torch.cuda.synchronize()
            started = time.perf_counter()
            pipe(sample, **kwargs)
            rate = n / (time.perf_counter() - started)
            name = f"{str(dtype).split('.')[-1]}, batch {batch}"
            table.add("stock pipeline", name, "ok", f"{rate:,.0f} sentences/s ({n} sentences)")
            best = max(best or 0.0, rate)
        del pipe
        torch.cuda.empty_cache()
    return best


def ray_check(table: Table, work: Path, bert_dir: Path, source: Path) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        table.add("label.py engine=ray", "ray.num_gpus_per_actor=1", "skipped: ray is not installed")
        return
    out = work / "ray-out.parquet"
    args = [sys.executable, "scripts/label.py", f"model_dir={bert_dir}", f"inputs=[{source}]", f"output={out}",
            "engine=ray", "ray.num_gpus_per_actor=1", "precision=bf16", "overwrite=true", "progress_bar=false",
            f"hydra.run.dir={work / 'ray-hydra'}"]  # fmt: skip
    ok, seconds, why = run_script(args, work / "ray.log")
    table.add("label.py engine=ray", "ray.num_gpus_per_actor=1 bf16", "ok" if ok else why, f"{seconds:.0f} s in all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="keep the model folders and outputs here")
    parser.add_argument("--sentences", type=int, default=20_000, help="sentences labelled per precision")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and steps, 5,000 sentences")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "throughput", "evaluate", "label"])
    args = parser.parse_args(argv)
    gpus = cuda_count()
    if not gpus:
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.quick:
        args.sentences = min(args.sentences, 5000)
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from label_throughput import build_base_model

    from diplostance.schema import LabelSpace

    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# GPU check: {gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, work folder {work}")
    table = Table()
    texts, source = corpus_and_inputs(work, args.sentences)
    bert_dir = work / "bert-base-random"
    if not (bert_dir / "config.json").is_file():
        build_base_model(bert_dir, texts, LabelSpace.load(ROOT / "annotations" / "schema.yaml"))
    tiny_model = None
    steps = [
        ("train", lambda: train_checks(table, work, bert_dir, args.quick, gpus)),
        ("throughput", lambda: throughput_checks(table, args.quick)),
        ("evaluate", lambda: agreement_checks(table, work, tiny_model, texts)),
        ("label", lambda: labelling_checks(table, work, bert_dir, source, texts, args.sentences)),
    ]
    for name, step in steps:
        if name in args.skip:
            continue
        try:
            result = step()
            if name == "train":
                tiny_model = result
        except Exception as error:
            traceback.print_exc()
            table.add(name, "", failure(error))
    print()
    print(f"GPU: {gpus} x {torch.cuda.get_device_name(0)}; torch {torch.__version__}; work folder {work}\n")
    print(table.markdown())
    return 0 if all(not r[2].startswith("FAILED") for r in table.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
