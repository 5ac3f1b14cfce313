"""What a labelling run is given (options, output locations) and what it returns (counts, summary)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from diplostance.errors import UserError
from diplostance.predictors import PRECISIONS
from diplostance.text import MAX_SENTENCE_CHARS

FORMAT_SUFFIXES = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
ENGINES = ("local", "ray")
UNKNOWN_PIECES_WARN = 0.05  # a share of <unk> word pieces above this is warned about
USAGE = "python scripts/label.py model_dir=RUN/model inputs=[articles/,more.jsonl] output=OUT.jsonl"


class LabellingError(UserError, ValueError):
    """A problem with the run's options or output location, reported before any labelling."""


class OutputExistsError(LabellingError):
    """The finished output is already there and `overwrite` is off."""


def is_uri(path: str | Path) -> bool:
    """A pyarrow filesystem URI (s3://, gs://, file://, ...) rather than a local path."""
    return "://" in str(path)


@dataclass(frozen=True)
class OutputPaths:
    records: Path  # OUT.jsonl, or OUT.csv / OUT.parquet
    docs: Path  # OUT.docs.jsonl
    errors: Path  # OUT.errors.jsonl
    work: Path  # OUT.partial/: the run in progress
    format: str
    folder: str = ""  # engine=ray: OUT/, the folder of committed parts (a local path or a URI)

    @property
    def finals(self) -> tuple[Path, Path, Path]:
        return self.records, self.docs, self.errors

    @property
    def all(self) -> tuple[Path, ...]:
        """Every path a local run writes: the finals and the work folder."""
        return *self.finals, self.work


def output_paths(path: str | Path, fmt: str | None = None) -> OutputPaths:
    """Where a run writes. `fmt` None takes the format from the suffix (default jsonl);
    an explicit format replaces the suffix (OUT.jsonl + csv -> OUT.csv)."""
    given = str(path)
    path = Path(path)
    if not is_uri(given) and (path.is_dir() or given.endswith(os.sep)):
        raise LabellingError(f"output={path} is a folder; give a file path such as OUT.jsonl")
    by_suffix = {suffix: name for name, suffix in FORMAT_SUFFIXES.items()}
    suffix = path.suffix.lower()
    fmt = fmt or by_suffix.get(suffix, "jsonl")
    if fmt not in FORMAT_SUFFIXES:
        raise LabellingError(f"output.format must be one of {list(FORMAT_SUFFIXES)}, got {fmt!r}")
    stem = path.with_suffix("") if suffix in by_suffix else path
    records, docs, errors, work = (
        stem.with_name(stem.name + tail) for tail in (FORMAT_SUFFIXES[fmt], ".docs.jsonl", ".errors.jsonl", ".partial")
    )
    folder = given[: -len(path.suffix)] if suffix in by_suffix else given  # string arithmetic keeps s3:// intact
    return OutputPaths(records, docs, errors, work, fmt, folder)


