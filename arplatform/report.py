"""The pipeline's report: report.md and report.html in one folder, with the sample grid,
the tokenizer's figures, the training curve as a PNG and the sample-quality table."""

from __future__ import annotations

import html
import os
import shutil

from .core.io import atomic_write, save_text


def training_curve(uri: str | None, run_id: str | None, path: str) -> str | None:
    """train/loss per step and val/loss per epoch of an MLflow run, plotted; None without MLflow."""
    if not (uri and run_id):
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display; set here, not at import time
    import matplotlib.pyplot as plt

    from .tracking import client

    c = client(uri)
    train = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "train/loss"))
    val = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "val/loss"))
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train/loss (per log step)", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val/loss (per epoch)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("nats per token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def write_report(folder: str, facts: dict) -> tuple[str, str]:
    """report.md and report.html from `facts`: name, grid (a PNG path), tokenizer (dict),
    curve (a PNG path or None), quality_table (markdown), runs (lines), times (stage → s)."""
    os.makedirs(folder, exist_ok=True)
    images = {}  # key → file name inside the report folder (the report travels as one folder)
    for key in ("grid", "curve"):
        if facts.get(key):
            target = os.path.join(folder, f"{key}.png")
            if os.path.abspath(facts[key]) != os.path.abspath(target):
                shutil.copyfile(facts[key], target)
            images[key] = f"{key}.png"
    tok = facts.get("tokenizer") or {}
    tok_rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in sorted(tok.items())
                if isinstance(v, (int, float))]
    md = [f"# {facts['name']}: the whole chain", "",
          "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in facts["times"].items()), "",
          "## Samples", "", f"![samples]({images['grid']})" if "grid" in images else "(no grid)", "",
          "## Sample quality", "", facts["quality_table"].rstrip(), "",
          "## Tokenizer (held-out images)", "", "| measure | value |", "|---|---|",
          *[f"| {k} | {v} |" for k, v in tok_rows], "",
          "## Training", "", f"![training curve]({images['curve']})" if "curve" in images else
          "(no curve: tracking was off)", "", "## Runs", "", *[f"- {line}" for line in facts["runs"]], ""]
    md_path = save_text(os.path.join(folder, "report.md"), "\n".join(md))
    html_path = save_text(os.path.join(folder, "report.html"), to_html(facts, images, tok_rows))
    return md_path, html_path


def to_html(facts: dict, images: dict, tok_rows: list) -> str:
    esc = html.escape

    def table(markdown: str) -> str:
        rows = [r.strip().strip("|").split("|") for r in markdown.strip().splitlines() if not r.startswith("|---")]
        head, *body = rows
        return ("<table><tr>" + "".join(f"<th>{esc(c.strip())}</th>" for c in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{esc(c.strip())}</td>" for c in r) + "</tr>" for r in body)
                + "</table>")

    tok_md = "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in tok_rows)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{esc(facts['name'])}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}</style>",
             f"<h1>{esc(facts['name'])}: the whole chain</h1>",
             "<p>Wall time: " + esc(", ".join(f"{k} {v:.0f} s" for k, v in facts["times"].items())) + "</p>",
             "<h2>Samples</h2>" + (f"<img src='{esc(images['grid'])}' alt='samples'>" if "grid" in images else ""),
             "<h2>Sample quality</h2>" + table(facts["quality_table"]),
             "<h2>Tokenizer (held-out images)</h2>" + table(tok_md),
             "<h2>Training</h2>" + (f"<img src='{esc(images['curve'])}' alt='training curve'>" if "curve" in images
                                    else "<p>(no curve: tracking was off)</p>"),
             "<h2>Runs</h2><ul>" + "".join(f"<li>{esc(line)}</li>" for line in facts["runs"]) + "</ul>"]
    return "\n".join(parts) + "\n"
