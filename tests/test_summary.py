"""Holders in labelled records (local engine, Parquet) and the archive summary: its counts, intervals, periods,
files and the page a real headless Chromium renders. Every sentence here is written for the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from diplostance.actors import load_inventory
from diplostance.cli import main as cli_main
from diplostance.holders import HOLDERS_FILE, RuleHolderModel, save_holder_model
from diplostance.labelling.inputs import Article
from diplostance.labelling.records import records_table, sentence_records, unflatten
from diplostance.schema import LabelSpace
from diplostance.summary import SummaryError, summarize
from diplostance.text import split_sentences
from tests.conftest import SAFETY_TIMEOUT_S, compose_config

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
TARGETS = ("un_treaty", "multistakeholder", "bilateral_cbm")
LABELS = LabelSpace(TARGETS, ("favor", "against", "none"))
ARTICLE = (
    "قال المتحدث باسم الخارجية الصينية إن بلاده تؤيد اتفاقية أممية ملزمة. "
    "وأضاف أن الحوار مع الجميع ضروري. "
    "ورفضت الولايات المتحدة المقترح."
)


@pytest.fixture(scope="module")
def holder_model():
    return RuleHolderModel(load_inventory(ROOT / "annotations" / "actors.yaml"))


def probs_for(stances: list[dict[str, str]]) -> np.ndarray:
    probs = np.full((len(stances), len(TARGETS), 3), 0.05)
    for i, sentence in enumerate(stances):
        for j, target in enumerate(TARGETS):
            probs[i, j, LABELS.polarities.index(sentence.get(target, "none"))] = 0.9
    return probs


def test_labelled_records_carry_each_stance_holders_with_names_type_and_spans_into_the_article(holder_model):
    sentences = split_sentences(ARTICLE)
    stances = [{"un_treaty": "favor"}, {"un_treaty": "favor"}, {"un_treaty": "against"}]
    records = list(sentence_records(Article("a1", ARTICLE, "in.jsonl:1"), sentences, probs_for(stances), LABELS,
                                    holder_model))  # fmt: skip
    holders = [r["holders"] for r in records]
    assert [[h["id"] for h in r["un_treaty"]] for r in holders] == [["CHN"], ["CHN"], ["USA"]]
    first = holders[0]["un_treaty"][0]
    assert (first["name_en"], first["name_ar"], first["type"]) == ("China", "الصين", "state")
    for record in holders:
        for mention in record["un_treaty"][0]["mentions"]:  # the elided subject points at the first sentence
            assert ARTICLE[mention["start"] : mention["end"]] == mention["text"]
    assert holders[1]["un_treaty"][0]["mentions"] == first["mentions"]
    assert set(holders[0]) == {"un_treaty"}  # none stances get no holders


def test_parquet_rows_give_back_the_records_with_their_holders(holder_model):
    sentences = split_sentences(ARTICLE)
    stances = [{"un_treaty": "favor"}, {}, {"un_treaty": "against", "bilateral_cbm": "against"}]
    records = list(sentence_records(Article("a1", ARTICLE, "x"), sentences, probs_for(stances), LABELS, holder_model))
    without = list(sentence_records(Article("a1", ARTICLE, "x"), sentences, probs_for(stances), LABELS))
    for batch in (records, without):
        rows = records_table(batch, LABELS).to_pylist()
        back = [unflatten(row, LABELS) for row in rows]
        assert [b.get("holders") for b in back] == [r.get("holders") for r in batch]
    assert all("holders" not in r for r in without)


def test_label_py_writes_holders_with_the_local_engine_and_in_parquet(small_tfidf_model_dir, tmp_path, holder_model):
    from diplostance.labelling import label

    model_dir = tmp_path / "model"
    shutil.copytree(small_tfidf_model_dir, model_dir)
    save_holder_model(holder_model, model_dir)  # whatever the fixture was trained with
    articles = tmp_path / "articles.jsonl"
    articles.write_text(json.dumps({"id": "a1", "text": ARTICLE}, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in ("OUT.jsonl", "OUT.parquet"):
        out = tmp_path / name.split(".")[1] / name
        cfg = compose_config("label", [f"model_dir={model_dir}", f"inputs=[{articles}]", f"output.path={out}",
                                       "progress_bar=false"])  # fmt: skip
        label(cfg)
        if name.endswith(".jsonl"):
            records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        else:
            import pyarrow.parquet as pq

            from diplostance.predictors import check_model_folder

            labels = check_model_folder(model_dir)[1]  # the fixture's own targets
            records = [unflatten(row, labels) for row in pq.read_table(out).to_pylist()]
        assert len(records) == 3 and all("holders" in r for r in records)
        for record in records:
            sided = {t for t, p in record["stances"].items() if p != "none"}
            assert set(record["holders"]) == sided


def test_a_broken_holders_json_stops_label_py_before_any_input_is_read(small_tfidf_model_dir, tmp_path):
    from diplostance.holders import HolderModelError
    from diplostance.labelling import label

    model_dir = tmp_path / "model"
    shutil.copytree(small_tfidf_model_dir, model_dir)
    (model_dir / HOLDERS_FILE).write_text("{not json", encoding="utf-8")
    cfg = compose_config("label", [f"model_dir={model_dir}", f"inputs=[{tmp_path / 'none.jsonl'}]",
                                   f"output.path={tmp_path / 'out' / 'OUT.jsonl'}"])  # fmt: skip
    with pytest.raises(HolderModelError, match=r"holders\.json"):
        label(cfg)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- the summary


def holder(actor: str, name_en: str | None = None, kind: str = "state") -> dict:
    return {"id": actor, "name_en": name_en or actor, "name_ar": None, "type": kind, "mentions": [], "rule": "subject"}


def record(doc: str, idx: int, stances: dict, holders: dict, date: str | None = None) -> dict:
    out = {"doc_id": doc, "source": "in.jsonl", "sent_idx": idx, "start": idx * 10, "end": idx * 10 + 9,
           "text": "جملة", "stances": {t: stances.get(t, "none") for t in TARGETS},
           "holders": {t: [holder(a) for a in ids] for t, ids in holders.items()}}  # fmt: skip
    if date:
        out["date"] = date
    return out


@pytest.fixture
def labelled(tmp_path) -> Path:
    rows = [
        record("d1", 0, {"un_treaty": "favor"}, {"un_treaty": ["RUS"]}, "2024-12-24"),
        record(
            "d1",
            1,
            {"un_treaty": "favor", "bilateral_cbm": "favor"},
            {"un_treaty": ["RUS", "CHN"], "bilateral_cbm": ["RUS"]},
            "2024-12-24",
        ),
        record("d2", 0, {"un_treaty": "against"}, {"un_treaty": ["USA"]}, "2025-01-03"),
        record("d3", 0, {"un_treaty": "against"}, {"un_treaty": ["RUS"]}, "2025-01-10"),
        record("d3", 1, {}, {}, "2025-01-10"),
        record("d4", 0, {"multistakeholder": "against"}, {"multistakeholder": ["author"]}),
    ]
    path = tmp_path / "OUT.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def cell(data: dict, actor: str, target: str) -> dict:
    return next(r for r in data["cells"] if r["actor"] == actor and r["target"] == target)


def test_the_summary_counts_every_holder_per_target_with_shares_intervals_and_the_sentences(labelled, tmp_path):
    data = summarize([labelled], tmp_path / "sum", n_resamples=300, seed=3)
    assert (data["records"], data["stance_bearing"]) == (6, 5)
    rus = cell(data, "RUS", "un_treaty")
    assert (rus["favor"], rus["against"], rus["total"], rus["documents"]) == (2, 1, 3, 2)
    assert rus["favor_share"] == pytest.approx(2 / 3, abs=1e-4)
    low, high = rus["favor_share_ci"]
    assert 0.0 <= low <= 2 / 3 <= high <= 1.0
    assert [(s["doc_id"], s["sent_idx"], s["start"], s["end"]) for s in rus["sentences"]] == [
        ("d1", 0, 0, 9), ("d1", 1, 10, 19), ("d3", 0, 0, 9),
    ]  # fmt: skip
    assert (cell(data, "CHN", "un_treaty")["favor"], cell(data, "USA", "un_treaty")["against"]) == (1, 1)
    assert cell(data, "author", "multistakeholder")["against"] == 1
    months = {(p["period"], p["actor"], p["target"]): (p["favor"], p["against"]) for p in data["periods"]}
    assert months[("2024-12", "RUS", "un_treaty")] == (2, 0) and months[("2025-01", "RUS", "un_treaty")] == (0, 1)
    files = {p.name for p in (tmp_path / "sum").iterdir()}
    assert {"summary.json", "actor_target.csv", "periods.csv", "index.html", "stance_over_time.png",
            "stance_by_actor_un_treaty.png"} <= files  # fmt: skip
    assert all((tmp_path / "sum" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files if f.endswith(".png"))
    assert json.loads((tmp_path / "sum" / "summary.json").read_text(encoding="utf-8")) == data


def test_dates_come_from_the_articles_file_and_years_group_them(labelled, tmp_path):
    rows = [json.loads(line) for line in labelled.read_text(encoding="utf-8").splitlines()]
    undated = tmp_path / "undated.jsonl"
    undated.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "date"}) + "\n" for r in rows))
    articles = tmp_path / "articles.jsonl"
    articles.write_text("".join(json.dumps({"id": d, "text": "x", "published": day}) + "\n"
                                for d, day in [("d1", "2023-05-01"), ("d3", "2024-02-02")]))  # fmt: skip
    data = summarize([undated], tmp_path / "sum", articles=articles, date_field="published", period="year")
    assert {(p["period"], p["actor"], p["target"]) for p in data["periods"]} == {
        ("2023", "RUS", "un_treaty"), ("2023", "CHN", "un_treaty"), ("2023", "RUS", "bilateral_cbm"),
        ("2024", "RUS", "un_treaty"),
    }  # fmt: skip


def test_an_existing_output_a_missing_file_and_a_bad_line_are_one_line_errors(labelled, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    for files, out, message in [([labelled], tmp_path / "taken", "exists"),
                                ([tmp_path / "nope.jsonl"], tmp_path / "s", "no such labelled file")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["summarize", *map(str, files), "--out", str(out)])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in error and len(error.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(labelled.read_text(encoding="utf-8") + "{broken\n", encoding="utf-8")
    with pytest.raises(SummaryError, match=r"bad.jsonl:7: invalid-json"):
        summarize([bad], tmp_path / "s")
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------- the page in a real browser


class _Page(HTMLParser):
    """The rendered DOM's plots (with the natural size the browser read) and table cells."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self._row, self._cls, self.target = [], [], None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and "plot" in (attrs.get("class") or ""):
            self.images.append(attrs)
        elif tag == "table" and attrs.get("data-target"):
            self.target = attrs["data-target"]
        elif tag == "tr" and attrs.get("data-actor"):
            self._row = {"actor": attrs["data-actor"], "target": self.target}
            self.rows.append(self._row)
        elif tag == "td":
            self._cls = attrs.get("class")

    def handle_data(self, data):
        if self._row is not None and self._cls in ("favor", "against", "total", "share"):
            self._row[self._cls] = data.strip()
            self._cls = None

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None


