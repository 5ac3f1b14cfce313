"""Fine-tuning with the HF Trainer and the tfidf baseline, behind one `train` entry.

A run writes into its directory: `model/` (a `save_pretrained` folder with tokenizer,
`id2label` like `un_treaty=favor`, `text_processing.json` and a model card),
`metrics.json`, `report.md`, `predictions.jsonl` and one confusion PNG per target.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from diplostance.baseline import TfidfStanceModel
from diplostance.data import StanceData, load_data
from diplostance.devices import check_training_device, load_aware_threads, trainer_feeding, trainer_precision
from diplostance.distributed import is_main_process
from diplostance.embedding import fit_embedding_model
from diplostance.ensemble import check_selection, fit_ensemble
from diplostance.errors import BadDataError, UserError
from diplostance.evaluation import evaluate_model
from diplostance.holders import fit_for_run, save_holders
from diplostance.modeling import (
    StanceLoss,
    build_tiny_model,
    class_weights_from_labels,
    encode_texts,
    load_pretrained,
    pretrain_masked_lm,
)
from diplostance.outputs import atomic_directory, atomic_write_text
from diplostance.pretrained import restrict_vocabulary
from diplostance.reports import per_label_table, summary_table
from diplostance.robust import apply_wise_ft, input_prefix, prepare_model, save_trained
from diplostance.schema import LabelSpace
from diplostance.scoring import stance_scores
from diplostance.text import TextNormalization, normalize

log = logging.getLogger(__name__)
MODEL_SUBDIR = "model"


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key."""


class TrainingError(BadDataError, ValueError):
    """Training ran but its result cannot be trusted (a NaN loss): no model is saved."""


def require_finite_losses(log_history: list[dict], train_rows: int) -> None:
    """Refuse a training whose loss became NaN or infinite, before its model is saved."""
    for entry in log_history:
        for key in ("loss", "eval_loss"):
            if key in entry and not np.isfinite(entry[key]):
                raise TrainingError(
                    f"training gave {key} {entry[key]} at epoch {entry.get('epoch')}: no model saved. With "
                    f"{train_rows} training sentence(s), the data is too small, or the dev split has polarities "
                    "the training split never has (see the warnings above)"
                )


def _tokenize(data: StanceData, tokenizer, normalization: TextNormalization, max_length: int, prefix: str = ""):
    def encode(batch):
        encoded = encode_texts(tokenizer, batch["text"], normalization, max_length, prefix)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    keep = {"labels"}
    return data.splits.map(
        encode, batched=True, remove_columns=[c for c in data.splits["train"].column_names if c not in keep]
    )


def _metrics_fn(labels: LabelSpace):
    n_targets, n_pol = len(labels.targets), len(labels.polarities)

    def compute_metrics(eval_pred) -> dict:
        logits, refs = eval_pred.predictions, eval_pred.label_ids
        preds = np.asarray(logits).reshape(len(logits), n_targets, n_pol).argmax(-1)
        scores = stance_scores(preds, refs, labels.targets, labels.polarities)
        flat = {"macro_f_avg": scores["macro_f_avg"], "macro_f1": scores["macro_f1"]}
        flat.update({f"f_avg_{t}": s["f_avg"] for t, s in scores["targets"].items()})
        return flat

    return compute_metrics


def padding_share(dataloader) -> float:
    """Share of padding positions over every batch the dataloader yields (one epoch)."""
    padded = total = 0
    for batch in dataloader:
        mask = batch["attention_mask"]
        padded += int((mask == 0).sum())
        total += mask.numel()
    return padded / total if total else 0.0


def _save_only_model(t) -> bool:
    if t.get("save_only_model", False) and t.resume:
        raise ConfigError("training.resume=true needs checkpoints with the optimizer: training.save_only_model=false")
    return bool(t.get("save_only_model", False))


