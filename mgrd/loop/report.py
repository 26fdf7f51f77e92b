"""The loop's report: `summary.json`, `report.html`, `report.md` and PNG plots, rebuilt from a run folder.

Everything is read back from what the stages wrote (`mgrd.loop.driver`'s layout), so the report of a killed or
finished run can be rebuilt at any time (`mgrd loop --report-only`) and shows only what was measured:

- per iteration (0 = the cold-start model): accuracy (%) on the held-out splits it was evaluated on (`dev`:
  new items of the training distribution; `test`: the suite's shifted parameter ranges; `ood`: shifted ranges
  plus a corruption), overall and per family (`iter_t/eval/<split>/summary.json`, greedy answers graded by each
  family's task); grounding of the eval answers (lexicon pass rate and verified-claim rate,
  `mgrd.eval.metrics.grounding`) and mean think length, on dev when it was evaluated (else test);
- per MGRD iteration (t >= 1), from `iter_t/select/stats.json`: the filters' pass rates over the K candidates of
  every question, how many chains were kept (D_audio-cot), the pass@K histogram, the RL set's size, and
  examples of accepted and rejected chains with the failed filters' reasons;
- the RL reward per step (`iter_t/rl/metrics.jsonl`) and each iteration's wall time (`stages.jsonl`).

Plots: accuracy.png, grounding.png, think.png, filters.png, pass_hist.png, rewards.png (under `plots/`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

FILTER_NAMES = ("correct", "grounding", "coherence", "selfcog", "all")


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
    return out


def _iterations(root: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in root.glob("iter_*") if p.name.split("_")[1].isdigit())


EVAL_SPLITS = ("dev", "test", "ood")  # held-out items of the training distribution; shifted ranges; + corruption


def main_split(evals: dict) -> str:
    """The split whose chains the grounding, claim and think-length columns describe: dev when evaluated."""
    return "dev" if "dev" in evals else "test"


def _eval_numbers(folder: Path) -> dict:
    out: dict[str, Any] = {}
    for split in EVAL_SPLITS:
        summary = _json(folder / split / "summary.json")
        if summary is None:
            continue
        family = summary.get("categories", {}).get("family", {})
        grounding = summary.get("grounding", {})
        out[split] = {"accuracy": summary["overall"]["normalised"], "n": summary["overall"]["n"],
                      "ci95": summary["overall"].get("official_ci95"),
                      "by_family": {k: v["normalised"] for k, v in family.items()},
                      "by_kind": {k: v["normalised"] for k, v in summary.get("categories", {}).get("kind", {}).items()},
                      "grounding_rate": grounding.get("lexicon_pass_rate"),
                      "verified_claim_rate": grounding.get("verified_claim_rate"),
                      "chains": grounding.get("chains"), "think_mean": summary.get("think", {}).get("stats", {})
                      .get("mean"), "think_unit": summary.get("think", {}).get("unit")}
    return out


def _rl_numbers(folder: Path) -> dict | None:
    done = _json(folder / "done.json")
    if done is not None and done.get("skipped"):
        return {"skipped": done["skipped"]}
    rows = [r for r in _rows(folder / "metrics.jsonl") if "reward" in r]
    if not rows:
        return None
    return {"reward": [r["reward"] for r in rows], "steps": [r["step"] for r in rows],
            "think_len": [r.get("think_len_mean") for r in rows]}


def build_summary(root: str | Path) -> dict:
    """The run's numbers per iteration (module docstring); also written to `root/summary.json`."""
    root = Path(root)
    walls: dict[int, float] = {}
    for row in _rows(root / "stages.jsonl"):
        walls[row["iteration"]] = walls.get(row["iteration"], 0.0) + row["wall_s"]
    iterations = []
    for t in _iterations(root):
        folder = root / f"iter_{t}"
        entry: dict[str, Any] = {"iteration": t, "eval": _eval_numbers(folder / "eval"),
                                 "wall_s": round(walls.get(t, 0.0), 1)}
        stats = _json(folder / "select" / "stats.json")
        if stats is not None:
            entry["sampling"] = {k: stats[k] for k in ("questions", "candidates", "kept_chains", "kept_items",
                                                       "filters", "pass_hist", "band", "band_items", "rl_items",
                                                       "think_words_mean", "think_tokens_mean", "closed_think")}
            entry["examples"] = stats.get("examples", {})
        for stage in ("sft", "rl"):
            done = _json(folder / stage / "done.json")
            if done is not None and done.get("skipped"):
                entry[f"{stage}_skipped"] = done["skipped"]
        rl = _rl_numbers(folder / "rl")
        if rl is not None and "reward" in rl:
            entry["rl"] = rl
        iterations.append(entry)
    summary = {"run": root.name, "iterations": iterations,
               "note": "measured numbers of this run; accuracy in %, rates in [0, 1]"}
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------------------------- plots


