"""The ONNX Runtime backend of the transformer kind (`backend=onnx`): export, optimise, quantise, predict.

`export_onnx(model_dir)` writes, beside the saved weights (or into `out_dir`):

- `model.onnx`: the model exported with `torch.onnx` (TorchScript exporter, dynamic batch
  and sequence axes, eager attention) and fused by ONNX Runtime's transformer optimizer
  (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization);
- `model.int8.onnx` (with `int8=True`): that graph with ONNX Runtime's dynamic int8
  quantisation of its MatMul and Attention weights, the kernel scheme picked for this CPU;
- `onnx_config.json`, written last: opset, files, precisions, fused-operator counts, the
  int8 scheme, the SHA-256 of the source weights (a stale export is never used) and of each
  ONNX file (another model's export, or a file swapped between precisions, is refused).

An existing export is replaced only with `overwrite=True`; an output that is one of the model
folder's own files (a link to the weights) is always refused. Temporary export folders of
interrupted exports (`.onnx-export-*`) are removed by the next export in that folder once no
export holds the folder's lock, and the export says so.

The model folder still loads with stock `from_pretrained` (it ignores these files).
`OnnxPredictor` has the torch predictor's interface and sentence pipeline.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diplostance.devices import CPU_BATCH_SIZE
from diplostance.embedding import (
    ENCODER_SUBDIR,
    EmbeddingStanceModel,
    SentenceEncoder,
    encode_batches,
    memo_key,
    memoised_features,
)
from diplostance.errors import UserError
from diplostance.modeling import encode_texts
from diplostance.outputs import user_cache_dir
from diplostance.predictors import tfidf, transformer
from diplostance.predictors.folder import ModelFolderError, inside, predictor_token_facts, read_json, tokenizer_facts
from diplostance.predictors.transformer import WEIGHT_FILES
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization, normalize

ONNX_PRECISIONS = ("fp32", "int8")
ONNX_CONFIG = "onnx_config.json"
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
FORMAT = "diplostance-onnx/2"  # /2: the SHA-256 of each ONNX file is recorded
TEMPORARY_PREFIX = ".onnx-export-"
# Operators that only a dynamically quantised graph holds.
QUANTISED_OPS = frozenset(
    {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "MatMulIntegerToFloat"}
)
OPSET = 17
# int8 kernel schemes: activations are always u8 (dynamic quantisation); weights s8 or u8.
# u8s8 multiplies with VNNI's vpdpbusd; without VNNI its AVX2 path (vpmaddubsw) adds pairs of
# u8*s8 products into int16 and can saturate, which 7-bit weights (reduce_range) avoid.
INT8_SCHEMES = ("u8s8", "u8s8_reduce_range", "u8u8")
CPU_EXTENSIONS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


class OnnxBackendError(UserError):
    """An ONNX export or ONNX model folder that cannot be used."""


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_extensions(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, ...]:
    """The vector extensions of this CPU that matter for the kernels (empty when unknown)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags |= set(line.partition(":")[2].split())
    return tuple(x for x in CPU_EXTENSIONS if x in flags)


def int8_scheme_for(extensions: Sequence[str]) -> str:
    """u8s8 where VNNI (or AMX) multiplies u8*s8 without saturation; reduced-range weights otherwise."""
    fast = {"avx512_vnni", "avx_vnni", "amx_int8"}
    return "u8s8" if fast & set(extensions) else "u8s8_reduce_range"