def _training_arguments(cfg: DictConfig, out_dir: Path, has_dev: bool) -> TrainingArguments:
    t = cfg.training
    report_to = t.report_to if isinstance(t.report_to, str) else list(t.report_to)
    return TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a share of the total steps
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        # training.eval_steps: evaluate (and checkpoint) every N optimizer steps instead of every epoch
        eval_strategy=("steps" if t.get("eval_steps") else "epoch") if has_dev else "no",
        eval_steps=t.get("eval_steps"),
        save_strategy="steps" if t.get("eval_steps") else "epoch",
        save_steps=t.get("eval_steps") or 500,
        save_only_model=_save_only_model(t),  # no optimizer state in checkpoints: less to write each epoch
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_dev,
        metric_for_best_model="macro_f_avg",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        seed=cfg.seed,
        data_seed=cfg.seed,
        full_determinism=t.full_determinism,
        use_cpu=bool(t.use_cpu) or not torch.cuda.is_available(),  # the Trainer wants it for bf16 on a CPU-only machine
        **trainer_precision(t.get("precision", "fp32"), t.use_cpu),  # bf16=/fp16= mixed precision
        activation_checkpointing=bool(t.get("gradient_checkpointing", False)),  # gradient checkpointing
        report_to=report_to,
        disable_tqdm=not t.progress_bar,
        **trainer_feeding(t, t.use_cpu),  # data-loader workers, pinned memory, tf32, torch.compile
    )


def build_trainer(cfg: DictConfig, data: StanceData, normalization: TextNormalization, run_dir: Path) -> Trainer:
    """The configured model, tokenised data and HF Trainer, ready to train."""
    m, t = cfg.model, cfg.training
    if "dev" not in data.splits:
        raise ConfigError("training needs a dev split for early stopping: add data.dev or set data.dev_fraction > 0")
    pretraining, fine_tuning, start_head, prefix = {}, {}, None, ""
    if m.kind == "tiny":
        # Unlabelled text for the vocabulary and the MLM pre-training: never the split being evaluated.
        text_splits = ["train", *(["dev"] if m.get("unlabelled_text", "train") == "train_dev" else [])]
        texts = [normalize(x, normalization) for name in text_splits for x in data.splits[name]["text"]]
        tokenizer, model = build_tiny_model(texts, data.labels, m, cfg.seed)
        if m.get("mlm") and m.mlm.get("epochs"):
            use_cpu = bool(t.use_cpu) or not torch.cuda.is_available()
            pretraining = pretrain_masked_lm(model, tokenizer, texts, m.mlm, cfg.seed, run_dir / "mlm", use_cpu)
    elif m.kind == "pretrained":
        tokenizer, model = load_pretrained(m.name_or_path, data.labels, m.get("revision"), m.trust_remote_code)
        if m.get("restrict_vocabulary"):  # lossless for text in the training text's Unicode pages
            texts = [normalize(x, normalization) for x in data.splits["train"]["text"]]
            held_out = [
                normalize(x, normalization) for s in ("dev", "test") if s in data.splits for x in data.splits[s]["text"]
            ]
            model, tokenizer = restrict_vocabulary(
                model, tokenizer, texts, held_out, data.warnings, "model.restrict_vocabulary"
            )
        if m.get("freeze_embeddings"):
            for parameter in model.get_input_embeddings().parameters():
                parameter.requires_grad_(False)
        # model.pooling, lp_ft, freeze_layers (diplostance.robust); mean pooling reads `model.prefix` + text
        model, fine_tuning, start_head = prepare_model(model, tokenizer, m, data, normalization, t.max_length)
        prefix = input_prefix(m)
    else:
        raise ConfigError(f"model.kind must be 'tiny', 'pretrained', 'tfidf' or 'embedding', got {m.kind!r}")
    encoded = _tokenize(data, tokenizer, normalization, t.max_length, prefix)
    weights = class_weights_from_labels(data.splits["train"]["labels"], data.labels) if t.class_weights else None
    trainer = Trainer(
        model=model,
        args=_training_arguments(cfg, run_dir, has_dev=True),
        train_dataset=encoded["train"],
        eval_dataset=encoded["dev"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=t.get("pad_to_multiple_of")),
        compute_loss_func=StanceLoss(len(data.labels.polarities), weights),  # weights kept on the model's device
        compute_metrics=_metrics_fn(data.labels),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience)],
    )
    trainer.class_weights = weights  # kept for metrics.json
    trainer.pretraining = pretraining
    trainer.fine_tuning, trainer.start_head, trainer.encoded_splits = fine_tuning, start_head, encoded
    return trainer


