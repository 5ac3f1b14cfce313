"""How often the ONNX Runtime backend predicts the stock model's stances, over every corpus sentence.

    python benchmarks/onnx_agreement.py MODEL_DIR                 # a trained transformer model folder
    python benchmarks/onnx_agreement.py MODEL_DIR --workdir /tmp/onnx-agree --find-exclusions

Sentences: every record of annotations/corpus/*.jsonl and annotations/seeds.jsonl (distinct
texts; the corpus grows, the count is printed). Compared, per (sentence, target) stance:
ONNX fp32 with the stock torch model (fp32, `from_pretrained` as saved), and int8 with
ONNX fp32 for each int8 scheme (u8s8, u8s8 with reduced-range weights, u8u8) and for the
legacy torch.ao int8 path. Also the largest absolute probability difference. Targets: fp32
>= 99.9%, int8 >= 98%. With --find-exclusions, when the int8 export picked for this CPU
misses 98%, encoder layers are kept in fp32 one at a time (the one that helps most first)
until it is met, and the layers are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

from diplostance.predictors import load_predictor
from diplostance.predictors.onnx import (
    INT8_SCHEMES,
    ONNX_FILES,
    OnnxPredictor,
    cpu_extensions,
    export_onnx,
    int8_scheme_for,
    quantize_int8,
)

ROOT = Path(__file__).resolve().parents[1]
FP32_TARGET, INT8_TARGET = 0.999, 0.98


def corpus_texts() -> list[str]:
    paths = [*sorted((ROOT / "annotations" / "corpus").glob("*.jsonl")), ROOT / "annotations" / "seeds.jsonl"]
    texts = []
    for path in paths:
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(dict.fromkeys(texts))


def compare(name: str, probs: np.ndarray, reference: np.ndarray) -> dict:
    same = probs.argmax(-1) == reference.argmax(-1)
    return {
        "comparison": name,
        "stances": int(same.size),
        "different": int((~same).sum()),
        "agreement": float(same.mean()),
        "max_prob_diff": float(np.abs(probs - reference).max()),
    }


def layer_nodes(model_path: Path) -> dict[str, list[str]]:
    """Quantisable node names (MatMul, Attention) per encoder layer, from the exported node names.

    A fused Attention node is named Attention_N; its layer is that of the MatMul reading its output.
    """
    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    reader = {name: node for node in nodes for name in node.input}

    def layer_of(node) -> str:
        if node.op_type == "Attention" and node.output[0] in reader:
            node = reader[node.output[0]]
        return next((part for part in node.name.split("/") if part.startswith("layer.")), "other")

    layers: dict[str, list[str]] = {}
    for node in nodes:
        if node.op_type in ("MatMul", "Attention"):
            layers.setdefault(layer_of(node), []).append(node.name)
    return layers


def find_exclusions(model_dir, fp32_path, fp32_probs, texts, workdir, scheme, options) -> tuple[list[str], float]:
    """Greedy: keep in fp32 the layer whose exclusion raises agreement most, until INT8_TARGET."""
    layers = layer_nodes(fp32_path)
    kept: list[str] = []
    share = 0.0
    while len(kept) < len(layers):
        trials = {}
        for layer in set(layers) - set(kept):
            out = workdir / f"try-{layer}.onnx"
            quantize_int8(fp32_path, out, scheme, [n for k in [*kept, layer] for n in layers[k]])
            probs = OnnxPredictor(model_dir, "int8", onnx_file=out, **options).predict_proba(texts)
            trials[layer] = compare(layer, probs, fp32_probs)["agreement"]
        best = max(trials, key=trials.get)
        kept.append(best)
        share = trials[best]
        print(f"  fp32 kept for {kept}: int8 agreement {share:.2%}")
        if share >= INT8_TARGET:
            break
    return kept, share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a trained transformer model folder")
    parser.add_argument("--workdir", type=Path, help="where the exports go (default: a temporary folder)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--find-exclusions", action="store_true", help="keep layers in fp32 until int8 agrees")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)

    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from diplostance.errors import reported_as_user_errors
    from diplostance.output_guard import check_output_files, work_folder

    with reported_as_user_errors():  # never a folder of the user's own files, never an input
        if args.json:
            check_output_files({"--json": args.json}, [args.model_dir], args.overwrite)
        workdir = work_folder(args.workdir, "onnx-agreement-", [ROOT / "annotations", ROOT / "seeds", args.model_dir])
    texts = corpus_texts()
    extensions = cpu_extensions()
    chosen = int8_scheme_for(extensions)
    print(f"# ONNX agreement: {args.model_dir}, {len(texts)} distinct corpus and seed sentences")
    print(f"CPU extensions: {' '.join(extensions) or 'unknown'}; int8 scheme picked for this CPU: {chosen}\n")

    options = {"batch_size": args.batch_size, "num_threads": args.threads}
    stock = load_predictor(args.model_dir, precision="fp32", **options).predict_proba(texts)
    description = export_onnx(args.model_dir, workdir, int8=False, overwrite=True)  # the benchmark's own folder
    fp32_path = workdir / ONNX_FILES["fp32"]
    print(f"fused operators: {description['fused_operators']}")
    fp32 = OnnxPredictor(args.model_dir, "fp32", onnx_file=fp32_path, **options).predict_proba(texts)
    rows = [compare("ONNX fp32 vs stock torch fp32", fp32, stock)]
    for scheme in INT8_SCHEMES:
        path = workdir / f"model.int8.{scheme}.onnx"
        quantize_int8(fp32_path, path, scheme)
        probs = OnnxPredictor(args.model_dir, "int8", onnx_file=path, **options).predict_proba(texts)
        mark = " (picked here)" if scheme == chosen else ""
        rows.append(compare(f"ONNX int8 {scheme}{mark} vs ONNX fp32", probs, fp32))
        if scheme == chosen:
            chosen_probs = probs
    rows.append(compare(f"ONNX int8 {chosen} vs stock torch fp32", chosen_probs, stock))
    legacy = load_predictor(args.model_dir, precision="int8", **options).predict_proba(texts)
    rows.append(compare("torch.ao int8 (legacy) vs stock torch fp32", legacy, stock))

    print("\n| comparison | stances | different | agreement | max prob diff |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        line = f"| {r['comparison']} | {r['stances']} | {r['different']} | {r['agreement']:.2%} |"
        print(f"{line} {r['max_prob_diff']:.2e} |")
    fp32_ok = rows[0]["agreement"] >= FP32_TARGET
    int8_share = next(r["agreement"] for r in rows if "(picked here)" in r["comparison"])
    print(f"\nfp32 >= {FP32_TARGET:.1%}: {'met' if fp32_ok else 'MISSED'}; ", end="")
    print(f"int8 ({chosen}) >= {INT8_TARGET:.0%}: {'met' if int8_share >= INT8_TARGET else 'MISSED'}")
    if args.find_exclusions and int8_share < INT8_TARGET:
        kept, share = find_exclusions(args.model_dir, fp32_path, fp32, texts, workdir, chosen, options)
        print(f"layers kept in fp32: {kept} -> int8 agreement {share:.2%}")
    if args.json:
        from diplostance.outputs import atomic_write_text

        atomic_write_text(
            args.json, json.dumps({"sentences": len(texts), "cpu": extensions, "rows": rows}, indent=2) + "\n"
        )
    return 0 if fp32_ok and int8_share >= INT8_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
