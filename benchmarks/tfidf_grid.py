"""tf-idf dev-grid cost: wall time of TfidfStanceModel.fit (C grid x none-offset grid) and what it chose.

    python benchmarks/tfidf_grid.py [data overrides ...] [--set model.tfidf.n_jobs=2 ...] [--baseline FILE] [--out JSON]

Data overrides are train.py's (`data=file data.format=json ...`; default: the shipped corpus).
`--baseline FILE` fits with another copy of diplostance/baseline.py (an older commit's, say) on the
same normalised texts, to compare times and choices. Prints one JSON object: seconds, threads,
per-target C and none offset, dev grid scores, and test macro_f_avg.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from joblib.externals.loky import get_reusable_executor  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from diplostance.data import load_data  # noqa: E402
from diplostance.scoring import stance_scores  # noqa: E402
from diplostance.text import TextNormalization, normalize  # noqa: E402


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--baseline", help="another baseline.py to fit with")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        own_data = any(o.startswith("data=") for o in args.overrides)
        shipped = [] if own_data else [f"data.directory={ROOT / 'annotations'}"]
        cfg = compose("train", ["model=tfidf", *shipped, *args.overrides])
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline_under_test", args.baseline)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        import diplostance.baseline as module
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = load_data(cfg.data)
    norm = TextNormalization.from_dict(OmegaConf.to_container(cfg.text_processing), "text_processing")
    train, dev, test = (data.splits[s] for s in ("train", "dev", "test"))
    texts = [normalize(x, norm) for x in train["text"]]
    dev_texts = [normalize(x, norm) for x in dev["text"]]
    options = OmegaConf.to_container(cfg.model.tfidf, resolve=True)
    started, cpu = time.perf_counter(), _cpu_seconds()
    model = module.TfidfStanceModel.fit(texts, train["labels"], data.labels, options, dev_texts, dev["labels"])
    seconds = time.perf_counter() - started
    get_reusable_executor().shutdown(wait=True)  # parallel workers' CPU time counts once they have exited
    cpu = _cpu_seconds() - cpu
    probs = model.predict_proba([normalize(x, norm) for x in test["text"]])
    gold = test["labels"]
    scores = stance_scores(probs.argmax(-1), gold, data.labels.targets, data.labels.polarities)
    selection = model.options["selection"]
    result = {
        "data": data.description,
        "sentences": {name: len(split) for name, split in data.splits.items()},
        "targets": len(data.labels.targets),
        "fit_seconds": round(seconds, 1),
        "fit_cpu_seconds": round(cpu, 1),  # this process and its finished workers: comparable on a busy machine
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "n_jobs": options.get("n_jobs"),
        "warm_start": options.get("warm_start"),
        "test_macro_f_avg": round(scores["macro_f_avg"], 4),
        "chosen": {t: [s.get("C"), s.get("none_offset")] for t, s in selection.items()},
        "selection": selection,
    }
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