def train_transformer(cfg: DictConfig, data: StanceData, normalization: TextNormalization, run_dir: Path) -> dict:
    """Fine-tune, save the best model to run_dir/model; returns training facts for metrics.json."""
    trainer = build_trainer(cfg, data, normalization, run_dir)
    checkpoints = trainer.args.output_dir
    resume = None
    if cfg.training.resume:
        resume = get_last_checkpoint(checkpoints) if Path(checkpoints).is_dir() else None
        if resume is None:
            raise ConfigError(
                f"training.resume=true but no checkpoint in {checkpoints}: "
                "point hydra.run.dir at the interrupted run's folder"
            )
        log.info("resuming from %s", resume)
    share = padding_share(trainer.get_train_dataloader())
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    require_finite_losses(trainer.state.log_history, len(data.splits["train"]))
    if cfg.model.kind == "pretrained":  # WiSE-FT (model.wise_ft), on every rank: all keep the same weights
        trainer.fine_tuning["wise_ft"] = apply_wise_ft(trainer, cfg.model, data, cfg.eval_split)
    if not trainer.is_world_process_zero():  # under DDP every rank trains; rank 0 alone writes
        return {}
    model_dir = run_dir / MODEL_SUBDIR
    # The best checkpoint (load_best_model_at_end). save_pretrained rather than Trainer.save_model, which
    # adds training_args.bin, a pickle: model folders must load without executing code.
    with atomic_directory(model_dir) as staging:  # the model folder appears only once complete
        if cfg.model.kind == "pretrained":  # with fine_tuning.json; pooling=mean: an embedding-kind folder
            save_trained(trainer, cfg.model, data.labels, staging, cfg.training.max_length)
        else:
            trainer.model.save_pretrained(staging)
            trainer.processing_class.save_pretrained(staging)
        normalization.save(staging)
    weights = trainer.class_weights
    return {
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_loss": result.training_loss,
        "epochs_run": trainer.state.epoch,
        "best_dev_macro_f_avg": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "padding_share": share,
        "world_size": trainer.args.world_size,  # processes that trained together (DDP under torchrun)
        "precision": cfg.training.get("precision", "fp32"),
        "class_weights": weights.tolist() if weights is not None else None,
        **trainer.pretraining,
        **({"fine_tuning": trainer.fine_tuning} if trainer.fine_tuning else {}),
    }


CLASSICAL_KINDS = ("tfidf", "embedding")  # fitted without the Trainer, on rank 0 alone


def member_name(kind: str) -> str:
    """A member's folder name inside an ensemble: its kind, `transformer` for tiny and pretrained."""
    return kind if kind in CLASSICAL_KINDS else "transformer"


ENSEMBLE_SELECTION_KEYS = ("weights", "select_on", "min_sentences", "step", "prefer_even_within_noise")


def ensemble_options(cfg: DictConfig) -> dict:
    options = cfg.get("ensemble_selection") or {}
    options = OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options)
    unknown = sorted(set(options) - set(ENSEMBLE_SELECTION_KEYS))
    if unknown:
        raise ConfigError(f"ensemble_selection: unknown key(s) {unknown}; known: {list(ENSEMBLE_SELECTION_KEYS)}")
    return options


def train_classical(model_cfg: DictConfig, data: StanceData, normalization: TextNormalization, model_dir: Path) -> dict:
    """A tfidf or embedding model (`model_cfg.kind`), fitted and saved to model_dir."""
    if model_cfg.kind == "tfidf":
        return train_tfidf(model_cfg.tfidf, data, normalization, model_dir)
    if model_cfg.kind == "embedding":
        options = OmegaConf.to_container(model_cfg.embedding, resolve=True)
        return fit_embedding_model(options, data, normalization, model_dir)
    raise ConfigError(f"model.kind must be 'tfidf' or 'embedding' here, got {model_cfg.kind!r}")


def resolve_num_threads(setting) -> int:
    """training.num_threads: a number as given; null (or `auto`): OMP_NUM_THREADS when set (torchrun sets
    it), else min(4, cores, cores minus the 1-minute load average, at least 1). Threads beyond the free
    cores of a shared machine cost far more than they give (17x slower on a busy 2-core machine)."""
    if setting not in (None, "auto"):
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ConfigError(
                f"training.num_threads must be a whole number >= 1, or null for the load-aware default; got {setting!r}"
            )
        return setting
    return load_aware_threads()


