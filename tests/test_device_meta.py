"""Device bugs caught without a GPU: the loss, a training step and the Trainer's loss path on a device
other than the CPU.

A tensor made on the CPU while the model sits on a GPU stops a GPU run with "Expected all tensors
to be on the same device". On a CPU-only machine the model and its inputs go to PyTorch's `meta`
device (shapes and dtypes, no data), and every op runs under a FakeTensorMode, whose device check
raises that same error for any CPU tensor that meets them. A value read back to the host (`.item()`,
`if tensor.any()`, a GPU sync on every step) fails here too: on meta there is no value to read.
(Plain meta tensors without the fake mode cannot run a Hugging Face model with an attention mask:
transformers reads the mask's values to choose an SDPA path, unless the tensors are fake.)
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from transformers import AutoModelForSequenceClassification, BertConfig

from diplostance.modeling import StanceLoss, build_tiny_model, load_pretrained, stance_loss, train_wordpiece_tokenizer
from diplostance.schema import IGNORE_INDEX, LabelSpace
from tests.conftest import FAST_TINY, train_config

LABELS = LabelSpace(("a", "b", "c"), ("favor", "against", "none"))
TEXTS = ["الأمم المتحدة تدعو إلى اتفاقية ملزمة.", "رفضت الدولة المعاهدة الجديدة.", "عقد الطرفان حوارا ثنائيا."] * 4
META = torch.device("meta")
TINY = {"vocab_size": 200, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
TINY["max_position_embeddings"] = 64


class OnMeta:
    """A fake mode whose tensors live on `meta`: `put` moves a module or tensor there."""

    def __init__(self):
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)  # a real CPU tensor that meets them: an error

    def fake(self, tensor: torch.Tensor) -> torch.Tensor:
        return FakeTensor(self.mode, tensor.detach().to(META), META)

    def put(self, thing):
        if isinstance(thing, torch.nn.Module):
            return thing._apply(self.fake)
        if isinstance(thing, torch.Tensor):
            return self.fake(thing)
        return {k: self.put(v) if isinstance(v, torch.Tensor) else v for k, v in thing.items()}

    @contextlib.contextmanager
    def active(self):
        with self.mode:
            yield


def batch(tokenizer, labels: list[list[int]]) -> dict:
    encoded = tokenizer(TEXTS[: len(labels)], padding=True, return_tensors="pt")
    return {**encoded, "labels": torch.tensor(labels)}


LABEL_ROWS = [[0, 1, IGNORE_INDEX], [2, 2, 2], [1, IGNORE_INDEX, 0], [0, 2, 1]]
WEIGHTS = torch.tensor([[1.5, 0.5, 1.0], [1.0, 2.0, 0.0], [0.7, 1.1, 1.2]])


def tiny_kind(tmp_path):
    tokenizer, model = build_tiny_model(TEXTS, LABELS, {**TINY, "min_frequency": 1}, seed=0)
    return tokenizer, model


def pretrained_kind(tmp_path):
    """A BERT saved with save_pretrained to a local folder, loaded back as a Hub model would be."""
    tokenizer = train_wordpiece_tokenizer(TEXTS, 200, 1)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    return load_pretrained(str(tmp_path / "bert"), LABELS)


KINDS = {"tiny": tiny_kind, "pretrained": pretrained_kind}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "class_weights"])
def test_the_stance_loss_runs_on_meta_logits_and_labels(weighted):
    on = OnMeta()
    logits, labels = on.put(torch.randn(4, 9, requires_grad=True)), on.put(torch.tensor(LABEL_ROWS))
    with on.active():
        loss = stance_loss(logits, labels, 3, WEIGHTS if weighted else None)  # CPU weights: moved where used
    assert loss.device == META and loss.shape == ()


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "class_weights"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_training_step_runs_with_model_and_inputs_on_meta(kind, weighted, tmp_path):
    tokenizer, model = KINDS[kind](tmp_path)
    loss_fn = StanceLoss(3, WEIGHTS if weighted else None)
    on = OnMeta()
    model, inputs = on.put(model.train()), on.put(batch(tokenizer, LABEL_ROWS))
    labels = inputs.pop("labels")
    with on.active():
        loss = loss_fn(model(**inputs), labels)
        loss.backward()
        torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    assert loss.device == META and all(p.grad is not None and p.grad.device == META for p in model.parameters())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_prediction_runs_with_model_and_inputs_on_meta(kind, tmp_path):
    tokenizer, model = KINDS[kind](tmp_path)
    on = OnMeta()
    model, inputs = on.put(model.eval()), on.put(dict(tokenizer(TEXTS[:3], padding=True, return_tensors="pt")))
    with on.active(), torch.inference_mode():
        probs = torch.softmax(model(**inputs).logits.float().view(3, 3, 3), dim=-1)
    assert probs.device == META and probs.shape == (3, 3, 3)


def test_the_class_weights_are_placed_on_the_logits_device_once():
    on = OnMeta()
    loss_fn = StanceLoss(3, WEIGHTS)
    logits = on.put(torch.randn(4, 9))
    with on.active():
        first, again = loss_fn.weights_for(logits), loss_fn.weights_for(logits)
    assert first.device == META and first is again and loss_fn.class_weights.device.type == "cpu"


@pytest.mark.parametrize("weighted", ["false", "true"], ids=["unweighted", "class_weights"])
def test_the_trainers_own_loss_path_makes_no_cpu_tensor_when_the_model_is_on_meta(weighted, tmp_path):
    """The real Trainer from build_trainer, its compute_loss and prediction_step, on a meta model and batch."""
    from diplostance.data import load_data
    from diplostance.text import TextNormalization
    from diplostance.training import build_trainer

    cfg = train_config(*FAST_TINY, "training=ci", f"training.class_weights={weighted}")
    normalization = TextNormalization()
    trainer = build_trainer(cfg, load_data(cfg.data), normalization, tmp_path)
    inputs = next(iter(trainer.get_train_dataloader()))
    on = OnMeta()
    model, inputs = on.put(trainer.model), on.put(dict(inputs))
    with on.active():
        loss = trainer.compute_loss(model, dict(inputs))
        loss.backward()
        eval_loss, logits, labels = trainer.prediction_step(model.eval(), dict(inputs), prediction_loss_only=False)
    assert loss.device == eval_loss.device == logits.device == META and labels.shape == inputs["labels"].shape