@dataclass(frozen=True)
class RayOptions:
    """engine=ray: where Ray runs and how the pool of predicting actors is shaped."""

    address: str | None = None  # auto | ray://HEAD:10001 | null: start a local runtime
    num_cpus: int | None = None  # CPUs of the local runtime; null: the machine's cores
    concurrency: int = 1  # predicting actors; each loads the model once
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0  # 1 puts each actor on its own GPU
    articles_per_part: int = 1000  # a large input file is cut into parts of this many articles

    def check(self) -> None:
        for key in ("concurrency", "articles_per_part"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise LabellingError(f"ray.{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.num_cpus is not None and (not isinstance(self.num_cpus, int) or self.num_cpus < 1):
            raise LabellingError(f"ray.num_cpus must be a positive integer or null, got {self.num_cpus!r}")
        for key in ("num_cpus_per_actor", "num_gpus_per_actor"):
            if not isinstance(getattr(self, key), int | float) or getattr(self, key) < 0:
                raise LabellingError(f"ray.{key} must be a number >= 0, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class LabelOptions:
    model_dir: Path
    inputs: tuple[str, ...]
    output: OutputPaths
    jsonl_id_field: str = "id"
    jsonl_text_field: str = "text"
    window_sentences: int = 512
    backend: str = "torch"  # torch | onnx (diplostance.predictors.onnx)
    engine: str = "local"
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int | None = None  # None: the device's default (diplostance.devices.default_batch_size)
    max_length: int = 128
    num_threads: int | None = None
    prepare_workers: int | None = None  # processes splitting and tokenising; None: 0 on the CPU, up to 8 on a GPU
    allow_errors: bool = False
    overwrite: bool = False
    resume: bool = True
    progress_bar: bool = True
    ray: RayOptions = field(default_factory=RayOptions)

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig) -> LabelOptions:
        """Options from the composed `configs/label.yaml` (or a plain dict of the same shape)."""
        if isinstance(cfg, DictConfig):
            missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
            if missing:
                raise LabellingError(f"missing required option(s) {missing}; e.g. {USAGE}")
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = {k: v for k, v in cfg.items() if k != "hydra"}
        for key in ("model_dir", "inputs", "output"):
            if cfg.get(key) in (None, "", "???"):
                raise LabellingError(f"{key} is required; e.g. {USAGE}")
        output = cfg.pop("output")
        if isinstance(output, Mapping):  # `output.path` / `output.format`
            if output.get("path") in (None, "", "???"):
                raise LabellingError(f"output.path is required; e.g. {USAGE}")
            paths = output_paths(output["path"], output.get("format"))
        else:  # a plain `output: OUT.jsonl`
            paths = output_paths(output, cfg.pop("format", None))
        inputs = cfg.pop("inputs")
        inputs = (inputs,) if isinstance(inputs, str | Path) else tuple(str(i) for i in inputs)
        ray = cfg.pop("ray", None) or {}
        ray_keys = {f.name for f in dataclasses.fields(RayOptions)}
        if not isinstance(ray, Mapping) or set(ray) - ray_keys:
            raise LabellingError(f"unknown ray option(s) {sorted(set(ray) - ray_keys)}; known: {sorted(ray_keys)}")
        known = {f.name for f in dataclasses.fields(cls)} - {"inputs", "output", "ray"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise LabellingError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        options = cls(Path(cfg.pop("model_dir")), inputs, paths, **cfg, ray=RayOptions(**ray))
        options.check()
        return options

    def check(self) -> None:
        if not self.inputs:
            raise LabellingError("inputs is empty: give files, folders or glob patterns, e.g. inputs=[articles/]")
        if self.engine not in ENGINES:
            raise LabellingError(f"engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise LabellingError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for key in ("window_sentences", "max_length"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise LabellingError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.prepare_workers is not None and (not isinstance(self.prepare_workers, int) or self.prepare_workers < 0):
            raise LabellingError(f"prepare_workers must be an integer >= 0 or null, got {self.prepare_workers!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise LabellingError(f"batch_size must be a positive integer or null, got {self.batch_size!r}")
        if self.jsonl_id_field == self.jsonl_text_field:
            raise LabellingError("jsonl_id_field and jsonl_text_field must differ")
        if self.engine == "local" and is_uri(self.output.folder):
            raise LabellingError(f"engine=local writes local files; output={self.output.folder} needs engine=ray")
        self.ray.check()


def expand_output_shorthand(argv: Sequence[str]) -> list[str]:
    """Rewrite the override `output=OUT.jsonl` as `output.path=OUT.jsonl`.

    `output` is a mapping (path, format), and Hydra would replace the whole mapping with
    the string, so `output=OUT.jsonl output.format=csv` could not work as written.
    """
    rewritten = []
    for arg in argv:
        if arg.startswith("output=") and not arg[len("output=") :].lstrip().startswith(("{", "null")):
            arg = "output.path=" + arg[len("output=") :]
        rewritten.append(arg)
    return rewritten


@dataclass
class Counts:
    articles: int = 0
    sentences: int = 0
    failed: int = 0  # input files or lines that could not be labelled
    truncated: int = 0  # sentences labelled from their start: over max_length tokens or text.MAX_SENTENCE_CHARS
    pieces: int = 0  # word pieces the model read (0 for tf-idf, which reads none)
    unknown_pieces: int = 0  # of them, the tokenizer's unknown piece (<unk>): text the model cannot read

    @property
    def unknown_share(self) -> float:
        return self.unknown_pieces / self.pieces if self.pieces else 0.0

    def warnings(self) -> list[str]:
        """What the run warns about: sentences cut, and a large share of unknown word pieces."""
        out = []
        if self.truncated:
            out.append(
                f"{self.truncated} of {self.sentences} sentences are longer than the model reads (max_length tokens, "
                f"or {MAX_SENTENCE_CHARS} characters): each is labelled from its start"
            )
        if self.unknown_share > UNKNOWN_PIECES_WARN:
            out.append(
                f"{self.unknown_share:.1%} of the word pieces the model read ({self.unknown_pieces} of {self.pieces}) "
                "are <unk>: much of the text is in scripts the model's vocabulary does not hold (a vocabulary "
                "restricted to the training text's scripts, model.restrict_vocabulary), so its stances mean little"
            )
        return out


@dataclass
class LabelSummary:
    paths: OutputPaths
    counts: Counts
    sources: int
    seconds: float
    resumed: bool
    outputs: str = ""  # what the first printed line names; the three files of a local run by default

    @property
    def failed(self) -> bool:
        return self.counts.failed > 0

    def lines(self) -> list[str]:
        """What the command prints last: where the outputs are, then the counts."""
        errors = f", listed in {self.paths.errors}" if self.counts.failed and not self.outputs else ""
        outputs = self.outputs or f"{self.paths.records}, {self.paths.docs}, {self.paths.errors}"
        read = f", {self.counts.unknown_share:.1%} of their word pieces <unk>" if self.counts.pieces else ""
        return [
            f"outputs: {outputs}",
            f"truncated: {self.counts.truncated} sentence(s) longer than the model reads, labelled from their "
            f"start{read}",
            f"labelled {self.counts.articles} articles ({self.counts.sentences} sentences) from {self.sources} "
            f"input files in {self.seconds:.1f} s{' (resumed)' if self.resumed else ''}",
            f"failed: {self.counts.failed} input(s) (files or lines){errors}",
        ]
