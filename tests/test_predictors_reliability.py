"""Model folders are checked before use whatever the kind and backend; each case one line, never a traceback."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from diplostance.cli import main as cli
from diplostance.ensemble import EnsembleChoice, save_ensemble
from diplostance.errors import UserError
from diplostance.labelling import LabelOptions, check_arithmetic, load_labelling_predictor
from diplostance.outputs import atomic_directory
from diplostance.predictors import ModelFolderError, check_model_folder, load_predictor
from diplostance.predictors.ensemble import ENSEMBLE_CONFIG, EnsembleFolderError
from diplostance.predictors.onnx import (
    ONNX_CONFIG,
    ONNX_FILES,
    TEMPORARY_PREFIX,
    OnnxBackendError,
    OnnxPredictor,
    export_onnx,
    file_hash,
)
from tests.conftest import ROOT

TEXTS = ["وقعت الدولتان مذكرة تفاهم للتعاون في الأمن السيبراني.", "عقد الاجتماع في جنيف."]


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------- transformer folders


def test_a_pickled_pytorch_model_bin_is_refused_in_one_line(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError) as error:
        check_model_folder(folder)
    assert one_line(error.value).startswith(f"{folder / 'pytorch_model.bin'}: a pickled PyTorch checkpoint")


# ---------------------------------------------------------------- ONNX exports


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx-checked") / "model"
    shutil.copytree(tiny_model_dir, folder)
    export_onnx(folder, int8=True)
    return folder


@pytest.fixture
def export_copy(exported, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    return folder


def edit_onnx_config(folder: Path, **changes) -> None:
    config = json.loads((folder / ONNX_CONFIG).read_text())
    config.update(changes)
    (folder / ONNX_CONFIG).write_text(json.dumps(config))


def load_onnx(folder: Path, tmp_path: Path, precision: str = "fp32"):
    return load_predictor(folder, backend="onnx", precision=precision, cache_dir=tmp_path / "cache")


def test_a_truncated_model_onnx_is_one_line_naming_the_file(export_copy, tmp_path):
    data = (export_copy / "model.onnx").read_bytes()
    (export_copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxBackendError) as error:
        load_onnx(export_copy, tmp_path)
    assert one_line(error.value).startswith(f"{export_copy / 'model.onnx'}: is not the fp32 export recorded")


def test_a_text_file_given_as_the_onnx_file_is_one_line(export_copy, tmp_path):
    text = tmp_path / "model.onnx"
    text.write_text("not a model\n")
    with pytest.raises(OnnxBackendError) as error:
        OnnxPredictor(export_copy, "fp32", onnx_file=text)
    assert one_line(error.value).startswith(f"{text}: not a usable ONNX model")


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.onnx"])
def test_an_onnx_file_entry_outside_the_folder_is_never_read(export_copy, tmp_path, name):
    shutil.copy(export_copy / "model.onnx", export_copy.parent / "outside.onnx")
    hashes = {"fp32": file_hash(Path(name) if name.startswith("/") else export_copy.parent / "outside.onnx")}
    edit_onnx_config(export_copy, files={"fp32": name}, sha256=hashes)
    with pytest.raises(OnnxBackendError) as error:
        load_onnx(export_copy, tmp_path)
    message = one_line(error.value)
    assert message.startswith(f"{export_copy / ONNX_CONFIG}: ") and repr(name) in message


def six_output_graph(path: Path) -> None:
    """An ONNX model with the export's inputs and a `logits` output of width 6 (another model's export)."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ("input_ids",)]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 6], [0.1] * 6)
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["m", "w"], ["logits"]),
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 6])
    graph = helper.make_graph(nodes, "other", inputs, [output], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


def test_an_export_with_other_labels_is_refused_against_the_folders_labels(export_copy, tmp_path):
    six_output_graph(export_copy / "model.onnx")
    edit_onnx_config(export_copy, sha256={"fp32": file_hash(export_copy / "model.onnx")})  # the hash agrees
    with pytest.raises(OnnxBackendError) as error:
        load_onnx(export_copy, tmp_path)
    assert "gives 6 logits per sentence, but the model folder has 9 labels" in one_line(error.value)


def test_another_export_under_a_matching_onnx_config_is_refused_by_its_hash(export_copy, tmp_path):
    shutil.copy(export_copy / "model.int8.onnx", export_copy / "model.onnx")  # a working graph, not the recorded one
    with pytest.raises(OnnxBackendError) as error:
        load_onnx(export_copy, tmp_path)
    assert "is not the fp32 export recorded in onnx_config.json" in one_line(error.value)


def test_int8_naming_the_fp32_graph_is_refused(export_copy, tmp_path):
    edit_onnx_config(export_copy, files={"int8": "model.onnx"}, sha256={"int8": file_hash(export_copy / "model.onnx")})
    with pytest.raises(OnnxBackendError) as error:
        load_onnx(export_copy, tmp_path, precision="int8")
    assert "precision=int8, but the file holds no quantised operator" in one_line(error.value)


def test_the_recorded_export_still_loads_and_matches_torch(exported, tmp_path):
    onnx_probs = load_onnx(exported, tmp_path).predict_proba(TEXTS)
    np.testing.assert_allclose(onnx_probs, load_predictor(exported).predict_proba(TEXTS), atol=1e-4)
    assert not (tmp_path / "cache").exists()  # the folder's own export was used


def test_export_onnx_refuses_an_existing_export_without_overwrite(export_copy, capsys):
    before = file_hash(export_copy / "model.onnx")
    with pytest.raises(SystemExit) as stop:
        cli(["export-onnx", str(export_copy)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {export_copy}: already holds an export")
    assert "--overwrite" in err[0] and file_hash(export_copy / "model.onnx") == before


def test_export_onnx_never_writes_through_a_link_to_an_input(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.onnx").symlink_to("model.safetensors")
    weights = file_hash(folder / "model.safetensors")
    with pytest.raises(SystemExit) as stop:
        cli(["export-onnx", str(folder), "--overwrite"])
    assert stop.value.code == 2 and "an input is never written to" in capsys.readouterr().err
    assert file_hash(folder / "model.safetensors") == weights


def test_export_onnx_overwrite_removes_stale_temporary_folders_and_says_so(export_copy, capsys):
    stale = export_copy / (TEMPORARY_PREFIX + "killed")
    stale.mkdir()
    (stale / "raw.onnx").write_bytes(b"half")
    assert cli(["export-onnx", str(export_copy), "--overwrite"]) == 0
    assert not stale.exists()
    assert f"removed {stale}: the temporary folder of an interrupted ONNX export" in capsys.readouterr().err
    assert sorted(p.name for p in export_copy.glob(TEMPORARY_PREFIX + "*")) == []


def test_a_temporary_folder_of_a_running_export_is_kept(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    running = out / (TEMPORARY_PREFIX + "running")
    running.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # what a running export holds
        export_onnx(tiny_model_dir, out)
    finally:
        os.close(fd)
    assert running.is_dir() and (out / ONNX_CONFIG).is_file()


# ---------------------------------------------------------------- ensembles


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, tiny_model_dir, tfidf_model_dir) -> Path:
    out = tmp_path_factory.mktemp("ensemble-checked") / "model"
    labels = check_model_folder(tiny_model_dir)[1]
    choice = EnsembleChoice([0.5, 0.5], [0.0, 0.5, 0.0], 0.0, {})
    save_ensemble(out, {"transformer": tiny_model_dir, "tfidf": tfidf_model_dir}, choice, labels)
    return out


@pytest.mark.parametrize(
    "change",
    [
        ("weight", "NaN"),
        ("weight", "Infinity"),
        ("weight", "0.9"),  # 0.9 + 0.5: the weights no longer sum to 1
        ("weight", "-0.5"),
        ("none_offset", "NaN"),
        ("none_offset", "-Infinity"),
    ],
)
def test_every_number_of_an_ensemble_config_is_checked(ensemble_dir, tmp_path, change):
    folder = tmp_path / "model"
    shutil.copytree(ensemble_dir, folder)
    text = (folder / ENSEMBLE_CONFIG).read_text()
    key, value = change
    if key == "weight":
        text = text.replace('"weight": 0.5', f'"weight": {value}', 1)
    else:
        text = text.replace('"none_offset": [\n    0.0,', f'"none_offset": [\n    {value},', 1)
    assert value in text
    (folder / ENSEMBLE_CONFIG).write_text(text)
    with pytest.raises(EnsembleFolderError) as error:
        load_predictor(folder)
    assert one_line(error.value).startswith(f"{folder / ENSEMBLE_CONFIG}: not a usable ensemble config")


def label_options(model_dir: Path, tmp_path: Path, **overrides) -> LabelOptions:
    cfg = {"model_dir": str(model_dir), "inputs": [str(ROOT / "seeds")], "output": str(tmp_path / "out.jsonl")}
    return LabelOptions.from_config({**cfg, "progress_bar": False, **overrides})


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"precision": "fp16", "device": "cpu"}, "precision=fp16 needs a GPU"),
        ({"device": "cuda:7"}, "device=cuda:7"),
        ({"backend": "onnx", "precision": "bf16"}, "precision=bf16 is not available with backend=onnx"),
    ],
)
def test_label_checks_an_ensembles_arithmetic_up_front(ensemble_dir, tmp_path, overrides, error):
    if torch.cuda.is_available():
        pytest.skip("the refusals are for a machine without a GPU")
    with pytest.raises(UserError, match=error):
        check_arithmetic(label_options(ensemble_dir, tmp_path, **overrides), "ensemble")


def test_label_runs_an_ensembles_members_on_the_backend_and_precision_asked(ensemble_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DIPLOSTANCE_ONNX_CACHE", str(tmp_path / "cache"))
    options = label_options(ensemble_dir, tmp_path, backend="onnx", precision="int8")
    predictor = load_labelling_predictor(options, "ensemble")
    member = predictor.members[0]
    assert isinstance(member, OnnxPredictor) and member.precision == "int8"
    assert member.onnx_path.name == ONNX_FILES["int8"]


# ---------------------------------------------------------------- file modes


def test_files_written_into_an_atomic_folder_get_the_umasks_usual_mode(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with atomic_directory(tmp_path / "model") as staging:
        save_file({"w": np.zeros(3, dtype=np.float32)}, str(staging / "weights.safetensors"))  # written 0600
    assert (tmp_path / "model" / "weights.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~umask
