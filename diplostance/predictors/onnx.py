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

from diplostance.errors import UserError
from diplostance.modeling import encode_texts
from diplostance.outputs import user_cache_dir
from diplostance.predictors import transformer
from diplostance.predictors.folder import ModelFolderError, inside, read_json
from diplostance.predictors.transformer import WEIGHT_FILES
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization

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


def _optimize(raw: Path, out: Path, config) -> dict[str, int]:
    """ORT's transformer optimizer (its Python fusions, no hardware-specific graph); fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw),
        model_type="bert",  # the encoder fusions; they fit BERT, RoBERTa and XLM-R (the project's models)
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    optimized.save_model_to_file(str(out))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def quantize_int8(fp32: Path, out: Path, scheme: str, nodes_to_exclude: Sequence[str] = ()) -> None:
    """Dynamic int8 of the MatMul and Attention weights (activations quantised per batch at run time)."""
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
            op_types_to_quantize=["MatMul", "Attention"],
            weight_type=QuantType.QUInt8 if scheme == "u8u8" else QuantType.QInt8,
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
        import onnxruntime as ort
        from transformers import AutoConfig, AutoTokenizer

        check_options(self.precision, self.device)
        self.model_dir = Path(self.model_dir)
        self.normalization = TextNormalization.load(self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.labels = LabelSpace.from_id2label(AutoConfig.from_pretrained(self.model_dir).id2label)
        self.onnx_path = Path(self.onnx_file or find_or_export(self.model_dir, self.precision, self.cache_dir))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads or 0  # 0: one thread per physical core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, ...: an unreadable graph
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise OnnxBackendError(f"{self.onnx_path}: not a usable ONNX model ({reason})") from error
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
