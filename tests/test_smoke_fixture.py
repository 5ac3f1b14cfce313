import json


def test_tiny_run_writes_outputs(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert 0.0 <= metrics["macro_f_avg"] <= 1.0
    assert (tiny_run / "model" / "config.json").is_file()
    assert not (tiny_run / "model" / "training_args.bin").exists()