def weights_hash(model_dir: str | Path) -> str:
    """SHA-256 over the model's weight files and config.json: the key of an export."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    names = [n for n in (*WEIGHT_FILES, "config.json") if (model_dir / n).is_file()]
    if not names:
        raise OnnxBackendError(f"{model_dir}: no weight file ({' / '.join(WEIGHT_FILES)}) to export")
    for name in names:
        digest.update(name.encode() + b"\0")
        with (model_dir / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """Where exports made on first use go: $DIPLOSTANCE_ONNX_CACHE or ~/.cache/diplostance/onnx."""
    return user_cache_dir("onnx", "DIPLOSTANCE_ONNX_CACHE")


def read_onnx_config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / ONNX_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _export_torch(model_dir: Path, path: Path, opset: int) -> tuple[list[str], object]:
    """torch.onnx export with dynamic axes; returns the graph's input names and the model config."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    class Logits(torch.nn.Module):
        """Positional inputs in a fixed order, which the ONNX input names follow; logits out.

        (Keyword inputs are flattened in the forward signature's order, not the tokenizer's,
        and names given in the tokenizer's order would swap attention_mask and token_type_ids.)
        """

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Eager attention exports as plain MatMul/Softmax, the pattern the optimizer fuses into Attention.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    sample = tokenizer(["نص قصير", "نص أطول قليلا من النص الأول"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes; tests check other batch and sequence shapes against torch
        # The TorchScript exporter (dynamo=False): its graph is the one the BERT fusions match,
        # and the dynamo exporter needs onnxscript, which this project does not install.
        torch.onnx.export(
            Logits(model),
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return names, model.config


def _optimize(raw: Path, out: Path, config, fusion_options=None) -> dict[str, int]:
    """ORT's transformer optimizer (its Python fusions, no hardware-specific graph); fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw),
        model_type="bert",  # the encoder fusions; they fit BERT, RoBERTa and XLM-R (the project's models)
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
        optimization_options=fusion_options,
    )
    optimized.save_model_to_file(str(out))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def quantize_int8(
    fp32: Path,
    out: Path,
    scheme: str,
    nodes_to_exclude: Sequence[str] = (),
    op_types: Sequence[str] = ("MatMul", "Attention"),
    per_channel: bool = False,
) -> None:
    """Dynamic int8 of the MatMul and Attention weights (activations quantised per batch at run time);
    `per_channel`: one weight scale per output column instead of one per matrix."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if scheme not in INT8_SCHEMES:
        raise OnnxBackendError(f"int8 scheme must be one of {list(INT8_SCHEMES)}, got {scheme!r}")
    quant_logger = logging.getLogger()  # quantize_dynamic warns about pre-processing on the root logger
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            fp32,
            out,
            op_types_to_quantize=list(op_types),
            weight_type=QuantType.QUInt8 if scheme == "u8u8" else QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=scheme == "u8s8_reduce_range",
            nodes_to_exclude=list(nodes_to_exclude),
            # The fused contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        quant_logger.setLevel(level)


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path | None = None,
    int8: bool = False,
    int8_scheme: str = "auto",
    nodes_to_exclude: Sequence[str] = (),
    opset: int = OPSET,
    overwrite: bool = False,
) -> dict:
    """Export a transformer model folder to ONNX (fp32, and int8 when asked); returns the JSON written.

    Files are written in a temporary folder beside `out_dir` (default: the model folder) and
    moved into place, `onnx_config.json` last, so a killed export leaves nothing half-written.
    An existing export in `out_dir` is refused unless `overwrite`; an output that is one of the
    model folder's files (through a link) is always refused.
    """
    model_dir = Path(model_dir)
    if not (model_dir / transformer.CONFIG_FILE).is_file():
        raise OnnxBackendError(
            f"{model_dir}: ONNX export is for transformer model folders ({transformer.CONFIG_FILE}); "
            "tfidf and ensemble models need none"
        )
    transformer.check_folder(model_dir, read_json(model_dir / transformer.CONFIG_FILE))
    out_dir = Path(out_dir) if out_dir is not None else model_dir
    outputs = [*(ONNX_FILES["fp32"], ONNX_FILES["int8"])[: 2 if int8 else 1], ONNX_CONFIG]
    _check_outputs(model_dir, out_dir, outputs, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    extensions = cpu_extensions()
    scheme = int8_scheme_for(extensions) if int8_scheme == "auto" else int8_scheme
    if int8 and scheme not in INT8_SCHEMES:
        raise OnnxBackendError(f"int8_scheme must be 'auto' or one of {list(INT8_SCHEMES)}, got {int8_scheme!r}")
    source_hash = weights_hash(model_dir)
    with _export_lock(out_dir), tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIX, dir=out_dir) as tmp:
        tmp = Path(tmp)
        inputs, config = _export_torch(model_dir, tmp / "raw.onnx", opset)
        fused = _optimize(tmp / "raw.onnx", tmp / ONNX_FILES["fp32"], config)
        files = {"fp32": ONNX_FILES["fp32"]}
        if int8:
            quantize_int8(tmp / ONNX_FILES["fp32"], tmp / ONNX_FILES["int8"], scheme, nodes_to_exclude)
            files["int8"] = ONNX_FILES["int8"]
        description = {
            "format": FORMAT,
            "source_weights_sha256": source_hash,
            "opset": opset,
            "exporter": "torch.onnx (TorchScript, dynamo=False), eager attention",
            "inputs": inputs,
            "dynamic_axes": ["batch", "sequence"],
            "files": files,
            "sha256": {precision: file_hash(tmp / name) for precision, name in files.items()},
            "fused_operators": fused,
            "int8": (
                {"scheme": scheme, "ops": ["MatMul", "Attention"], "nodes_to_exclude": list(nodes_to_exclude)}
                if int8
                else None
            ),
            "cpu_extensions": list(extensions),
            "versions": _versions(),
        }
        (tmp / ONNX_CONFIG).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        (out_dir / ONNX_CONFIG).unlink(missing_ok=True)  # the old description goes first: no stale pairing
        for name in files.values():
            os.replace(tmp / name, out_dir / name)
        os.replace(tmp / ONNX_CONFIG, out_dir / ONNX_CONFIG)
    return description


def _check_outputs(model_dir: Path, out_dir: Path, names: Sequence[str], overwrite: bool) -> None:
    """Refuse an output that is one of the model's files (always) or an existing export (unless overwrite)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OnnxBackendError(f"{out_dir}: the output folder is a file; give a folder")
    inputs = {
        p.resolve() for p in model_dir.iterdir() if p.is_file() and p.name not in (*ONNX_FILES.values(), ONNX_CONFIG)
    }
    for name in names:
        target = out_dir / name
        if target.resolve() in inputs:
            raise OnnxBackendError(
                f"{target}: is the model's own file {target.resolve().name} (through a link); an input is never "
                "written to: choose another --out-dir"
            )
    existing = [name for name in names if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    if existing and not overwrite:
        raise OnnxBackendError(
            f"{out_dir}: already holds an export ({', '.join(existing)}); pass --overwrite to replace it"
        )


class _export_lock:
    """Hold `out_dir`'s export lock (a shared flock on the folder) for an export; first remove the
    temporary folders of interrupted exports when no other export holds it."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def __enter__(self):
        self.fd = os.open(self.out_dir, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another export is running here: its temporary folder is not stale
            pass
        else:
            remove_stale_exports(self.out_dir)
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock


def remove_stale_exports(out_dir: Path) -> list[Path]:
    """Remove the temporary folders that interrupted exports left in `out_dir` (call with its lock held)."""
    stale = sorted(p for p in out_dir.glob(TEMPORARY_PREFIX + "*") if p.is_dir() and not p.is_symlink())
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {folder}: the temporary folder of an interrupted ONNX export", file=sys.stderr)
    return stale


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def usable_export(folder: Path, source_hash: str, precision: str) -> Path | None:
    """The ONNX file for `precision` in `folder` when its description matches these weights.

    None when there is no export for these weights and this precision (or an export of an older
    format, which records no hash of its files). An export that claims these weights but whose
    file is not the one recorded (another model's export, a truncated or swapped file, a path
    outside the folder) is an OnnxBackendError naming it.
    """
    description = read_onnx_config(folder)
    if not isinstance(description, dict) or description.get("source_weights_sha256") != source_hash:
        return None
    files, hashes = description.get("files"), description.get("sha256")
    if not isinstance(files, dict) or precision not in files or not isinstance(hashes, dict):
        return None
    config = folder / ONNX_CONFIG
    try:
        path = inside(folder, files[precision], "the ONNX file")
    except ModelFolderError as error:
        raise OnnxBackendError(f"{config}: {error}") from error
    if not path.is_file():
        return None
    if list(files.values()).count(files[precision]) > 1:
        raise OnnxBackendError(f"{config}: names {files[precision]} for more than one precision")
    if file_hash(path) != hashes.get(precision):
        raise OnnxBackendError(
            f"{path}: is not the {precision} export recorded in {ONNX_CONFIG} (its SHA-256 differs): another "
            "model's export or a changed file; export again with `python -m diplostance export-onnx "
            f"{folder} --overwrite`"
        )
    return path


def find_or_export(model_dir: Path, precision: str, cache_dir: str | Path | None = None) -> Path:
    """The ONNX file for `precision`: the model folder's own export, else the cache's, else a new one.

    A new export goes into `cache_dir/<weights hash>/` (never into the model folder, which
    may be read-only or shared), keyed by the hash so a retrained model is exported again.
    """
    source_hash = weights_hash(model_dir)
    found = usable_export(model_dir, source_hash, precision)
    if found:
        return found
    cached = Path(cache_dir or default_cache_dir()) / source_hash
    found = usable_export(cached, source_hash, precision)
    if found:
        return found
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        export_onnx(model_dir, cached, int8=precision == "int8", overwrite=True)  # the cache is ours to replace
    except OSError as error:
        raise OnnxBackendError(f"{cached}: the ONNX export cannot be written: {error}") from error
    return cached / ONNX_FILES[precision]


def check_export(path: Path, session, labels: LabelSpace, precision: str) -> None:
    """The graph gives one logit per label of the folder, and an int8 file is a quantised graph."""
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if "logits" not in outputs:
        raise OnnxBackendError(f"{path}: has no 'logits' output (outputs: {sorted(outputs)}): not a diplostance export")
    width = (outputs["logits"] or [None])[-1]
    if width != labels.num_labels:
        raise OnnxBackendError(
            f"{path}: gives {width} logits per sentence, but the model folder has {labels.num_labels} labels: "
            "the export belongs to another model"
        )
    if precision == "int8":
        import onnx

        ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
        if not ops & QUANTISED_OPS:
            raise OnnxBackendError(f"{path}: precision=int8, but the file holds no quantised operator (an fp32 graph)")


def check_options(precision: str = "fp32", device: str | None = None, **options) -> None:
    """Refuse, before any work, what ONNX Runtime does not run here: a precision other than fp32/int8, a GPU."""
    if precision not in ONNX_PRECISIONS:
        raise OnnxBackendError(
            f"precision={precision} is not available with backend=onnx; use one of {list(ONNX_PRECISIONS)}"
        )
    if str(device or "cpu") not in ("cpu", "auto"):
        raise OnnxBackendError(f"backend=onnx runs on the CPU (device={device}); use device=cpu")


def load(model_dir: Path, config: dict, **options) -> OnnxPredictor:
    return OnnxPredictor(model_dir, **options)


def make_session(path: Path, num_threads: int | None = None):
    """A CPU session of `path`: `num_threads` intra-op threads (None or 0: one per physical core), one
    inter-op thread, every graph optimisation; an unreadable file is an OnnxBackendError naming it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, ...: an unreadable graph
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OnnxBackendError(f"{path}: not a usable ONNX model ({reason})") from error


@dataclass
class OnnxPredictor:
    """ONNX Runtime predictor with TransformerPredictor's interface and sentence pipeline."""

    model_dir: Path
    precision: str = "fp32"
    batch_size: int = 16
    max_length: int = 128
    num_threads: int | None = None
    cache_dir: str | Path | None = None
    device: str | None = None
    onnx_file: str | Path | None = None  # a specific export (benchmarks); default: find_or_export

    def __post_init__(self):
        from transformers import AutoConfig, AutoTokenizer

        check_options(self.precision, self.device)
        self.model_dir = Path(self.model_dir)
        self.normalization = TextNormalization.load(self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.labels = LabelSpace.from_id2label(AutoConfig.from_pretrained(self.model_dir).id2label)
        self.onnx_path = Path(self.onnx_file or find_or_export(self.model_dir, self.precision, self.cache_dir))
        self.session = make_session(self.onnx_path, self.num_threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        check_export(self.onnx_path, self.session, self.labels, self.precision)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_texts(self.tokenizer, texts, self.normalization, self.max_length)["input_ids"]

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.labels.num_labels), dtype=np.float32)
        if not texts:
            return out
        ids = self.encode(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="np")
            feed = {name: inputs[name].astype(np.int64) for name in self.input_names if name in inputs}
            for name in set(self.input_names) - set(feed):  # e.g. token_type_ids when pad() leaves them out
                feed[name] = np.zeros_like(feed["input_ids"])
            out[batch] = self.session.run(["logits"], feed)[0]
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        n_targets, n_pol = len(self.labels.targets), len(self.labels.polarities)
        logits = self.predict_logits(texts).reshape(len(texts), n_targets, n_pol)
        logits = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        return (probs / probs.sum(axis=-1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# The embedding kind's frozen encoder (multilingual-e5-small) on ONNX Runtime, and the int8 -> fp32 cascade
# ---------------------------------------------------------------------------------------------------------------

ENCODER_FORMAT = "diplostance-onnx-encoder/1"
ENCODER_FILES = {"fp32": "encoder.onnx", "int8": "encoder.int8.onnx"}
ENCODER_CACHE_SUBDIR = "encoders"
# The fusions kept for the encoder: BiasGelu and LayerNormalization. ORT's SkipLayerNormalization CPU kernel
# (scalar loops) took a fifth of the int8 encoder's time on e5-small; Add + LayerNormalization ran the int8
# graph 17% faster (fp32 8%). Without it the Attention fusion does not apply either: the attention is plain
# MatMul/Softmax, and its Q, K and V projections are three MatMuls that the int8 pass quantises.
ENCODER_FUSIONS = {"enable_skip_layer_norm": False, "enable_attention": False, "enable_embed_layer_norm": False}
# int8: every MatMul with a weight (Q, K, V, attention output, the two feed-forward layers), u8 activations
# quantised per batch, s8 weights with one scale per output column (per-channel: the stances of 97.7% of the
# news sentences kept against 94.4% with one scale per matrix, at the same speed).
ENCODER_INT8_OPS = ("MatMul",)
# Composed sentences (not real text) the export is checked on: the fp32 graph gives the torch encoder's
# features within CHECK_TOLERANCE, batched together so that padding is exercised.
CHECK_SENTENCES = (
    "يدعو الوفد إلى اتفاقية ملزمة تحت رعاية الأمم المتحدة لمكافحة الجرائم الإلكترونية.",
    "عقد الاجتماع في جنيف.",
    "The delegation said existing international law is enough and no new treaty is needed.",
    "أكد الجانبان أهمية قناة اتصال مباشرة بين فريقي الاستجابة للحوادث الحاسوبية في البلدين وتبادل الضمانات بينهما.",
)
CHECK_TOLERANCE = 1e-4
# The cascade's margin is chosen on composed sentences of the shipped corpus outside the news register (the
# news-register files are what benchmarks/e5_backends.py labels), for each model, and kept in the export.
CALIBRATION_GLOB = "batch_*.jsonl"
CALIBRATION_SENTENCES = 800
MARGIN_SAFETY = 1.25  # the margin: the largest int8 decision gap among the calibration flips, times this


def encoder_export_key(encoder_dir: Path, layers: Sequence[int]) -> tuple[str, str]:
    """(SHA-256 of the encoder's weights, the export's key: those weights, the layers and the format)."""
    source = weights_hash(encoder_dir)
    key = hashlib.sha256(json.dumps([ENCODER_FORMAT, source, [int(x) for x in layers]]).encode()).hexdigest()
    return source, key


def _export_encoder_torch(encoder_dir: Path, path: Path, layers: Sequence[int], opset: int):
    """torch.onnx export of SentenceEncoder.pooled (the mean-pooled, L2-normalised, concatenated layers) with
    dynamic batch and sequence axes; returns the encoder's config, its tokenizer and its torch features of
    CHECK_SENTENCES (the reference the exported graph is checked against)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    model = AutoModel.from_pretrained(encoder_dir, add_pooling_layer=False, attn_implementation="eager").eval()
    encoder = SentenceEncoder(tokenizer, model, layers=layers)

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return encoder.pooled(input_ids, attention_mask)

    reference = encoder.encode(list(CHECK_SENTENCES))
    sample = tokenizer([f"query: {t}" for t in CHECK_SENTENCES[:2]], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes; the export is checked against torch below
        torch.onnx.export(
            Features().eval(),  # the exporter restores the module's mode afterwards: train() would enable dropout
            (sample["input_ids"], sample["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return model.config, tokenizer, reference


def export_encoder(
    encoder_dir: str | Path,
    out_dir: str | Path,
    layers: Sequence[int] = (-1,),
    int8: bool = True,
    int8_scheme: str = "auto",
    opset: int = OPSET,
    overwrite: bool = False,
) -> dict:
    """Export an embedding model's encoder folder (`encoder/`) to ONNX: `encoder.onnx` (fp32) and, with
    `int8`, `encoder.int8.onnx`, each taking input_ids and attention_mask and giving the sentence features
    (pooling and normalisation in the graph); `onnx_config.json` last, with the files' SHA-256 and the
    check of both graphs against the torch encoder on CHECK_SENTENCES. Written in a temporary folder in
    `out_dir` and moved into place, as export_onnx does."""
    encoder_dir, out_dir = Path(encoder_dir), Path(out_dir)
    outputs = [ENCODER_FILES["fp32"], *([ENCODER_FILES["int8"]] if int8 else []), ONNX_CONFIG]
    _check_outputs(encoder_dir, out_dir, outputs, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    extensions = cpu_extensions()
    scheme = int8_scheme_for(extensions) if int8_scheme == "auto" else int8_scheme
    if int8 and scheme not in INT8_SCHEMES:
        raise OnnxBackendError(f"int8_scheme must be 'auto' or one of {list(INT8_SCHEMES)}, got {int8_scheme!r}")
    source_hash = weights_hash(encoder_dir)
    layers = [int(x) for x in layers]
    with _export_lock(out_dir), tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIX, dir=out_dir) as tmp:
        tmp = Path(tmp)
        config, tokenizer, reference = _export_encoder_torch(encoder_dir, tmp / "raw.onnx", layers, opset)
        from onnxruntime.transformers.fusion_options import FusionOptions

        fusion_options = FusionOptions("bert")
        for name, value in ENCODER_FUSIONS.items():
            setattr(fusion_options, name, value)
        fused = _optimize(tmp / "raw.onnx", tmp / ENCODER_FILES["fp32"], config, fusion_options)
        (tmp / "raw.onnx").unlink()
        files = {"fp32": ENCODER_FILES["fp32"]}
        if int8:
            quantize_int8(
                tmp / ENCODER_FILES["fp32"],
                tmp / ENCODER_FILES["int8"],
                scheme,
                op_types=ENCODER_INT8_OPS,
                per_channel=True,
            )
            files["int8"] = ENCODER_FILES["int8"]
        dimension = len(layers) * config.hidden_size
        check = check_encoder_files(tmp, files, tokenizer, reference, layers, dimension)
        description = {
            "format": ENCODER_FORMAT,
            "source_weights_sha256": source_hash,
            "layers": layers,
            "dimension": dimension,
            "opset": opset,
            "exporter": "torch.onnx (TorchScript, dynamo=False), eager attention; SentenceEncoder.pooled",
            "inputs": ["input_ids", "attention_mask"],
            "dynamic_axes": ["batch", "sequence"],
            "files": files,
            "sha256": {precision: file_hash(tmp / name) for precision, name in files.items()},
            "fused_operators": fused,
            "int8": (
                {"scheme": scheme, "ops": list(ENCODER_INT8_OPS), "per_channel": True, "nodes_to_exclude": []}
                if int8
                else None
            ),
            "check": check,
            "cascade": {},
            "cpu_extensions": list(extensions),
            "versions": _versions(),
        }
        (tmp / ONNX_CONFIG).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        (out_dir / ONNX_CONFIG).unlink(missing_ok=True)  # the old description goes first: no stale pairing
        for name in files.values():
            os.replace(tmp / name, out_dir / name)
        os.replace(tmp / ONNX_CONFIG, out_dir / ONNX_CONFIG)
    return description


def quantised_ops(path: Path) -> set[str]:
    """The operators of `path` that only a dynamically quantised graph holds."""
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node} & QUANTISED_OPS


def check_encoder_files(
    folder: Path, files: dict, tokenizer, reference: np.ndarray, layers: Sequence[int], dimension: int
) -> dict:
    """The fp32 graph gives the torch features of CHECK_SENTENCES within CHECK_TOLERANCE, and the int8 graph
    holds quantised operators; returns what was measured (the int8 graph's worst cosine to torch)."""
    check = {"sentences": len(CHECK_SENTENCES), "tolerance": CHECK_TOLERANCE}
    for precision, name in files.items():
        encoder = OnnxSentenceEncoder(tokenizer, make_session(folder / name, 1), layers=layers, dimension=dimension)
        got = encoder.encode(list(CHECK_SENTENCES))
        if precision == "fp32":
            difference = float(np.abs(got - reference).max())
            if not difference <= CHECK_TOLERANCE:
                raise OnnxBackendError(
                    f"{folder / name}: its features differ from the torch encoder's by {difference:.2e} "
                    f"(more than {CHECK_TOLERANCE}) on the check sentences: the export is wrong"
                )
            check["fp32_max_abs_difference"] = difference
        else:
            ops = quantised_ops(folder / name)
            if not ops:
                raise OnnxBackendError(f"{folder / name}: the int8 export holds no quantised operator")
            check["int8_quantised_ops"] = sorted(ops)
            check["int8_min_cosine"] = round(float((got * reference).sum(-1).min() / len(encoder.layers)), 6)
    return check


def encoder_export_problem(folder: Path, source_hash: str, layers: Sequence[int]) -> str | None:
    """None when `folder` holds a whole export of these weights and layers (fp32 and int8, each the file
    its description records); else why not ("missing" when there is none at all)."""
    description = read_onnx_config(folder)
    if description is None:
        return "missing"
    if not isinstance(description, dict) or description.get("format") != ENCODER_FORMAT:
        return f"{ONNX_CONFIG} is not an encoder export of this version"
    if description.get("source_weights_sha256") != source_hash or description.get("layers") != list(layers):
        return f"{ONNX_CONFIG} describes another encoder"
    files, hashes = description.get("files"), description.get("sha256")
    if not isinstance(files, dict) or not isinstance(hashes, dict) or set(files) != set(ENCODER_FILES):
        return f"{ONNX_CONFIG} does not list both precisions"
    for precision, name in files.items():
        try:
            path = inside(folder, name, "the ONNX file")
        except ModelFolderError:
            return f"{ONNX_CONFIG} names a file outside the folder"
        if not path.is_file():
            return f"{name} is missing"
        if file_hash(path) != hashes.get(precision):
            return f"{name} is not the {precision} file recorded in {ONNX_CONFIG} (its SHA-256 differs)"
    return None


class _key_lock:
    """An exclusive lock on `path` (a lock file): one process exports or calibrates a cache entry at a time
    (Ray actors start together); the others wait, then find the export made."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def find_or_export_encoder(encoder_dir: Path, layers: Sequence[int], cache_dir: str | Path | None = None) -> Path:
    """The folder of the encoder's export for these layers, `<cache>/encoders/<key>/`: exported on first use,
    and exported again (with a note on stderr) when a file is damaged, swapped or missing. Every entry is
    the cache's own, keyed by the weights, so models sharing an encoder (an ensemble's member and the same
    member trained alone) share it."""
    source, key = encoder_export_key(encoder_dir, layers)
    folder = Path(cache_dir or default_cache_dir()) / ENCODER_CACHE_SUBDIR / key
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _key_lock(folder.parent / f"{key}.lock"):
            problem = encoder_export_problem(folder, source, layers)
            if problem is None:
                return folder
            if problem != "missing":
                print(f"{folder}: {problem}; exporting the encoder again", file=sys.stderr)
            export_encoder(encoder_dir, folder, layers, int8=True, overwrite=True)
    except OSError as error:
        raise OnnxBackendError(f"{folder}: the encoder's ONNX export cannot be written: {error}") from error
    return folder


@dataclass
class OnnxSentenceEncoder:
    """SentenceEncoder's interface (encode, dimension, prefix, layers, max_length) on an ONNX Runtime session
    of an export_encoder graph; the same tokenisation, length-sorted batches and progress bar."""

    tokenizer: object
    session: object
    prefix: str = "query: "
    layers: Sequence[int] = (-1,)
    max_length: int = 128
    batch_size: int = 16
    dimension: int = 384

    def encode(self, texts: Sequence[str]) -> np.ndarray:

        def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            return self.session.run(["embedding"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]

        return encode_batches(self, texts, forward)


class EmbeddingOnnxPredictor:
    """The embedding kind (`backend=onnx`) with its encoder on ONNX Runtime: `precision=fp32` gives the torch
    features within 1e-4 (and its stances), `int8` the dynamically quantised graph, whose sentences close to
    a decision boundary the top-level model runs again in fp32 (`exact_proba`, see CascadePredictor)."""

    approximate_precisions = ("int8",)

    def __init__(
        self,
        model_dir: Path,
        precision: str = "fp32",
        batch_size: int | None = None,
        max_length: int | None = None,
        num_threads: int | None = None,
        device: str | None = None,
        cache_dir: str | Path | None = None,
    ):
        from transformers import AutoTokenizer

        check_options(precision, device)
        self.model_dir, self.precision, self.num_threads = Path(model_dir), precision, num_threads
        self.normalization = TextNormalization.load(self.model_dir)
        self.model, options = EmbeddingStanceModel.load(self.model_dir)
        self.labels = self.model.labels
        self.encoder_dir = self.model_dir / ENCODER_SUBDIR
        self.export_dir = find_or_export_encoder(self.encoder_dir, options["layers"], cache_dir)
        self.description = read_onnx_config(self.export_dir) or {}
        self.options = {
            "prefix": options["prefix"],
            "layers": tuple(int(x) for x in options["layers"]),
            "max_length": int(max_length or options["max_length"]),
            "batch_size": batch_size or CPU_BATCH_SIZE,
            "dimension": int(self.description["dimension"]),
        }
        self.tokenizer = AutoTokenizer.from_pretrained(self.encoder_dir)
        self.encoders: dict[str, OnnxSentenceEncoder] = {}
        self.encoder = self.encoder_for(precision)

    def encoder_for(self, precision: str) -> OnnxSentenceEncoder:
        """The encoder of `precision`, its session made on first use (fp32 beside int8: for the cascade)."""
        if precision not in self.encoders:
            path = self.export_dir / ENCODER_FILES[precision]
            session = make_session(path, self.num_threads)
            if precision == "int8" and not quantised_ops(path):
                raise OnnxBackendError(f"{path}: precision=int8, but the file holds no quantised operator")
            self.encoders[precision] = OnnxSentenceEncoder(self.tokenizer, session, **self.options)
        return self.encoders[precision]

    @property
    def approximate(self) -> bool:
        return self.precision in self.approximate_precisions

    @property
    def max_length(self) -> int:
        return self.options["max_length"]

    @property
    def runs_on(self) -> str:
        if self.precision == "fp32":
            return "ONNX Runtime fp32"
        scheme = (self.description.get("int8") or {}).get("scheme", "?")
        return f"ONNX Runtime int8 ({scheme}, per-channel weights)"

    def features(self, texts: Sequence[str], precision: str | None = None) -> np.ndarray:

        encoder = self.encoder_for(precision or self.precision)
        key = memo_key(self.encoder_dir, f"onnx-{precision or self.precision}", encoder)
        return memoised_features(key, [normalize(t, self.normalization) for t in texts], encoder)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba(self.features(texts)).astype(np.float32)

    def exact_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The fp32 graph's probabilities (the cascade's second pass)."""
        return self.model.predict_proba(self.features(texts, "fp32")).astype(np.float32)

    def token_facts(self, texts: Sequence[str]) -> np.ndarray:

        prefixed = [self.options["prefix"] + normalize(t, self.normalization) for t in texts]
        return tokenizer_facts(self.tokenizer, prefixed, self.max_length)


def load_embedding(model_dir: Path, config: dict, **options) -> EmbeddingOnnxPredictor:
    return EmbeddingOnnxPredictor(model_dir, **options)


class embedding_backend:  # stands in the registry as a kind module (predictors.BACKEND_MODULES)
    """The embedding kind on ONNX Runtime: the registry's interface for ("embedding", "onnx")."""

    check_options = staticmethod(check_options)
    load = staticmethod(load_embedding)


def decision_gaps(probs: np.ndarray) -> np.ndarray:
    """(n, targets): per sentence and target, the best polarity's probability minus the runner-up's."""
    top = np.sort(probs, axis=-1)
    return top[..., -1] - top[..., -2]


def approximate_members(predictor) -> list:
    """The predictor itself or its members (an ensemble) that run an approximate (int8) encoder."""
    members = getattr(predictor, "members", [predictor])
    return [m for m in members if getattr(m, "approximate", False)]


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over what decides a model folder's stances besides its encoders' weights (which key the
    exports): every file's path and bytes, without `encoder/` folders, ONNX files and their descriptions."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(model_dir)
        if "encoder" in relative.parts[:-1] or path.suffix == ".onnx" or path.name in (ONNX_CONFIG, "README.md"):
            continue
        digest.update(str(relative).encode() + b"\0" + file_hash(path).encode())
    return digest.hexdigest()


def calibration_texts(corpus: Path | None = None, limit: int = CALIBRATION_SENTENCES) -> tuple[list[str], str]:
    """Composed sentences of the shipped corpus outside the news register (annotations/corpus/batch_*.jsonl),
    evenly spread, at most `limit`; and where they come from."""
    corpus = corpus or Path(__file__).resolve().parents[2] / "annotations" / "corpus"
    texts = []
    for path in sorted(corpus.glob(CALIBRATION_GLOB)):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else {}
            if isinstance(record, dict) and record.get("source") == "composed" and record.get("text"):
                texts.append(record["text"])
    if len(texts) < 100:
        raise OnnxBackendError(
            f"{corpus}: precision=int8 chooses its cascade margin on the composed sentences of "
            f"{CALIBRATION_GLOB} and found {len(texts)} (at least 100 needed); use precision=fp32"
        )
    step = max(1, -(-len(texts) // limit))
    return texts[::step], f"{len(texts[::step])} composed sentences of {corpus.name}/{CALIBRATION_GLOB}"


def choose_margin(fast: np.ndarray, exact: np.ndarray) -> dict:
    """The cascade's margin from a calibration set's int8 and fp32 probabilities: the largest int8 decision
    gap among the (sentence, target) pairs whose stance int8 changed, times MARGIN_SAFETY (0 when none
    changed); with what it was chosen on and what it sends to fp32 there."""
    gaps = decision_gaps(fast)
    flipped = fast.argmax(-1) != exact.argmax(-1)
    margin = float(gaps[flipped].max()) * MARGIN_SAFETY if flipped.any() else 0.0
    return {
        "margin": round(margin, 6),
        "sentences": len(fast),
        "sentences_changed_by_int8": int(flipped.any(-1).sum()),
        "share_run_again_in_fp32": round(float((gaps.min(-1) < margin).mean()), 4),
        "rule": f"largest int8 decision gap among the changed stances x {MARGIN_SAFETY}",
    }


def cascade_margin(predictor, model_dir: Path, cache: dict | None = None) -> dict:
    """The margin for this model (fingerprint) from the export of its first int8 member, chosen on the
    calibration sentences and recorded there on first use (under the export's lock)."""
    member = approximate_members(predictor)[0]
    folder = member.export_dir
    fingerprint = model_fingerprint(model_dir)
    recorded = (read_onnx_config(folder) or {}).get("cascade", {}).get(fingerprint)
    if isinstance(recorded, dict) and isinstance(recorded.get("margin"), int | float):
        return recorded
    with _key_lock(folder.parent / f"{folder.name}.lock"):
        description = read_onnx_config(folder) or {}
        recorded = description.get("cascade", {}).get(fingerprint)
        if isinstance(recorded, dict) and isinstance(recorded.get("margin"), int | float):
            return recorded
        texts, source = calibration_texts()
        print(f"int8 cascade: choosing the margin of {model_dir} on {source} (once per model)", file=sys.stderr)
        chosen = {**choose_margin(predictor.predict_proba(texts), predictor.exact_proba(texts)), "chosen_on": source}
        description.setdefault("cascade", {})[fingerprint] = {**chosen, "model_dir": str(model_dir)}
        tmp = folder / (ONNX_CONFIG + ".tmp")
        tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / ONNX_CONFIG)  # atomic: a reader sees the old description or the new one
    return chosen


class CascadePredictor:
    """An int8 model whose decisions close to a boundary are made again in fp32: every sentence with a
    target whose best two polarities are within `margin` of each other (int8 probabilities) gets the
    model's `exact_proba`. `sentences` and `run_again` count what it has seen and sent to fp32."""

    def __init__(self, predictor, margin: dict):
        self.predictor, self.calibration = predictor, margin
        self.margin = float(margin["margin"])
        self.labels, self.normalization = predictor.labels, predictor.normalization
        self.sentences = self.run_again = 0

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        probs = np.array(self.predictor.predict_proba(texts), dtype=np.float32)
        close = np.flatnonzero(decision_gaps(probs).min(-1) < self.margin) if len(texts) else []
        if len(close):
            probs[close] = self.predictor.exact_proba([texts[i] for i in close])
        self.sentences += len(texts)
        self.run_again += len(close)
        return probs

    def token_facts(self, texts: Sequence[str]):

        return predictor_token_facts(self.predictor, list(texts))

    @property
    def members(self) -> list:
        return getattr(self.predictor, "members", [self.predictor])


def with_cascade(predictor, model_dir: Path) -> CascadePredictor:
    return CascadePredictor(predictor, cascade_margin(predictor, Path(model_dir)))


def runs_on(predictor) -> str:
    """What a loaded (member) predictor computes with, in words."""

    if hasattr(predictor, "runs_on"):
        return predictor.runs_on
    if isinstance(predictor, tfidf.TfidfPredictor):
        return "numpy (tf-idf has no encoder: backend and precision do not apply)"
    if isinstance(predictor, OnnxPredictor):
        return f"ONNX Runtime {predictor.precision}"
    precision, device = getattr(predictor, "precision", "?"), getattr(predictor, "device", "cpu")
    legacy = " (torch.ao dynamic quantisation, legacy)" if precision == "int8" else ""
    return f"torch {precision} on {device}{legacy}"


def backend_line(predictor, model_dir: Path, backend: str, precision: str, num_threads: int | None) -> str:
    """One line: what each member of the loaded model runs on, the cascade, the threads."""
    inner = predictor.predictor if isinstance(predictor, CascadePredictor) else predictor
    names = getattr(inner, "member_names", None)
    if hasattr(inner, "members"):
        names = names or [f"member {i + 1}" for i in range(len(inner.members))]
        parts = [f"{name}: {runs_on(member)}" for name, member in zip(names, inner.members, strict=True)]
        what = "ensemble of " + "; ".join(parts)
    else:
        what = runs_on(inner)
    line = f"{Path(model_dir).name or model_dir} (backend={backend} precision={precision}): {what}"
    if isinstance(predictor, CascadePredictor):
        line += (
            f"; int8 decisions within {predictor.margin:.3g} of a boundary run again in fp32 (margin chosen on "
            f"{predictor.calibration.get('chosen_on', 'calibration sentences')})"
        )
    return line + (f"; {num_threads} thread(s)" if num_threads else "")
