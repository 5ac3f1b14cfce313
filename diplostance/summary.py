"""Archive summary: who holds which stance, from label.py's output.

`python -m diplostance summarize labelled.jsonl [more.jsonl|.parquet ...] --out DIR` reads labelled sentence
records (with `holders`, written when the model folder has a holder model) and writes into DIR, which appears
only once complete:

- `summary.json`: per actor x target, the favor and against counts, the favor share with a 95% bootstrap
  interval (documents resampled: sentences of one article are not independent), and the sentences behind the
  cell (doc_id, source, sent_idx and character offsets); per period (month, or year with --period year) the
  same counts when the records or the articles (--articles FILE, joined on doc_id) carry a date;
- `actor_target.csv` and `periods.csv`: the same tables flat;
- `stance_by_actor_<target>.png` (favor and against per actor, the most frequent actors), and
  `stance_over_time.png` (the most frequent actors' favor share per period) when there are dates;
- `index.html`: one self-contained page (the plots inlined as base64) with the tables.

A joint holder counts for each of its actors; `author` (the outlet's own voice) and `unknown` are rows too.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diplostance.errors import BadDataError, UserError
from diplostance.outputs import atomic_directory

SIDES = ("favor", "against")
DATE_FIELDS = ("date", "published", "published_at")
DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?")
MAX_ACTORS_PLOTTED = 12
MAX_ACTORS_OVER_TIME = 5
MAX_SENTENCES_SHOWN = 5  # per cell, in the page (summary.json has them all)


class SummaryError(BadDataError):
    """A labelled file that cannot be summarised: the message names the file, line and rule."""


@dataclass
class Cell:
    """The stance-bearing sentences one actor holds on one target."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIDES, 0))
    by_doc: dict[str, list[int]] = field(default_factory=dict)  # doc key -> [favor, against]
    sentences: list[dict] = field(default_factory=list)


def _period(value, granularity: str) -> str | None:
    match = DATE_RE.match(str(value or "").strip())
    if not match:
        return None
    year, month = match.group(1), match.group(2)
    if granularity == "year":
        return year
    return f"{year}-{month}" if month else None