def train_tfidf(cfg: Mapping, data: StanceData, normalization: TextNormalization, model_dir: Path) -> dict:
    started = time.perf_counter()
    train, dev = data.splits["train"], data.splits.get("dev")
    options = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    options["n_jobs"] = options.get("n_jobs") or torch.get_num_threads()  # null: one worker per thread
    try:
        model = TfidfStanceModel.fit(
            [normalize(x, normalization) for x in train["text"]],
            train["labels"],
            data.labels,
            options,
            dev_texts=[normalize(x, normalization) for x in dev["text"]] if dev is not None else None,
            dev_rows=dev["labels"] if dev is not None else None,
            refit_on_train_dev=data.refit_on_train_dev,
        )
    except ValueError as error:
        if "vocabulary" not in str(error):
            raise
        raise TrainingError(
            f"tfidf: the training text ({len(train)} sentence(s)) gives no features ({error}): too little text"
        ) from error
    with atomic_directory(model_dir) as staging:  # the model folder appears only once complete
        model.save(staging)
        normalization.save(staging)
    # C and the `none` offsets chosen on dev, per target, with the dev scores of the whole grid
    facts = {"train_seconds": round(time.perf_counter() - started, 1), "selection": model.options["selection"]}
    return {**facts, "refit_on_train_dev": model.options.get("refit_on_train_dev", False)}


def _model_card(model_dir: Path, cfg: DictConfig, data: StanceData, metrics: dict) -> None:
    counts = {name: len(split) for name, split in data.splits.items()}
    labels = ", ".join(f"`{label}`" for label in data.labels.id2label.values())
    card = [
        "---",
        "language: ar",
        "library_name: transformers" if cfg.model.kind not in CLASSICAL_KINDS else "library_name: diplostance",
        "pipeline_tag: text-classification",
        "tags: [stance-detection, arabic, cyber-diplomacy, diplostance]",
        "---",
        "",
        f"# diplostance stance classifier ({cfg.model.name})",
        "",
        "Target-specific stance classifier: for each target the logits are read as one distribution over "
        f"{list(data.labels.polarities)}. Labels: {labels}.",
        "",
        f"- Data: {data.description}; sentences per split: {counts}",
        "- Text processing: `text_processing.json` (apply `diplostance.text.normalize` with these options "
        "before tokenising)",
        "",
        f"## Test metrics (split `{metrics['split']}`)",
        "",
        per_label_table(metrics),
        "",
        summary_table({"all": metrics, **({"seed slice": metrics["seed_slice"]} if "seed_slice" in metrics else {})}),
        "",
        "## Training config",
        "",
        "```yaml",
        OmegaConf.to_yaml(cfg, resolve=True).strip(),
        "```",
        "",
    ]
    atomic_write_text(model_dir / "README.md", "\n".join(card))


# The figures metrics.json holds at its top level for the headline model, and under `model` for the main one
HEADLINE_FIGURES = (
    *("macro_f_avg", "macro_f1", "num_examples", "targets"),
    *("bootstrap", "slices", "seed_slice", "model_dir"),
)


