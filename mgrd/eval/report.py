"""A run's report: the summary table (text), PNG plots and `report.html`; `compare` across runs.

- `summary_table(summary)`: overall and per-category n, official and normalised scores, excluded items and
  errors, as a Markdown table (what `mgrd eval` prints).
- `write_report(run, summary, records)`: `think_length.png` (accuracy per think-length bucket: the
  inverted-scaling curve, with the distribution beside it), `variants.png` (accuracy per audio variant:
  ablations and corruptions) when there is more than one variant, `think_budget.png` (accuracy against a
  forced thinking budget) when there are `think<N>` variants, and `report.html` that shows the tables and
  plots (images referenced by file name, so the folder can be moved).
- `compare_table(summaries)`: one row per run and a reference row per published model (the report's numbers),
  for `mgrd eval compare`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

HTML_NAME = "report.html"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _row(name: str, agg: dict) -> list[str]:
    return [name, _fmt(agg["n"]), _fmt(agg["official"]), _fmt(agg["normalised"]), _fmt(agg["excluded"]),
            _fmt(agg["errors"]), _fmt(agg["judge_invalid"]), _fmt(agg["missing"])]


HEADER = ["", "n", "official", "normalised", "excluded", "errors", "judge invalid", "missing"]


def table_rows(summary: dict) -> list[list[str]]:
    """The summary's rows: overall, then every category value, then every non-clean variant."""
    rows = [_row("overall", summary["overall"])]
    for key, groups in summary.get("categories", {}).items():
        rows += [_row(f"{key}={value}", agg) for value, agg in groups.items()]
    for key, m in summary.get("macro", {}).items():
        if len(summary["categories"].get(key, {})) > 1:
            rows.append([f"macro over {key}", "", _fmt(m["official"]), _fmt(m["normalised"]), "", "", "", ""])
    rows += [_row(f"variant {name}", agg) for name, agg in summary.get("variants", {}).items() if name != "clean"]
    return rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def summary_table(summary: dict) -> str:
    """The Markdown table of a summary, headed by the task."""
    return f"### {summary['task']}\n\n" + markdown(HEADER, table_rows(summary))


# ---------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_think_length(summary: dict, records, path: Path) -> Path | None:
    """Accuracy per think-length bucket (left) and the think-length histogram (right)."""
    think = summary.get("think", {})
    buckets = think.get("buckets") or []
    if not buckets:
        return None
    plt = _pyplot()
    unit = think.get("unit", "tokens")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    mids = [(b["lo"] + b["hi"]) / 2 for b in buckets]
    left.plot(mids, [b["accuracy"] for b in buckets], marker="o")
    for x, b in zip(mids, buckets):
        left.annotate(f"n={b['n']}", (x, b["accuracy"]), textcoords="offset points", xytext=(0, 6), ha="center",
                      fontsize=8)
    left.set(xlabel=f"think length ({unit}, bucket middle)", ylabel="accuracy (%, normalised)",
             title=f"{summary['task']}: accuracy vs think length", ylim=(-5, 105))
    lengths = [r.extra.get("think_tokens") if unit == "tokens" else len(r.completions[0].reasoning.split())
               for r in records if r.completions and r.extra.get("variant", "clean") == "clean"]
    right.hist([n for n in lengths if n is not None], bins=min(20, max(1, len(lengths))))
    right.set(xlabel=f"think length ({unit})", ylabel="items", title="think-length distribution")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_budget(summary: dict, path: Path) -> Path | None:
    """Accuracy against the forced thinking budget (`think<N>` variants): the report's inverted-scaling curve."""
    curve = summary.get("budget_curve") or []
    if len(curve) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([c["budget"] for c in curve], [c["normalised"] if c["normalised"] is not None else float("nan")
                                           for c in curve], marker="o")
    ax.set(xlabel="forced thinking budget (tokens)", ylabel="accuracy (%, normalised)",
           title=f"{summary['task']}: accuracy vs thinking budget", ylim=(-5, 105))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_variants(summary: dict, path: Path) -> Path | None:
    """Normalised accuracy per audio variant (clean, ablations, SNR steps, speeds)."""
    variants = summary.get("variants", {})
    if len(variants) < 2:
        return None
    plt = _pyplot()
    names = list(variants)
    values = [variants[n]["normalised"] if variants[n]["normalised"] is not None else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names)), 3.5))
    ax.bar(names, values)
    ax.set(ylabel="accuracy (%, normalised)", title=f"{summary['task']}: accuracy under audio variants", ylim=(0, 105))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- html


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(run: Path, summary: dict, records) -> Path:
    """Write the PNGs and `report.html` into the run folder; returns the HTML path."""
    images = [p for p in (plot_think_length(summary, records, run / "think_length.png"),
                          plot_variants(summary, run / "variants.png"),
                          plot_budget(summary, run / "think_budget.png")) if p is not None]
    sections = [f"<h1>mgrd eval: {html.escape(summary['task'])}</h1>",
                _html_table(HEADER, table_rows(summary))]
    if summary.get("ablation"):
        rows = [[name, _fmt(a["n"]), _fmt(a["changed"]), _fmt(a["sensitivity"])]
                for name, a in summary["ablation"].items()]
        sections += ["<h2>Audio ablation</h2><p>Share of answers that change when the audio is replaced.</p>",
                     _html_table(["ablation", "n", "changed", "sensitivity"], rows)]
    numbers = {"grounding": summary.get("grounding"), "think": summary.get("think"),
               "budget_curve": summary.get("budget_curve")}
    sections += ["<h2>Grounding and thinking</h2>",
                 f"<pre>{html.escape(json.dumps(numbers, indent=2))}</pre>"]
    sections += [f'<img src="{p.name}" alt="{p.stem}">' for p in images]
    if summary.get("errors"):
        items = "".join(f"<li>{html.escape(e)}</li>" for e in summary["errors"][:100])
        sections.append(f"<h2>Errors ({len(summary['errors'])})</h2><ul>{items}</ul>")
    sections.append(f"<h2>Scoring</h2><pre>{html.escape(json.dumps(summary.get('scoring'), indent=2))}</pre>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}td:first-child{text-align:left}img{max-width:100%;margin:1em 0}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>mgrd eval {html.escape(summary['task'])}</title>" \
           f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    path = run / HTML_NAME
    path.write_text(page, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- compare


def compare_table(runs: Sequence[Path]) -> str:
    """Runs side by side (official and normalised, overall) with the report's published numbers as reference rows.

    Raises:
        ValueError: a folder without summary.json, or runs of different tasks.
    """
    summaries = []
    for run in runs:
        path = Path(run) / "summary.json"
        if not path.is_file():
            raise ValueError(f"{run}: no summary.json (not a finished eval run)")
        summaries.append((Path(run), json.loads(path.read_text())))
    tasks = {s["task"] for _, s in summaries}
    if len(tasks) != 1:
        raise ValueError(f"compare runs of one task at a time; got {sorted(tasks)}")
    rows = [[str(run), _fmt(s["overall"]["n"]), _fmt(s["overall"]["official"]), _fmt(s["overall"]["normalised"]),
             _fmt(s["overall"]["errors"])] for run, s in summaries]
    published = summaries[0][1].get("published", {})
    rows += [[f"{model} (published)", "", _fmt(float(value)), "", ""] for model, value in published.items()]
    return f"### {tasks.pop()}\n\n" + markdown(["run", "n", "official", "normalised", "errors"], rows)
