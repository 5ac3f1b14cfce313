"""Robust fine-tuning of a pretrained encoder (diplostance.robust): LP-FT, WiSE-FT, frozen layers, the CLI.

Every test uses a tiny BERT saved the way diplostance.pretrained saves multilingual-e5-small (a `BertModel`
without a pooler and a Unigram/Metaspace tokenizer from `build_tokenizer`), with pieces outside the data's
scripts so that `model.restrict_vocabulary` drops rows and WiSE-FT has to match them by piece.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES, PROB_TOL, compose_config
from safetensors.torch import load_file

from diplostance.robust import FineTuningError, options_of

DATA = FIXTURES / "data"
META = "\u2581"


def data_texts() -> list[str]:
    with (
        (DATA / "long_train.csv").open(encoding="utf-8") as train,
        (DATA / "long_test.csv").open(encoding="utf-8") as t,
    ):
        return [row["text"] for row in [*csv.DictReader(train), *csv.DictReader(t)]]


@pytest.fixture(scope="module")
def start_folder(tmp_path_factory):
    """A 2-layer, 32-wide pretrained-shaped encoder folder (seeded, random weights)."""
    from transformers import BertConfig, BertModel

    from diplostance.pretrained import build_tokenizer, precompiled_charsmap

    chars = sorted({ch for text in data_texts() for ch in text if not ch.isspace()} | set("query:"))
    pieces = ["<s>", "<pad>", "</s>", "<unk>", META, *chars, *(META + c for c in chars), "日", "本", META + "日本"]
    scores = [0.0] * 5 + [-2.0] * len(chars) + [-1.5] * len(chars) + [-2.0, -2.0, -1.0]
    ids = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}
    tokenizer = build_tokenizer(pieces, scores, ids, precompiled_charsmap({0x3000: (0x20,)}))
    config = BertConfig(
        vocab_size=len(pieces),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        architectures=["BertModel"],
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_e5")
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def robust_config(start_folder, *overrides: str):
    return compose_config(
        "train",
        [
            "model=e5_small",
            f"model.name_or_path={start_folder}",
            "model.learning_rate=1e-3",
            "data=file",
            f"data.train={DATA / 'long_train.csv'}",
            f"data.dev={DATA / 'long_test.csv'}",
            f"data.test={DATA / 'long_test.csv'}",
            "data.columns.id=id",
            "training.epochs=2",
            "training.batch_size=4",
            "training.warmup_ratio=0.0",  # every step moves the weights: the tests compare them
            "training.max_length=128",
            "training.use_cpu=true",
            "training.progress_bar=false",
            "bootstrap_resamples=0",
            "compare_baseline=false",
            *overrides,
        ],
    )


def data_and_normalization(cfg):
    from omegaconf import OmegaConf

    from diplostance.data import load_data
    from diplostance.text import TextNormalization

    normalization = TextNormalization.from_dict(OmegaConf.to_container(cfg.text_processing), "text_processing")
    return load_data(cfg.data), normalization


def encoder_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def start_weights_for(start_folder, encoder_folder) -> dict[str, torch.Tensor]:
    """The start's weights with the word-embedding rows of `encoder_folder`'s pieces, matched by hand."""
    from transformers import AutoTokenizer

    start = encoder_weights(start_folder)
    theirs = AutoTokenizer.from_pretrained(start_folder).get_vocab()
    own = AutoTokenizer.from_pretrained(encoder_folder).get_vocab()
    rows = [theirs[piece] for piece, _ in sorted(own.items(), key=lambda item: item[1])]
    start["embeddings.word_embeddings.weight"] = start["embeddings.word_embeddings.weight"][rows]
    return start


@pytest.fixture(scope="module")
def lp_ft_run(start_folder, tmp_path_factory):
    """pooling=mean + LP-FT, trained and saved as fine-tuned (no WiSE-FT: alpha 1)."""
    from diplostance.training import train

    run_dir = tmp_path_factory.mktemp("lp_ft_run")
    train(robust_config(start_folder, "model.pooling=mean", "model.lp_ft=true"), run_dir)
    return run_dir


def test_wise_ft_at_alpha_0_gives_the_start_and_at_1_the_fine_tuned_encoder_exactly(lp_ft_run, start_folder, tmp_path):
    from diplostance.robust import wise_ft_folder

    model = lp_ft_run / "model"
    fine_tuned = encoder_weights(model / "encoder")
    start = start_weights_for(start_folder, model / "encoder")
    assert (
        start["embeddings.word_embeddings.weight"].shape[0]
        < encoder_weights(start_folder)["embeddings.word_embeddings.weight"].shape[0]
    )  # the vocabulary was restricted: rows had to be matched
    name = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(fine_tuned[name], start[name])  # training moved the weights

    wise_ft_folder(model, 0.0, tmp_path / "alpha0")
    wise_ft_folder(model, 1.0, tmp_path / "alpha1")
    at_0, at_1 = encoder_weights(tmp_path / "alpha0" / "encoder"), encoder_weights(tmp_path / "alpha1" / "encoder")
    assert set(at_0) == set(fine_tuned) == set(start)
    for name in fine_tuned:
        assert torch.equal(at_0[name], start[name]), name
        assert torch.equal(at_1[name], fine_tuned[name]), name


def test_a_wise_ft_folder_is_a_model_folder_between_the_two(lp_ft_run, start_folder, tmp_path):
    from diplostance.predictors import load_predictor
    from diplostance.robust import wise_ft_folder

    model = lp_ft_run / "model"
    wise_ft_folder(model, 0.25, tmp_path / "quarter")
    name = "encoder.layer.0.attention.self.query.weight"
    start = start_weights_for(start_folder, model / "encoder")[name]
    expected = 0.75 * start + 0.25 * encoder_weights(model / "encoder")[name]
    assert torch.allclose(encoder_weights(tmp_path / "quarter" / "encoder")[name], expected, atol=1e-7)
    assert json.loads((tmp_path / "quarter" / "fine_tuning.json").read_text())["wise_ft_alpha"] == 0.25
    probs = load_predictor(tmp_path / "quarter").predict_proba(data_texts()[:3])
    assert probs.shape == (3, 2, 3)


def test_lp_ft_starts_from_the_embedding_kinds_linear_probe(start_folder, tmp_path):
    from transformers import DataCollatorWithPadding

    from diplostance.embedding import fit_embedding_model
    from diplostance.modeling import encode_texts
    from diplostance.predictors import load_predictor
    from diplostance.training import build_trainer

    cfg = robust_config(start_folder, "model.pooling=mean", "model.lp_ft=true")
    data, normalization = data_and_normalization(cfg)
    trainer = build_trainer(cfg, data, normalization, tmp_path / "run")  # the model before any training step
    probe = {
        "encoder": str(start_folder),
        "prefix": "query: ",
        "layers": [-1],
        "max_length": 128,
        "restrict_vocabulary": True,
        "C": 1.0,
        "C_grid": list(cfg.model.linear_probe.C_grid),
        "none_offset_grid": [],  # the head starts from the regressions alone
        "class_weight": True,
        "max_iter": 3000,
    }
    fit_embedding_model(probe, data, normalization, tmp_path / "probe")
    texts = list(data.splits["test"]["text"])
    expected = load_predictor(tmp_path / "probe").predict_proba(texts)

    batch = DataCollatorWithPadding(trainer.processing_class)(
        [dict(e) for e in _rows(encode_texts(trainer.processing_class, texts, normalization, 128, "query: "))]
    )
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(**batch).logits
    got = torch.softmax(logits.view(len(texts), 2, 3), -1).numpy()
    assert np.allclose(got, expected, atol=PROB_TOL)
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def _rows(encoded) -> list[dict]:
    return [dict(zip(encoded.keys(), values, strict=True)) for values in zip(*encoded.values(), strict=True)]


def test_frozen_layers_do_not_change_in_training_and_the_others_do(start_folder, tmp_path):
    from diplostance.robust import encoder_of
    from diplostance.training import build_trainer

    cfg = robust_config(start_folder, "model.freeze_layers=1", "training.epochs=1")
    data, normalization = data_and_normalization(cfg)
    trainer = build_trainer(cfg, data, normalization, tmp_path / "run")
    encoder = encoder_of(trainer.model)
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    trainer.train()
    after = dict(encoder.named_parameters())
    frozen = [n for n in before if n.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [n for n in before if n.startswith("encoder.layer.1.")]
    assert frozen and trained
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in trained)


def test_a_wise_ft_grid_is_scored_on_dev_and_the_saved_model_is_the_chosen_alpha(start_folder, tmp_path):
    from diplostance.predictors import load_predictor
    from diplostance.robust import choose_alpha
    from diplostance.scoring import stance_scores
    from diplostance.training import train

    overrides = ["model.pooling=mean", "model.lp_ft=true", "model.wise_ft.alpha=[0.5,1.0]"]
    metrics = train(robust_config(start_folder, *overrides), tmp_path / "run")
    wise = metrics["training"]["fine_tuning"]["wise_ft"]
    dev = {float(a): g["dev"]["macro_f_avg"] for a, g in wise["grid"].items()}
    assert set(dev) == {0.5, 1.0} and wise["alpha"] == choose_alpha(dev, 0.0)
    assert json.loads((tmp_path / "run" / "model" / "fine_tuning.json").read_text())["wise_ft_alpha"] == wise["alpha"]
    # the saved embedding-kind folder predicts what the interpolated model scored
    data, _ = data_and_normalization(robust_config(start_folder))
    probs = load_predictor(tmp_path / "run" / "model").predict_proba(list(data.splits["test"]["text"]))
    refs = np.asarray(data.splits["test"]["labels"])
    scores = stance_scores(probs.argmax(-1), refs, data.labels.targets, data.labels.polarities)
    assert round(float(scores["macro_f_avg"]), 4) == wise["grid"][str(wise["alpha"])]["test"]["macro_f_avg"]


def test_the_smallest_alpha_within_tolerance_of_the_best_is_chosen():
    from diplostance.robust import choose_alpha

    scores = {0.5: 0.70, 0.7: 0.74, 1.0: 0.75}
    assert choose_alpha(scores, 0.0) == 1.0
    assert choose_alpha(scores, 0.02) == 0.7
    assert choose_alpha({0.5: 0.6, 1.0: 0.6}, 0.0) == 0.5


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"pooling": "cls", "lp_ft": True}, "model.lp_ft"),
        ({"pooling": "max"}, "model.pooling"),
        ({"freeze_layers": -1}, "model.freeze_layers"),
        ({"wise_ft": {"alpha": [0.5, 1.5]}}, "model.wise_ft.alpha"),
        ({"wise_ft": {"alpha": 0.5, "interpolate_head": True}}, "model.wise_ft.interpolate_head"),
    ],
)
def test_an_impossible_option_is_refused_naming_its_key(options, key):
    with pytest.raises(FineTuningError, match=key.replace(".", r"\.")):
        options_of(options)


def test_freezing_more_layers_than_the_encoder_has_is_refused(start_folder, tmp_path):
    from diplostance.training import build_trainer

    cfg = robust_config(start_folder, "model.freeze_layers=3")
    data, normalization = data_and_normalization(cfg)
    with pytest.raises(FineTuningError, match="freeze_layers=3, but the encoder has 2 layers"):
        build_trainer(cfg, data, normalization, tmp_path / "run")


def test_the_cli_refuses_an_existing_output_folder(lp_ft_run, tmp_path, capsys):
    from diplostance.cli import main

    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        main(["wise-ft", str(lp_ft_run / "model"), "--alpha", "0.7", "--out", str(out)])
    assert stop.value.code == 2
    assert "already exists" in capsys.readouterr().err.strip().splitlines()[-1]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_the_cli_writes_an_interpolated_folder(lp_ft_run, tmp_path, capsys):
    from diplostance.cli import main

    assert main(["wise-ft", str(lp_ft_run / "model"), "--alpha", "0.7", "--out", str(tmp_path / "new")]) == 0
    assert "alpha 0.7" in capsys.readouterr().out
    assert (tmp_path / "new" / "encoder" / "model.safetensors").is_file()


def test_wise_ft_on_a_stock_classifier_interpolates_the_encoder_and_keeps_what_the_start_lacks(start_folder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from diplostance.robust import wise_ft_folder
    from diplostance.training import train

    train(robust_config(start_folder), tmp_path / "run")  # pooling=cls: a stock BertForSequenceClassification
    model = tmp_path / "run" / "model"
    wise_ft_folder(model, 0.0, tmp_path / "alpha0")
    fine_tuned = AutoModelForSequenceClassification.from_pretrained(model).state_dict()
    at_0 = AutoModelForSequenceClassification.from_pretrained(tmp_path / "alpha0").state_dict()
    start = start_weights_for(start_folder, model)
    assert not torch.equal(
        fine_tuned["bert.encoder.layer.1.output.dense.weight"], start["encoder.layer.1.output.dense.weight"]
    )
    for name, tensor in at_0.items():
        inner = name.removeprefix("bert.")
        if inner in start:
            assert torch.equal(tensor, start[inner]), name
        else:  # the pooler and the head: the start has none, so they stay as fine-tuned
            assert name.startswith(("bert.pooler.", "classifier.")) and torch.equal(tensor, fine_tuned[name]), name
