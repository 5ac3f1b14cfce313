"""The round trip with a real Label Studio server (label-studio 1.23, SQLite in tmp_path, a free local port).

The server and label-studio-sdk run from `.venv-labelstudio/` (`make labelstudio-env`; made here
when missing): their pins clash with the project's. Two users with legacy API tokens are created
headlessly (`label-studio init --user-token`, `label-studio start --username`). The project is created
and the tasks imported with diplostance/labelstudio/client.py, the annotations are submitted through
the SDK as each user, and the JSON export is pulled and imported back with `diplostance labelstudio import`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from diplostance import cli
from diplostance.annotations import load_corpus
from tests.conftest import SAFETY_TIMEOUT_S

pytestmark = pytest.mark.labelstudio

ROOT = Path(__file__).resolve().parents[1]
LS_VENV = ROOT / ".venv-labelstudio"
LS_PYTHON = LS_VENV / "bin" / "python"
CLIENT = ROOT / "diplostance" / "labelstudio" / "client.py"
STARTUP_SECONDS = 600  # Django starts slowly on a busy 2-core machine
# No version check against PyPI, no analytics, no Sentry: the server talks to nobody but the test.
LS_ENV = {
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
}
TARGETS = ("un_treaty", "multistakeholder", "bilateral_cbm")

# Runs in .venv-labelstudio: submits each user's choices (or a skip) for the tasks whose text it names.
ANNOTATE = """
import json, sys
from label_studio_sdk import LabelStudio
job = json.loads(sys.argv[1])
for user in job["users"]:
    client = LabelStudio(base_url=job["url"], api_key=user["token"])
    for task in client.tasks.list(project=job["project"], fields="all"):
        choice = user["choices"].get(task.data["text"])
        if choice == "skip":
            client.annotations.create(id=task.id, result=[], was_cancelled=True)
        elif choice:
            result = [{"from_name": t, "to_name": "sentence", "type": "choices", "value": {"choices": [v]}}
                      for t, v in choice.items()]
            client.annotations.create(id=task.id, result=result, lead_time=2.5)