def read_dates(path: Path, id_field: str, date_field: str) -> dict[str, str]:
    """doc_id -> date from the articles label.py read (JSON Lines with an id and a date field)."""
    dates = {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the articles file ({error})") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise SummaryError(f"{path}:{number}: invalid-json: {error}") from error
        if isinstance(item, dict) and item.get(id_field) is not None and item.get(date_field):
            dates[str(item[id_field])] = str(item[date_field])
    return dates


def read_records(path: Path):
    """The labelled sentence records of a .jsonl or .parquet file, with their line (row) numbers."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        from diplostance.labelling.records import HOLDERS_COLUMN

        table = pq.read_table(path)
        targets = [c.split(".", 1)[1] for c in table.column_names if c.startswith("stance.")]
        for number, row in enumerate(table.to_pylist(), start=1):
            record = {k: row.get(k) for k in ("doc_id", "source", "sent_idx", "start", "end", "text", *DATE_FIELDS)}
            record["stances"] = {t: row[f"stance.{t}"] for t in targets}
            if row.get(HOLDERS_COLUMN):
                record["holders"] = json.loads(row[HOLDERS_COLUMN])
            yield number, record
        return
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from error
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise SummaryError(f"{path}:{number}: invalid-json: {error}") from error
            yield number, record


@dataclass
class Summary:
    targets: list[str]
    actors: dict[str, dict]  # id -> {name_en, name_ar, type}
    cells: dict[tuple[str, str], Cell]
    periods: dict[tuple[str, str, str], dict[str, int]]  # (period, actor, target) -> counts
    granularity: str
    records: int
    stance_bearing: int
    without_holders: int  # stance-bearing records with no holder (labelled by a folder with no holder model)
    inputs: list[str]


def collect(paths: list[Path], dates: dict[str, str] | None = None, granularity: str = "month") -> Summary:
    """Count every holder's favor and against per target (and per period) over the labelled files."""
    dates = dates or {}
    targets: list[str] = []
    actors: dict[str, dict] = {}
    cells: dict[tuple[str, str], Cell] = defaultdict(Cell)
    periods: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(SIDES, 0))
    n = bearing = missing = 0
    for path in paths:
        for number, record in read_records(path):
            where = f"{path}:{number}"
            if not isinstance(record, dict) or not isinstance(record.get("stances"), dict):
                raise SummaryError(f"{where}: not-a-record: expected label.py's records (an object with `stances`)")
            n += 1
            for target in record["stances"]:
                if target not in targets:
                    targets.append(target)
            sided = {t: p for t, p in record["stances"].items() if p in SIDES}
            if not sided:
                continue
            bearing += 1
            holders = record.get("holders")
            if not holders:
                missing += 1
                continue
            if not isinstance(holders, dict):
                raise SummaryError(f"{where}: holders: expected an object target -> holders")
            doc_key = f"{record.get('source', '')}\t{record.get('doc_id', '')}"
            date = next((record[f] for f in DATE_FIELDS if record.get(f)), None) or dates.get(str(record.get("doc_id")))
            period = _period(date, granularity) if date else None
            for target, polarity in sided.items():
                for holder in holders.get(target) or ():
                    if not isinstance(holder, dict) or "id" not in holder:
                        raise SummaryError(f"{where}: holders.{target}: each holder needs an `id`")
                    actor = holder["id"]
                    actors.setdefault(actor, {k: holder.get(k) for k in ("name_en", "name_ar", "type")})
                    cell = cells[actor, target]
                    cell.counts[polarity] += 1
                    cell.by_doc.setdefault(doc_key, [0, 0])[SIDES.index(polarity)] += 1
                    cell.sentences.append(
                        {
                            "doc_id": record.get("doc_id"),
                            "source": record.get("source"),
                            "sent_idx": record.get("sent_idx"),
                            "start": record.get("start"),
                            "end": record.get("end"),
                            "stance": polarity,
                        }
                    )
                    if period is not None:
                        periods[period, actor, target][polarity] += 1
    return Summary(
        targets, actors, dict(cells), dict(periods), granularity, n, bearing, missing, [str(p) for p in paths]
    )


def share_interval(by_doc: dict[str, list[int]], n_resamples: int, seed: int) -> list[float] | None:
    """95% percentile bootstrap of the favor share, resampling documents."""
    counts = np.array(list(by_doc.values()), dtype=float)
    if len(counts) == 0 or n_resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), (n_resamples, len(counts)))
    favor = counts[picks, 0].sum(axis=1)
    total = counts[picks].sum(axis=(1, 2))
    shares = favor[total > 0] / total[total > 0]
    if len(shares) == 0:
        return None
    return [round(float(np.percentile(shares, 2.5)), 4), round(float(np.percentile(shares, 97.5)), 4)]


def to_json(summary: Summary, n_resamples: int = 1000, seed: int = 0) -> dict:
    rows = []
    for (actor, target), cell in sorted(summary.cells.items(), key=lambda kv: (-sum(kv[1].counts.values()), kv[0])):
        total = sum(cell.counts.values())
        rows.append(
            {
                "actor": actor,
                **{f"actor_{k}": v for k, v in summary.actors.get(actor, {}).items()},
                "target": target,
                **cell.counts,
                "total": total,
                "favor_share": round(cell.counts["favor"] / total, 4),
                "favor_share_ci": share_interval(cell.by_doc, n_resamples, seed),
                "documents": len(cell.by_doc),
                "sentences": cell.sentences,
            }
        )
    periods = [
        {
            "period": period,
            "actor": actor,
            "target": target,
            **counts,
            "total": sum(counts.values()),
            "favor_share": round(counts["favor"] / sum(counts.values()), 4),
        }
        for (period, actor, target), counts in sorted(summary.periods.items())
    ]
    return {
        "inputs": summary.inputs,
        "records": summary.records,
        "stance_bearing": summary.stance_bearing,
        "stance_bearing_without_holders": summary.without_holders,
        "targets": summary.targets,
        "actors": summary.actors,
        "cells": rows,
        "period": summary.granularity,
        "periods": periods,
        "confidence": 0.95,
        "n_resamples": n_resamples,
    }


