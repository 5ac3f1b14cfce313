"""The transformer predictor's fast path (numpy padding, one read back per call, predict_encoded) gives
what the stock path gives: tokenizer.pad's tensors, and on the CPU in fp32 the same stances and
probabilities as padding each batch with tokenizer.pad."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diplostance.modeling import build_tiny_model
from diplostance.predictors.transformer import TransformerPredictor
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization

LABELS = LabelSpace(("a", "b"), ("favor", "against", "none"))
TEXTS = [
    "الأمم المتحدة تدعو إلى اتفاقية ملزمة بشأن المناخ قبل نهاية العام.",
    "رفضت الدولة المعاهدة.",
    "عقد الطرفان حوارا ثنائيا في العاصمة لبحث التعاون الاقتصادي والأمني.",
    "نعم.",
    "وقالت الوزارة في بيان إن الاتفاق «خطوة مهمة» نحو السلام، وإن المفاوضات ستستمر الأسبوع المقبل.",
    "Le ministre a salué l'accord.",
    "١٢٣ دولة وقعت؛ ورفضت ٧ دول؟",
    "",
    "رفضت الدولة المعاهدة.",
]
TINY = {"vocab_size": 300, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
TINY |= {"max_position_embeddings": 128, "min_frequency": 1}


def build_model_folder(folder, texts=TEXTS, labels=LABELS):
    """A small random BERT model folder (tokenizer trained on `texts`), as train.py saves one."""
    tokenizer, model = build_tiny_model(list(texts) * 3, labels, TINY, seed=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    TextNormalization().save(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_model_folder(tmp_path_factory.mktemp("tiny-random"))


def stock_proba(predictor: TransformerPredictor, texts: list[str]) -> np.ndarray:
    """The earlier path: each length-sorted batch padded by tokenizer.pad, read back batch by batch."""
    n_targets, n_pol = len(LABELS.targets), len(LABELS.polarities)
    ids = predictor.encode(texts)
    out = np.empty((len(texts), n_targets, n_pol), dtype=np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), predictor.batch_size):
            batch = order[start : start + predictor.batch_size]
            inputs = predictor.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            logits = predictor.model(**inputs).logits.float()
            out[batch] = torch.softmax(logits.view(len(batch), n_targets, n_pol), dim=-1).numpy()
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_fp32_on_the_cpu_gives_the_stock_paths_stances_and_probabilities(model_dir, batch_size):
    predictor = TransformerPredictor(model_dir, batch_size=batch_size, device="cpu")
    expected = stock_proba(predictor, TEXTS)
    got = predictor.predict_proba(TEXTS)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_predict_encoded_takes_the_ids_encode_makes(model_dir):
    predictor = TransformerPredictor(model_dir, batch_size=4, device="cpu")
    by_ids = predictor.predict_encoded(predictor.encode(TEXTS))
    np.testing.assert_allclose(by_ids, predictor.predict_proba(TEXTS), rtol=0, atol=1e-6)
    assert predictor.predict_encoded([]).shape == (0, len(LABELS.targets), len(LABELS.polarities))


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_batch_is_padded_as_tokenizer_pad_pads_it(model_dir, side):
    predictor = TransformerPredictor(model_dir, device="cpu")
    predictor.tokenizer.padding_side = side
    predictor.pad_left = side == "left"
    rows = predictor.encode(TEXTS)
    expected = predictor.tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    got = predictor.pad(rows)
    assert sorted(got) == sorted(expected.keys())
    for key, tensor in got.items():
        assert tensor.dtype == expected[key].dtype == torch.int64
        assert torch.equal(tensor, expected[key]), key


def test_attention_is_pytorchs_sdpa(model_dir):
    assert TransformerPredictor(model_dir, device="cpu").attention == "sdpa"


def test_an_eager_config_is_switched_to_sdpa(model_dir, tmp_path):
    import json
    import shutil

    eager = shutil.copytree(model_dir, tmp_path / "eager")
    config = json.loads((eager / "config.json").read_text())
    (eager / "config.json").write_text(json.dumps({**config, "_attn_implementation": "eager"}))
    assert TransformerPredictor(eager, device="cpu").attention == "sdpa"


def test_the_batches_run_on_the_models_device_with_nothing_read_back(model_dir):
    """With the model on `meta` under a fake mode, a CPU tensor meeting it, or any value read back to the
    host inside the loop (.item(), .cpu(), a sync per batch), fails: the probabilities come back on meta."""
    from tests.test_device_meta import META, OnMeta

    predictor = TransformerPredictor(model_dir, batch_size=3, device="cpu")
    on = OnMeta()
    predictor.model, predictor.device = on.put(predictor.model), META
    with on.active():
        order, probs = predictor.device_proba(predictor.encode(TEXTS))
    assert probs.device == META and probs.shape == (len(TEXTS), len(LABELS.targets), len(LABELS.polarities))
    assert sorted(order.tolist()) == list(range(len(TEXTS)))