def chromium(*flags: str, page: Path, profile: Path) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *flags, page.as_uri()]  # fmt: skip
    return subprocess.run(command, capture_output=True, timeout=SAFETY_TIMEOUT_S, check=True)


@pytest.mark.skipif(
    not CHROMIUM.exists() and not (os.environ.get("CI") or os.environ.get("DIPLOSTANCE_CI")),
    reason="/usr/bin/chromium is not installed (Debian package `chromium`; .ci/run installs it)",
)
def test_headless_chromium_draws_the_charts_and_shows_the_numbers_of_the_json_summary(labelled, tmp_path):
    from PIL import Image

    data = summarize([labelled], tmp_path / "sum", n_resamples=100)
    page = tmp_path / "sum" / "index.html"
    dom = chromium("--dump-dom", page=page, profile=tmp_path / "profile-dom").stdout.decode("utf-8")
    parsed = _Page()
    parsed.feed(dom)
    assert 'data-loaded="1"' in dom  # the page's load handler ran in the browser
    assert len(parsed.images) == len(list((tmp_path / "sum").glob("*.png"))) >= 2
    assert all(int(img["data-natural-width"]) > 0 and int(img["data-natural-height"]) > 0 for img in parsed.images)
    shown = {(r["actor"], r["target"]): (int(r["favor"]), int(r["against"]), int(r["total"]), float(r["share"]))
             for r in parsed.rows}  # fmt: skip
    expected = {(c["actor"], c["target"]): (c["favor"], c["against"], c["total"], c["favor_share"])
                for c in data["cells"]}  # fmt: skip
    assert shown.keys() == expected.keys()
    for key, (favor, against, total, share) in expected.items():
        assert shown[key][:3] == (favor, against, total) and shown[key][3] == pytest.approx(share, abs=1e-4)
    shot = tmp_path / "page.png"
    chromium("--window-size=1200,1600", f"--screenshot={shot}", page=page, profile=tmp_path / "profile-shot")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    favor_blue = (np.abs(pixels - [0x2B, 0x8C, 0xBE]).sum(axis=2) < 30).mean()
    against_red = (np.abs(pixels - [0xE3, 0x4A, 0x33]).sum(axis=2) < 30).mean()
    assert favor_blue > 0.001 and against_red > 0.001  # the bars are drawn, not a blank or broken image
