"""The masked per-target loss, model loading, and the offline failure."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from diplostance.modeling import ModelUnavailableError, class_weights_from_labels, load_pretrained, stance_loss
from diplostance.schema import IGNORE_INDEX, LabelSpace

LABELS = LabelSpace(("a", "b"), ("favor", "against", "none"))


def test_loss_is_the_mean_of_per_target_cross_entropies():
    logits = torch.randn(4, 6)
    labels = torch.tensor([[0, 1], [2, 2], [1, 0], [0, 2]])
    per_target = logits.view(4, 2, 3)
    expected = (F.cross_entropy(per_target[:, 0], labels[:, 0]) + F.cross_entropy(per_target[:, 1], labels[:, 1])) / 2
    assert torch.allclose(stance_loss(logits, labels, 3), expected)


def test_unannotated_targets_are_masked_out():
    logits = torch.randn(3, 6)
    labels = torch.tensor([[0, IGNORE_INDEX], [2, IGNORE_INDEX], [1, 0]])
    per_target = logits.view(3, 2, 3)
    expected = (F.cross_entropy(per_target[:, 0], labels[:, 0]) + F.cross_entropy(per_target[2:, 1], labels[2:, 1])) / 2
    assert torch.allclose(stance_loss(logits, labels, 3), expected)


def test_changing_a_masked_logit_does_not_change_the_loss():
    logits = torch.randn(2, 6)
    labels = torch.tensor([[0, IGNORE_INDEX], [1, IGNORE_INDEX]])
    moved = logits.clone()
    moved[:, 3:] += 100.0
    assert torch.allclose(stance_loss(logits, labels, 3), stance_loss(moved, labels, 3))


def test_a_batch_with_nothing_annotated_gives_zero_loss_and_a_gradient():
    logits = torch.randn(2, 6, requires_grad=True)
    loss = stance_loss(logits, torch.full((2, 2), IGNORE_INDEX), 3)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_class_weights_favour_rare_polarities():
    weights = class_weights_from_labels([[0, 2], [2, 2], [2, 2], [2, IGNORE_INDEX]], LABELS)
    assert weights[0, 0] > weights[0, 2]  # favor is rare for target a
    assert weights[0, 1] == 0  # against never seen: no weight


def test_a_model_saved_to_a_local_folder_loads_through_the_real_code_path(tiny_model_dir):
    tokenizer, model = load_pretrained(
        str(tiny_model_dir),
        LabelSpace.from_id2label(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).config.id2label),
    )
    assert model.config.id2label[0] == "un_treaty=favor"
    assert tokenizer("نص")["input_ids"][0] == tokenizer.cls_token_id


def test_a_local_checkpoint_gets_a_fresh_head_for_another_label_space(tiny_model_dir):
    other = LabelSpace(("x",), ("favor", "against"))
    _, model = load_pretrained(str(tiny_model_dir), other)
    assert model.config.num_labels == 2 and model.config.id2label[1] == "x=against"


def test_hub_model_unavailable_offline_says_so_and_what_to_use(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as error:
        load_pretrained("aubmindlab/bert-base-arabertv02", LABELS)
    message = str(error.value)
    assert "aubmindlab/bert-base-arabertv02" in message and "not available offline" in message
    assert "model=tiny" in message and "model.name_or_path=" in message


def test_missing_local_folder_is_named():
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_pretrained("./no/such/folder", LABELS)


def test_saved_model_reloads_with_stock_from_pretrained_and_predicts_the_same(tiny_run):
    """Predictions written at training time equal a fresh stock reload's."""
    import json

    from diplostance.text import TextNormalization, normalize

    model_dir = tiny_run / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    options = TextNormalization.load(model_dir)
    records = [json.loads(line) for line in (tiny_run / "predictions.jsonl").read_text().splitlines()][:25]
    n_pol = 3
    with torch.inference_mode():
        for record in records:
            inputs = tokenizer(normalize(record["text"], options), truncation=True, max_length=128, return_tensors="pt")
            logits = model(**inputs).logits.view(-1, n_pol)
            stock = [model.config.id2label[t * n_pol + int(p)].split("=")[1] for t, p in enumerate(logits.argmax(-1))]
            assert stock == [s["stance"] for s in record["stances"].values()]


def test_masked_lm_pretraining_trains_the_encoder_and_leaves_the_head_alone(tmp_path):
    from diplostance.modeling import build_tiny_model, pretrain_masked_lm

    texts = [f"وقعت الدولتان مذكرة تفاهم رقم {i} للتعاون في أمن المعلومات بين البلدين." for i in range(24)]
    cfg = {"vocab_size": 300, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    cfg["max_position_embeddings"] = 64
    tokenizer, model = build_tiny_model(texts, LABELS, cfg, seed=0)
    embeddings = model.bert.embeddings.word_embeddings.weight.detach().clone()
    head = model.classifier.weight.detach().clone()
    facts = pretrain_masked_lm(model, tokenizer, texts, {"epochs": 2, "batch_size": 8}, seed=0, work_dir=tmp_path)
    assert not torch.equal(model.bert.embeddings.word_embeddings.weight, embeddings)
    assert torch.equal(model.classifier.weight, head)
    assert facts["mlm_sentences"] == 24 and facts["mlm_loss"] > 0


def test_the_weighted_loss_is_the_mean_of_per_target_weighted_cross_entropies():
    logits = torch.randn(5, 6, dtype=torch.float64)
    labels = torch.tensor([[0, IGNORE_INDEX], [2, 1], [1, IGNORE_INDEX], [0, 1], [2, 0]])
    weights = torch.tensor([[0.5, 2.0, 1.0], [1.5, 0.2, 0.9]])
    per_target = logits.view(5, 2, 3)
    expected = (
        sum(
            F.cross_entropy(per_target[:, t], labels[:, t], weight=weights[t].double(), ignore_index=IGNORE_INDEX)
            for t in range(2)
        )
        / 2
    )
    assert torch.allclose(stance_loss(logits, labels, 3, weights).double(), expected, atol=1e-6)