# ---------------------------------------------------------------------------- plots


def _actor_label(data: dict, actor: str) -> str:
    # Latin names: matplotlib's default font draws no Arabic shaping (the page shows the Arabic names)
    return data["actors"].get(actor, {}).get("name_en") or actor


def plot_by_actor(data: dict, target: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in data["cells"] if r["target"] == target][:MAX_ACTORS_PLOTTED][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(rows), 2) + 1.4))
    labels = [_actor_label(data, r["actor"]) for r in rows]
    favor = [r["favor"] for r in rows]
    against = [r["against"] for r in rows]
    ax.barh(labels, favor, color="#2b8cbe", label="favor")
    ax.barh(labels, against, left=favor, color="#e34a33", label="against")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # counts
    ax.set_xlabel("stance-bearing sentences")
    ax.set_title(f"{target}: stance by holder")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_over_time(data: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals: dict[str, int] = defaultdict(int)
    for row in data["periods"]:
        totals[row["actor"]] += row["total"]
    top = sorted(totals, key=lambda a: (-totals[a], a))[:MAX_ACTORS_OVER_TIME]
    periods = sorted({row["period"] for row in data["periods"]})
    targets = [t for t in data["targets"] if any(r["target"] == t for r in data["periods"])]
    fig, axes = plt.subplots(len(targets), 1, figsize=(8, 2.6 * len(targets) + 0.6), squeeze=False)
    for ax, target in zip(axes[:, 0], targets, strict=True):
        for actor in top:
            points = {r["period"]: r for r in data["periods"] if r["actor"] == actor and r["target"] == target}
            xs = [i for i, p in enumerate(periods) if p in points]
            if xs:
                ys = [points[periods[i]]["favor_share"] for i in xs]
                ax.plot(xs, ys, marker="o", label=_actor_label(data, actor))
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("favor share")
        ax.set_title(target)
        ax.set_xticks(range(len(periods)), periods, rotation=45, ha="right", fontsize=7)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- the page


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


def _ci(row: dict) -> str:
    ci = row.get("favor_share_ci")
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"


def render_html(data: dict, images: dict[str, bytes]) -> str:
    """One self-contained page: the plots as data: URIs, the tables as in summary.json."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>diplostance: stance holders</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:.25em .5em;text-align:right}th{background:#eee}"
        "td.l{text-align:left}.ar{direction:rtl}img{max-width:100%;border:1px solid #ddd}</style></head><body>",
        "<h1>Stance holders</h1>",
        f'<p id="facts">{data["records"]} labelled sentences from {len(data["inputs"])} file(s); '
        f"{data['stance_bearing']} take a stance on a target"
        + (
            f", {data['stance_bearing_without_holders']} of them without holders (labelled by a model folder "
            "without a holder model)"
            if data["stance_bearing_without_holders"]
            else ""
        )
        + ". Favor share = favor / (favor + against), 95% bootstrap interval over documents.</p>",
    ]
    for name, content in images.items():
        encoded = base64.b64encode(content).decode("ascii")
        parts.append(f'<figure><img class="plot" alt="{_esc(name)}" src="data:image/png;base64,{encoded}"></figure>')
    for target in data["targets"]:
        rows = [r for r in data["cells"] if r["target"] == target]
        parts += [
            f"<h2>{_esc(target)}</h2>",
            f'<table class="cells" data-target="{_esc(target)}"><tr><th>actor</th><th>name</th><th>type</th>'
            "<th>favor</th><th>against</th><th>total</th><th>favor share</th><th>95% CI</th><th>documents</th>"
            "<th>sentences (doc_id:sent_idx, start-end)</th></tr>",
        ]
        for r in rows:
            shown = ", ".join(
                f"{_esc(s['doc_id'])}:{_esc(s['sent_idx'])} ({_esc(s['start'])}-{_esc(s['end'])}) {s['stance']}"
                for s in r["sentences"][:MAX_SENTENCES_SHOWN]
            ) + (
                f" … +{len(r['sentences']) - MAX_SENTENCES_SHOWN}" if len(r["sentences"]) > MAX_SENTENCES_SHOWN else ""
            )
            parts.append(
                f'<tr data-actor="{_esc(r["actor"])}"><td class="l">{_esc(r["actor"])}</td>'
                f'<td class="l">{_esc(r.get("actor_name_en"))} '
                f'<span class="ar">{_esc(r.get("actor_name_ar"))}</span></td>'
                f'<td class="l">{_esc(r.get("actor_type"))}</td><td class="favor">{r["favor"]}</td>'
                f'<td class="against">{r["against"]}</td><td class="total">{r["total"]}</td>'
                f'<td class="share">{r["favor_share"]:.4f}</td><td>{_ci(r)}</td><td>{r["documents"]}</td>'
                f'<td class="l">{shown}</td></tr>'
            )
        parts.append("</table>")
    if data["periods"]:
        parts += [
            f"<h2>By {data['period']}</h2>",
            '<table class="periods"><tr><th>period</th><th>actor</th><th>target</th><th>favor</th><th>against</th>'
            "<th>favor share</th></tr>",
        ]
        parts += [
            f'<tr><td>{_esc(r["period"])}</td><td class="l">{_esc(r["actor"])}</td><td class="l">{_esc(r["target"])}'
            f'</td><td class="favor">{r["favor"]}</td><td class="against">{r["against"]}</td>'
            f'<td class="share">{r["favor_share"]:.4f}</td></tr>'
            for r in data["periods"]
        ]
        parts.append("</table>")
    else:
        parts.append("<p>No dates: the records carry no date field and no --articles file gave one.</p>")
    # What the browser drew: each plot's natural size, read back by the page test (tests/test_summary.py)
    parts.append(
        "<script>window.addEventListener('load',function(){document.querySelectorAll('img.plot').forEach("
        "function(i){i.setAttribute('data-natural-width',i.naturalWidth);"
        "i.setAttribute('data-natural-height',i.naturalHeight);});"
        "document.body.setAttribute('data-loaded','1');});</script>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c) for c in columns])
    return buffer.getvalue()


def summarize(
    paths: list[str | Path],
    out: str | Path,
    articles: str | Path | None = None,
    id_field: str = "id",
    date_field: str = "date",
    period: str = "month",
    n_resamples: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write the archive summary of the labelled files into `out` (see the module's docstring)."""
    out = Path(out)
    if period not in ("month", "year"):
        raise UserError(f"--period must be month or year, got {period!r}")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists; choose another --out or add --overwrite")
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such labelled file (label.py's OUT.jsonl or OUT.parquet)")
    dates = read_dates(Path(articles), id_field, date_field) if articles else {}
    data = to_json(collect(paths, dates, period), n_resamples, seed)
    images = {f"stance_by_actor_{t}.png": _png(plot_by_actor(data, t)) for t in data["targets"]
              if any(r["target"] == t for r in data["cells"])}  # fmt: skip
    if data["periods"]:
        images["stance_over_time.png"] = _png(plot_over_time(data))
    with atomic_directory(out) as staging:
        (staging / "summary.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        cell_columns = ["actor", "actor_name_en", "actor_name_ar", "actor_type", "target", "favor", "against",
                        "total", "favor_share", "favor_share_low", "favor_share_high", "documents"]  # fmt: skip
        flat = [{**r, "favor_share_low": (r["favor_share_ci"] or [None, None])[0],
                 "favor_share_high": (r["favor_share_ci"] or [None, None])[1]} for r in data["cells"]]  # fmt: skip
        (staging / "actor_target.csv").write_text(_csv(flat, cell_columns), encoding="utf-8")
        period_columns = ["period", "actor", "target", "favor", "against", "total", "favor_share"]
        (staging / "periods.csv").write_text(_csv(data["periods"], period_columns), encoding="utf-8")
        for name, content in images.items():
            (staging / name).write_bytes(content)
        (staging / "index.html").write_text(render_html(data, images), encoding="utf-8")
    return data
