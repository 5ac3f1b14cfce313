"""label.py started inside the article folder (`inputs=[.]`): Hydra writes its run folder (log, config)
there, by default under outputs/label/; neither this run's folder nor an earlier run's is read as input
(issue 20)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import ROOT, SAFETY_TIMEOUT_S
from tests.test_labelling import GOOD, read_jsonl


def test_label_py_started_in_the_article_folder_does_not_read_hydras_run_folders(tiny_model_dir, tmp_path):
    articles = tmp_path / "articles"
    shutil.copytree(GOOD, articles)
    earlier = articles / "outputs" / "label" / "earlier_run"  # what the previous run from here left
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / ".hydra" / "config.yaml").write_text("model_dir: M\n")
    (earlier / "label.log").write_text("[2025-01-01 00:00:00,000][root][INFO] - labelled\n")
    command = [sys.executable, str(ROOT / "scripts" / "label.py"), f"model_dir={tiny_model_dir}", "inputs=[.]",
               "output=../OUT.jsonl", "progress_bar=false"]  # fmt: skip
    run = subprocess.run(command, cwd=articles, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    logs = [p for p in (articles / "outputs" / "label").glob("*/label.log") if p.parent != earlier]
    assert len(logs) == 1  # this run's log is in the article folder, as Hydra's default puts it
    assert read_jsonl(tmp_path / "OUT.errors.jsonl") == []
    assert {d["doc_id"] for d in read_jsonl(tmp_path / "OUT.docs.jsonl")} == {
        "un_rules",
        "bilateral_talks",
        "news-001",
        "2",
    }