def _plots(root: Path, summary: dict) -> list[str]:
    """Draw the PNGs; returns their paths relative to `root`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = summary["iterations"]
    ts = [e["iteration"] for e in its]
    folder = root / "plots"
    folder.mkdir(exist_ok=True)
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        written.append(f"plots/{name}")

    def series(split, key):
        return [e["eval"].get(split, {}).get(key) for e in its]

    splits = [s for s in EVAL_SPLITS if any(s in e["eval"] for e in its)]
    main = main_split({s: 1 for s in splits})
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for split in splits:
        ax.plot(ts, [v if v is not None else float("nan") for v in series(split, "accuracy")], "o-", label=split)
    ax.set(xlabel="iteration (0 = cold start)", ylabel="accuracy (%)", title="held-out accuracy")
    ax.legend()
    save(fig, "accuracy.png")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for split in splits:
        ax.plot(ts, [v if v is not None else float("nan") for v in series(split, "grounding_rate")], "o-",
                label=f"grounding rate ({split})")
    ax.plot(ts, [v if v is not None else float("nan") for v in series(main, "verified_claim_rate")], "s--",
            label=f"verified claims ({main})")
    sampled = [(e["iteration"], e["sampling"]["filters"].get("coherence")) for e in its if "sampling" in e]
    if sampled:
        ax.plot(*zip(*sampled), "^:", label="coherence (sampled)")
    ax.set(xlabel="iteration", ylabel="rate", ylim=(-0.05, 1.05), title="grounding and coherence")
    ax.legend(fontsize=7)
    save(fig, "grounding.png")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ts, [v if v is not None else float("nan") for v in series(main, "think_mean")], "o-",
            label=f"eval answers ({main})")
    if sampled:
        ax.plot([e["iteration"] for e in its if "sampling" in e],
                [e["sampling"]["think_words_mean"] for e in its if "sampling" in e], "s--", label="sampled candidates")
    ax.set(xlabel="iteration", ylabel="think length (eval: tokens; sampled: words)", title="think length")
    ax.legend(fontsize=7)
    save(fig, "think.png")

    mgrd = [e for e in its if "sampling" in e]
    if mgrd:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        width = 0.8 / len(mgrd)
        for j, e in enumerate(mgrd):
            rates = [e["sampling"]["filters"].get(n, 0.0) for n in FILTER_NAMES]
            ax.bar([i + j * width for i in range(len(FILTER_NAMES))], rates, width,
                   label=f"iter {e['iteration']} (kept {e['sampling']['kept_chains']})")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(FILTER_NAMES))], FILTER_NAMES)
        ax.set(ylabel="pass rate", ylim=(0, 1.05), title="filter pass rates (kept chains in the legend)")
        ax.legend(fontsize=7)
        save(fig, "filters.png")

        fig, ax = plt.subplots(figsize=(6, 3.2))
        for j, e in enumerate(mgrd):
            hist = e["sampling"]["pass_hist"]
            ax.bar([c + j * width for c in range(len(hist))], hist, width, label=f"iter {e['iteration']}")
        lo, hi = mgrd[-1]["sampling"]["band"]
        ax.axvspan(lo - 0.5, hi + 0.5, color="grey", alpha=0.15, label=f"RL band {lo}..{hi}")
        ax.set(xlabel="correct of K", ylabel="questions", title="pass@K histogram")
        ax.legend(fontsize=7)
        save(fig, "pass_hist.png")

    rl = [e for e in its if "rl" in e]
    if rl:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for e in rl:
            ax.plot(e["rl"]["steps"], e["rl"]["reward"], "o-", label=f"iter {e['iteration']}")
        ax.set(xlabel="RL step", ylabel="mean reward", title="RL reward")
        ax.legend(fontsize=7)
        save(fig, "rewards.png")
    return written


# ---------------------------------------------------------------------------------------------- tables


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_rows(summary: dict) -> list[list[str]]:
    """One row per iteration: the numbers the speedrun prints and RESULTS.md records."""
    rows = []
    for e in summary["iterations"]:
        dev, test, ood = (e["eval"].get(split, {}) for split in EVAL_SPLITS)
        main = e["eval"].get(main_split(e["eval"]), {})
        s = e.get("sampling", {})
        rows.append([str(e["iteration"]), _fmt(dev.get("accuracy")), _fmt(test.get("accuracy")),
                     _fmt(ood.get("accuracy")), _fmt(main.get("grounding_rate"), 2),
                     _fmt(main.get("verified_claim_rate"), 2), _fmt(main.get("think_mean")),
                     _fmt(s.get("filters", {}).get("all"), 2) if s else "–",
                     _fmt(s.get("kept_chains")) if s else "–", _fmt(s.get("rl_items")) if s else "–",
                     _fmt(e.get("wall_s"), 0)])
    return rows


HEADER = ["iter", "dev acc %", "test acc %", "ood acc %", "grounding", "verified claims", "think len (eval)",
          "all filters", "kept chains", "RL items", "wall s"]


def markdown_table(summary: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(summary)]
    return "\n".join(lines)


def _example_rows(summary: dict) -> list[tuple[int, str, dict]]:
    rows = []
    for e in summary["iterations"]:
        for kind in ("accepted", "rejected"):
            for ex in e.get("examples", {}).get(kind, []):
                rows.append((e["iteration"], kind, ex))
    return rows


def write_report(root: str | Path) -> Path:
    """Rebuild `summary.json`, the plots, `report.md` and `report.html`; returns the HTML's path."""
    root = Path(root)
    summary = build_summary(root)
    plots = _plots(root, summary)
    notes = []
    for e in summary["iterations"]:
        for stage in ("sft", "rl"):
            if e.get(f"{stage}_skipped"):
                notes.append(f"iteration {e['iteration']}: {stage} skipped ({e[f'{stage}_skipped']})")
    md = [f"# MGRD loop report: {root.name}", "", "Measured on this run; iteration 0 is the cold-start model. "
          "Accuracy on held-out splits by greedy decoding; grounding = share of eval chains passing the lexicon "
          "rule; verified claims = share of checkable claims the item's facts support.", "",
          markdown_table(summary), ""]
    md += [f"- {n}" for n in notes] + ([""] if notes else [])
    md += [f"![{Path(p).stem}]({p})" for p in plots] + ["", "## Example chains", "",
                                                         "| iter | kind | item | reasoning | answer | verdict |",
                                                         "|---|---|---|---|---|---|"]
    for t, kind, ex in _example_rows(summary):
        cells = [str(t), kind, ex["item"], ex["reasoning"], str(ex["answer"]), ex["verdict"]]
        md.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    (root / "report.md").write_text("\n".join(md) + "\n")

    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in table_rows(summary))
    examples = "".join(
        f"<tr><td>{t}</td><td>{kind}</td><td>{esc(ex['item'])}</td><td>{esc(ex['reasoning'])}</td>"
        f"<td>{esc(str(ex['answer']))}</td><td>{esc(ex['verdict'])}</td></tr>" for t, kind, ex in _example_rows(summary))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>MGRD loop: {esc(root.name)}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}</style></head><body>"
            f"<h1>MGRD loop report: {esc(root.name)}</h1><p>{esc(md[2])}</p>"
            f"<table><tr>{head}</tr>{body}</table>"
            + "".join(f"<p>{esc(n)}</p>" for n in notes)
            + "".join(f"<img src='{esc(p)}' alt='{esc(Path(p).stem)}'>" for p in plots)
            + "<h2>Example chains</h2><table><tr><th>iter</th><th>kind</th><th>item</th><th>reasoning</th>"
            f"<th>answer</th><th>verdict</th></tr>{examples}</table></body></html>\n")
    out = root / "report.html"
    out.write_text(page)
    return out
