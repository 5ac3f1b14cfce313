"""The predictors package: one registry dispatches every model folder kind; its modules import in one direction."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import diplostance.predictors as predictors
from diplostance.ensemble import EnsembleChoice, save_ensemble
from diplostance.predictors import KINDS, ModelFolderError, check_model_folder, load_predictor
from diplostance.predictors.ensemble import EnsemblePredictor
from diplostance.predictors.folder import check_text_processing
from diplostance.predictors.tfidf import TfidfPredictor
from diplostance.predictors.transformer import TransformerPredictor
from diplostance.schema import LabelSpace
from tests.conftest import ROOT

MODULES = [
    "diplostance.predictors",
    "diplostance.predictors.folder",
    "diplostance.predictors.tfidf",
    "diplostance.predictors.transformer",
    "diplostance.predictors.ensemble",
    "diplostance.predictors.onnx",
    "diplostance.ensemble",
    "diplostance.evaluation",
]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, tiny_model_dir, tfidf_model_dir) -> Path:
    out = tmp_path_factory.mktemp("registry") / "ensemble"
    labels = check_model_folder(tiny_model_dir)[1]
    save_ensemble(
        out, {"a": tiny_model_dir, "b": tfidf_model_dir}, EnsembleChoice([0.5, 0.5], [0.0] * 3, 0.0, {}), labels
    )
    return out


def test_the_registry_dispatches_each_kind_to_its_predictor(tiny_model_dir, tfidf_model_dir, ensemble_dir):
    expected = {tfidf_model_dir: ("tfidf", TfidfPredictor), tiny_model_dir: ("transformer", TransformerPredictor)}
    expected[ensemble_dir] = ("ensemble", EnsemblePredictor)
    for folder, (kind, cls) in expected.items():
        assert check_model_folder(folder)[0] == kind
        assert isinstance(load_predictor(folder), cls)
    assert set(KINDS) >= {"tfidf", "transformer", "ensemble"}
    assert predictors.BACKEND_MODULES[("transformer", "onnx")] is predictors.onnx


def test_a_folder_of_an_unknown_kind_is_one_model_folder_error(tmp_path, tfidf_model_dir):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "text_processing.json").write_text((tfidf_model_dir / "text_processing.json").read_text())
    (folder / "someday_config.json").write_text("{}")
    with pytest.raises(ModelFolderError) as error:
        load_predictor(folder)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{folder}: not a model folder of a known kind")
    assert all(module.CONFIG_FILE in message for module in KINDS.values())


class Echo:
    """A predictor that gives every stance of its labels the same probability."""

    def __init__(self, labels: LabelSpace, normalization):
        self.labels, self.normalization = labels, normalization

    def predict_proba(self, texts):
        shape = (len(texts), len(self.labels.targets), len(self.labels.polarities))
        return np.full(shape, 1 / len(self.labels.polarities), dtype=np.float32)


def echo_kind() -> types.ModuleType:
    module = types.ModuleType("echo")
    module.CONFIG_FILE = "echo_config.json"
    module.check_folder = lambda model_dir, config: LabelSpace(tuple(config["targets"]), ("favor", "against", "none"))
    module.check_options = lambda **options: None
    module.load = lambda model_dir, config, **options: Echo(
        module.check_folder(model_dir, config), check_text_processing(model_dir)
    )
    return module


def test_a_new_kind_is_one_module_and_one_registry_entry(tmp_path, tfidf_model_dir, monkeypatch):
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "text_processing.json").write_text((tfidf_model_dir / "text_processing.json").read_text())
    (folder / "echo_config.json").write_text(json.dumps({"targets": ["un_treaty"]}))
    monkeypatch.setitem(KINDS, "echo", echo_kind())
    assert check_model_folder(folder) == ("echo", LabelSpace(("un_treaty",), ("favor", "against", "none")))
    assert load_predictor(folder).predict_proba(["نص."]).shape == (1, 1, 3)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_module_of_the_package_imports_diplostance_inside_a_function():
    """A late import is how a cycle hides; the package imports one way (kinds -> folder -> library)."""
    files = sorted((ROOT / "diplostance" / "predictors").glob("*.py"))
    files += [ROOT / "diplostance" / "ensemble.py", ROOT / "diplostance" / "evaluation.py"]
    late = []
    for path in files:
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diplostance"):
                        late.append(f"{path.name}:{node.lineno}")
                    if isinstance(node, ast.Import) and any(a.name.startswith("diplostance") for a in node.names):
                        late.append(f"{path.name}:{node.lineno}")
    assert late == []


def test_the_old_modules_are_gone():
    assert not (ROOT / "diplostance" / "predictor.py").exists()
    assert not (ROOT / "diplostance" / "onnx_backend.py").exists()