def train(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Train the configured model, evaluate it on `cfg.eval_split`, write every output.

    Under torchrun / accelerate launch every rank trains (DDP) and rank 0 alone writes, evaluates
    and returns the metrics; the other ranks return None."""
    started = time.perf_counter()
    check_training_device(cfg.training)  # training=gpu without a GPU stops here
    if cfg.model.kind not in CLASSICAL_KINDS:  # an impossible precision stops before any work
        trainer_precision(cfg.training.get("precision", "fp32"), cfg.training.use_cpu)
        explain_new_head_report()
    set_seed(cfg.seed)
    selection = ensemble_options(cfg)  # bad ensemble_selection options stop here, not after training
    planned = (
        1
        + (cfg.compare_baseline and cfg.model.kind != "tfidf")
        + bool(cfg.get("embedder") and cfg.model.kind != "embedding")
    )
    if cfg.get("ensemble", False) and planned > 1:
        check_selection(planned, selection.get("weights", "dev"), selection.get("select_on", "realistic"))
    threads = resolve_num_threads(cfg.training.num_threads)
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # scikit-learn's OpenMP and BLAS pools (the tf-idf fits) as well
    log.info("%d thread(s) (training.num_threads=%s)", threads, cfg.training.num_threads)
    if cfg.data.get("refit_on_train_dev") and cfg.model.kind != "tfidf":  # only tf-idf is refit
        if cfg.compare_baseline and cfg.get("ensemble", False):
            raise ConfigError(
                "data.refit_on_train_dev=true folds dev into the tf-idf baseline, so the ensemble cannot choose "
                "its weights and offsets on dev: add ensemble=false"
            )
        log.info(
            "data.refit_on_train_dev: the tf-idf baseline is refit on train+dev; the %s model is not", cfg.model.kind
        )
    data = load_data(cfg.data)
    holder_model, holder_facts = fit_for_run(cfg.get("holders"), data)  # stance holders (diplostance.holders)
    normalization = TextNormalization.from_dict(OmegaConf.to_container(cfg.text_processing), "text_processing")
    model_dir = run_dir / MODEL_SUBDIR
    if cfg.model.kind in CLASSICAL_KINDS:
        if not is_main_process():  # nothing to distribute: rank 0 alone fits a tfidf or embedding model
            return None
        facts = train_classical(cfg.model, data, normalization, model_dir)
        data.warnings.extend(grid_edge_warnings(facts, f"model.{cfg.model.kind}.C_grid"))
    else:
        facts = train_transformer(cfg, data, normalization, run_dir)
        if not is_main_process():  # the baseline, the evaluation and the reports: rank 0 only
            return None

    def evaluate_member(folder: Path, title: str) -> dict:
        save_holders(holder_model, folder / MODEL_SUBDIR, holder_facts)  # holders.json beside each model
        return evaluate_model(
            folder / MODEL_SUBDIR,
            data,
            cfg.eval_split,
            folder,
            title,
            n_resamples=cfg.bootstrap_resamples,
            seed=cfg.seed,
        )

    # The main model and the members trained beside it: the tfidf baseline, and the frozen-encoder
    # embedding classifier (`embedder`), each a model folder the ensemble combines.
    members = {member_name(cfg.model.kind): model_dir}
    baseline = None
    if cfg.compare_baseline and cfg.model.kind != "tfidf":
        baseline_dir = run_dir / "baseline"
        baseline_facts = train_classical(cfg.baseline, data, normalization, baseline_dir / MODEL_SUBDIR)
        data.warnings.extend(grid_edge_warnings(baseline_facts, f"baseline.{cfg.baseline.kind}.C_grid"))
        baseline = evaluate_member(baseline_dir, "tfidf baseline")
        baseline["training"] = baseline_facts
        members["tfidf"] = baseline_dir / MODEL_SUBDIR
    embedder = None
    if cfg.get("embedder") and cfg.model.kind != "embedding":
        embedder_dir = run_dir / "embedder"
        embedder_facts = train_classical(cfg.embedder, data, normalization, embedder_dir / MODEL_SUBDIR)
        data.warnings.extend(grid_edge_warnings(embedder_facts, f"embedder.{cfg.embedder.kind}.C_grid"))
        embedder = evaluate_member(embedder_dir, f"embedding classifier: {cfg.embedder.name}")
        embedder["training"] = embedder_facts
        members["embedding"] = embedder_dir / MODEL_SUBDIR
    ensemble = None
    if len(members) > 1 and cfg.get("ensemble", False):
        # weights and `none` offsets chosen on dev (its realistic slices when large enough): a model folder
        ensemble_dir = run_dir / "ensemble"
        choice = fit_ensemble(members, data, ensemble_dir / MODEL_SUBDIR, **ensemble_options(cfg))
        ensemble = evaluate_member(ensemble_dir, "ensemble: " + " + ".join(members))
        ensemble["choice"] = vars(choice)

    save_holders(holder_model, model_dir, holder_facts)
    main = evaluate_model(
        model_dir,
        data,
        cfg.eval_split,
        run_dir,
        f"diplostance: {cfg.model.name}",
        n_resamples=cfg.bootstrap_resamples,
        seed=cfg.seed,
        baseline=baseline,
        ensemble=ensemble,
        embedder=embedder,
    )
    # metrics.json: the headline model's figures at the top level (the ensemble's when the run has one: the
    # model to use, the one report.md leads with), and each model of the run under its folder's name.
    headline = ensemble or main
    metrics = {k: headline[k] for k in HEADLINE_FIGURES if k in headline}
    metrics.update({k: v for k, v in main.items() if k not in HEADLINE_FIGURES})
    metrics["headline"] = "ensemble" if ensemble else "model"
    metrics["model"] = {k: main[k] for k in HEADLINE_FIGURES if k in main}
    metrics["training"] = {**facts, "num_threads": threads, "total_seconds": round(time.perf_counter() - started, 1)}
    metrics["config"] = OmegaConf.to_container(cfg, resolve=True)
    keys = ("macro_f_avg", "macro_f1", "targets", "seed_slice", "slices", "model_dir")
    if baseline:
        metrics["baseline"] = {k: baseline[k] for k in (*keys, "training") if k in baseline}
    if embedder:
        metrics["embedder"] = {k: embedder[k] for k in (*keys, "training") if k in embedder}
    if ensemble:
        metrics["ensemble"] = {k: ensemble[k] for k in (*keys, "choice") if k in ensemble}
    if holder_model is not None or holder_facts.get("note"):
        metrics.setdefault("holders", {})["fit"] = holder_facts
    _model_card(model_dir, cfg, data, main)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")  # last: marks a finished run
    return metrics


def grid_edge_warnings(facts: dict, option: str) -> list[str]:
    """Warnings for a C chosen on dev at an end of its grid, scoring better there than the next C (marked in
    the selection block too): the best C may lie beyond the grid (C=16, the largest, for every embedding
    target on Mawqif). A choice among tied scores says nothing about the grid and is not warned about."""
    edges: dict[tuple[str, float], list[str]] = {}
    for target, chosen in (facts.get("selection") or {}).items():
        scores = sorted((float(c), f or 0.0) for c, f in (chosen.get("dev_f_avg_by_C") or {}).items())
        if len(scores) < 2:
            continue
        for edge, (c, score), (_, inner) in (("smallest", *scores[:2]), ("largest", scores[-1], scores[-2])):
            if chosen.get("C") == c and score > inner:
                chosen["C_at_grid_edge"] = edge
                edges.setdefault((edge, c), []).append(target)
    warnings = [
        f"{option}: C={c:g}, the grid's {edge} value, was chosen on dev for {', '.join(map(repr, targets))}, "
        f"scoring above the next C: a {'larger' if edge == 'largest' else 'smaller'} C may score better "
        f"(widen {option})"
        for (edge, c), targets in edges.items()
    ]
    for warning in warnings:
        log.warning(warning)
    return warnings


NEW_HEAD_KEYS = re.compile(r"(classifier|score|pre_classifier|(\w+\.)?pooler(\.\w+)*)\.(weight|bias|\{.*\})")


class _NewHeadReport(logging.Filter):
    """transformers' load report listing only a classification head (and BERT's pooler) as MISSING is the
    expected start of fine-tuning an encoder: one log line says so instead of a red table. Any other report
    (an unexpected or mismatched key, a missing encoder weight) is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        rows = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in message.splitlines()]
        rows = [[cell.strip() for cell in row.split("|")] for row in rows if "|" in row and not row.startswith("Key")]
        keys = [row[0] for row in rows if len(row) > 1]
        if not keys or any(row[1] != "MISSING" for row in rows) or not all(NEW_HEAD_KEYS.fullmatch(k) for k in keys):
            return True
        record.msg = (
            "new classification head (%s): initialised at random and trained now, as expected for a pretrained "
            "encoder without one"
        )
        record.args = (", ".join(sorted(keys)),)
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def explain_new_head_report() -> None:
    """Install `_NewHeadReport` once on the logger that writes transformers' load report."""
    logger = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, _NewHeadReport) for f in logger.filters):
        logger.addFilter(_NewHeadReport())