admin = LabelStudio(base_url=job["url"], api_key=job["users"][0]["token"])
print(json.dumps([t.total_predictions for t in admin.tasks.list(project=job["project"], fields="all")]))
"""

# Four sentences of two new articles, as label.py writes them; the model is unsure of the first three.
SENTENCES = [
    ("wire-1", 0, "رحبت الوزارة باعتماد الجمعية العامة للاتفاقية الأممية لمكافحة الجرائم السيبرانية.", 0.40),
    ("wire-1", 1, "وقال المتحدث إن بلاده ستوقع الاتفاقية في هانوي الشهر المقبل.", 0.45),
    ("wire-2", 0, "اتفق البلدان على إنشاء خط اتصال مباشر بين فريقي الاستجابة للطوارئ الحاسوبية.", 0.50),
    ("wire-2", 1, "وعقد الاجتماع في العاصمة بحضور السفيرين.", 0.95),
]


@dataclass
class Server:
    url: str
    tokens: tuple[str, str]  # the admin's and the second annotator's legacy API tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_environment() -> None:
    if not (LS_VENV / ".installed").exists():
        subprocess.run(["make", "labelstudio-env"], cwd=ROOT, check=True)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory) -> Server:
    ensure_environment()
    data = tmp_path_factory.mktemp("label-studio")
    if (LS_VENV / "template").is_dir():  # an empty migrated database: saves the migrations
        shutil.copytree(LS_VENV / "template", data, dirs_exist_ok=True)
    env = {**os.environ, **LS_ENV}
    label_studio = str(LS_VENV / "bin" / "label-studio")
    tokens = (secrets.token_hex(20), secrets.token_hex(20))
    log = (data / "server.log").open("w")
    subprocess.run(
        [label_studio, "init", "--data-dir", str(data), "--username", "admin@example.org", "--password",
         "admin-pass-1", "--user-token", tokens[0], "--enable-legacy-api-token", "--quiet"],
        env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=STARTUP_SECONDS,
    )  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [label_studio, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data), "--username", "annotator@example.org", "--password", "annotator-pass-2",
         "--user-token", tokens[1]],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Label Studio did not start; its log:\n{(data / 'server.log').read_text()[-3000:]}")
            time.sleep(2)
        yield Server(url, tokens)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def ls_run(*args: str) -> str:
    done = subprocess.run([str(LS_PYTHON), *args], capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def round_trip(label_studio, tmp_path_factory) -> dict:
    """config -> export -> push -> two users annotate -> pull -> import into an annotation folder."""
    work = tmp_path_factory.mktemp("round-trip")
    annotations = work / "annotations"
    annotations.mkdir()
    shutil.copy(ROOT / "annotations" / "schema.yaml", annotations / "schema.yaml")
    (annotations / "splits.yaml").write_text("train: []\ndev: []\ntest: []\n", encoding="utf-8")
    labelled = work / "labelled.jsonl"
    with labelled.open("w", encoding="utf-8") as f:
        for doc_id, sent_idx, text, p in SENTENCES:
            probs = {t: {"favor": p, "against": 0.0, "none": round(1 - p, 4)} for t in TARGETS}
            record = {"doc_id": doc_id, "source": f"news/{doc_id}.txt", "sent_idx": sent_idx, "start": 0,
                      "end": len(text), "text": text, "stances": {}, "probs": probs}  # fmt: skip
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    config, tasks, export = work / "config.xml", work / "tasks.json", work / "export.json"
    common = ["--annotations", str(annotations)]
    assert cli.main(["labelstudio", "config", "--out", str(config), *common]) == 0
    assert cli.main(["labelstudio", "export", str(labelled), "--out", str(tasks), "--n", "3", *common]) == 0
    auth = ["--url", label_studio.url, "--api-key", label_studio.tokens[0]]
    pushed = json.loads(ls_run(str(CLIENT), "push", *auth, "--config", str(config), "--tasks", str(tasks)))
    favor, against = ({t: "none" for t in TARGETS} | {"un_treaty": v} for v in ("favor", "against"))
    texts = [s[2] for s in SENTENCES]
    users = [
        {"token": label_studio.tokens[0], "choices": {texts[0]: favor, texts[1]: favor, texts[2]: favor}},
        {"token": label_studio.tokens[1], "choices": {texts[0]: favor, texts[1]: against, texts[2]: "skip"}},
    ]
    job = {"url": label_studio.url, "project": pushed["project"], "users": users}
    predictions = json.loads(ls_run("-c", ANNOTATE, json.dumps(job, ensure_ascii=False)))
    ls_run(str(CLIENT), "pull", *auth, "--project", str(pushed["project"]), "--out", str(export))
    out = annotations / "annotated" / "round_01.jsonl"
    argv = ["labelstudio", "import", str(export), "--out", str(out), "--split", "train", *common]
    assert cli.main(argv) == 0
    return {"pushed": pushed, "predictions": predictions, "annotations": annotations, "out": out, "texts": texts}


def test_the_server_takes_the_generated_config_and_the_tasks_with_their_pre_annotations(round_trip):
    assert round_trip["pushed"]["tasks"] == 3
    assert round_trip["predictions"] == [1, 1, 1]


def test_agreed_and_majority_annotations_come_back_as_valid_annotated_records(round_trip):
    records = [json.loads(line) for line in round_trip["out"].read_text(encoding="utf-8").splitlines()]
    texts = round_trip["texts"]
    assert [r["text"] for r in records] == [texts[0], texts[2]]
    both, one = records
    assert both["stances"]["un_treaty"] == "favor" and both["source"] == "annotated"
    assert len(both["annotations"]) == 2 and "+" in both["annotator"]
    assert len(one["annotations"]) == 1  # the other annotator skipped it
    assert both["provenance"]["model_version"] == "diplostance:labelled"
    assert both["provenance"]["input"] == "news/wire-1.txt"
    corpus = load_corpus(round_trip["annotations"], ROOT / "seeds")
    assert corpus.problems == [] and corpus.splits["wire-1"] == "train"


def test_a_disagreement_goes_to_review(round_trip):
    review_file = round_trip["out"].with_name("round_01.review.jsonl")
    [review] = [json.loads(line) for line in review_file.read_text(encoding="utf-8").splitlines()]
    assert review["text"] == round_trip["texts"][1]
    assert sorted(review["votes"]["un_treaty"].values()) == ["against", "favor"]
