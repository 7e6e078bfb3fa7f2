"""The pipeline's report: report.md (pictures beside it) and report.html (pictures inlined):
the comparison with the previous run, times, samples, quality, nearest training images,
reconstructions, tokenizer figures, the training curve, the runs, the config."""

from __future__ import annotations

import base64
import html
import json
import os
import shutil

from ..core.io import atomic_write, save_json, save_text

PICTURES = {"grid": "samples", "nearest": "samples (top) and their nearest training images (below)",
            "reconstructions": "training images (top) and the tokenizer's reconstructions (below)",
            "curve": "training curve"}
COMPARED = (("best_val_loss", "val loss (nats/token)", "lower"), ("accuracy", "class accuracy", "higher"),
            ("frechet", "Fréchet distance", "lower"))


def human(x) -> str:
    """A number as a person reads it: 3 significant digits, thousands separated."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if x != x:  # nan
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def training_curve(uri: str | None, run_id: str | None, path: str) -> str | None:
    """train/loss per step and val/loss per epoch of an MLflow run, plotted; None without MLflow."""
    if not (uri and run_id):
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display; set here, not at import time
    import matplotlib.pyplot as plt

    from .mlflow_runs import client

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


def compare_with_previous(folder: str, entry: dict) -> dict | None:
    """The entry of the previous training run this report folder showed (history.json), before
    this one is recorded; None for the first run of the config."""
    path = os.path.join(folder, "history.json")
    try:
        with open(path, encoding="utf-8") as f:
            history = [h for h in json.load(f) if isinstance(h, dict)]
    except (OSError, ValueError, TypeError):
        history = []
    earlier = [h for h in history if h.get("run_name") != entry["run_name"]]
    save_json(path, earlier + [entry])  # one entry per training run, the latest last
    return earlier[-1] if earlier else None


def comparison_rows(current: dict, previous: dict | None) -> list[tuple[str, str, str, str]]:
    """(measure, previous, now, change) for val loss, accuracy and Fréchet distance."""
    rows = []
    for key, label, better in COMPARED:
        now, before = current.get(key), (previous or {}).get(key)
        if not isinstance(now, (int, float)):
            continue
        if isinstance(before, (int, float)):
            change = now - before
            verdict = "same" if change == 0 else ("better" if (change < 0) == (better == "lower") else "worse")
            rows.append((label, human(before), human(now), f"{change:+.3g} ({verdict})"))
        else:
            rows.append((label, "–", human(now), "first run of this config"))
    return rows


def write_report(folder: str, facts: dict) -> tuple[str, str]:
    """report.md and report.html from `facts`: name, run_name, pictures ({key: PNG path or None}
    for the keys of PICTURES), quality (quality.json), quality_table (markdown), tokenizer (dict),
    params (int), times (stage → s), runs (lines), config (dict)."""
    os.makedirs(folder, exist_ok=True)
    pictures = {}  # key → file name inside the report folder (report.md travels as one folder)
    for key, path in facts["pictures"].items():
        if path:
            target = os.path.join(folder, f"{key}.png")
            if os.path.abspath(path) != os.path.abspath(target):
                shutil.copyfile(path, target)
            pictures[key] = f"{key}.png"
    quality = facts["quality"]
    current = {"run_name": facts["run_name"], "best_val_loss": facts.get("best_val_loss"),
               "accuracy": quality.get("accuracy"), "frechet": quality["frechet"]["samples"]}
    sections = sections_of(facts, comparison_rows(current, compare_with_previous(folder, current)))
    md_path = save_text(os.path.join(folder, "report.md"), to_markdown(facts["name"], sections, pictures))
    inlined = {key: inline_png(os.path.join(folder, name)) for key, name in pictures.items()}
    html_path = save_text(os.path.join(folder, "report.html"), to_html(facts["name"], sections, inlined))
    return md_path, html_path


def sections_of(facts: dict, comparison: list) -> list[tuple[str, list]]:
    """The report as (title, blocks); a block is ("table", header, rows), ("picture", key),
    ("text", line) or ("config", yaml text)."""
    import yaml

    tok = facts.get("tokenizer") or {}
    per_class = (facts["quality"].get("accuracy_per_class") or {}).items()
    times = [(stage, f"{seconds:.0f} s") for stage, seconds in facts["times"].items()]
    return [
        ("Against the previous run of this config", [("table", ("measure", "previous", "now", "change"), comparison)]),
        ("Time and size", [("table", ("stage", "wall time"), times),
                           ("text", f"model: {human(facts['params'])} parameters")]),
        ("Samples", [("picture", "grid")]),
        ("Sample quality", [("markdown", facts["quality_table"]),
                            ("table", ("class", "accuracy"), [(str(c), human(a)) for c, a in sorted(per_class)]),
                            ("picture", "nearest")]),
        ("Tokenizer", [("picture", "reconstructions"),
                       ("text", "held-out images:"),
                       ("table", ("measure", "value"), [(k, human(v)) for k, v in sorted(tok.items())
                                                        if isinstance(v, (int, float))])]),
        ("Training", [("picture", "curve")]),
        ("Runs", [("text", line) for line in facts["runs"]]),
        ("Config", [("config", yaml.safe_dump(facts["config"], sort_keys=False))]),
    ]


def markdown_table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def to_markdown(name: str, sections: list, pictures: dict) -> str:
    lines = [f"# {name}: the whole chain", ""]
    for title, blocks in sections:
        lines += [f"## {title}", ""]
        for kind, *body in blocks:
            if kind == "table" and body[1]:
                lines += markdown_table(*body)
            elif kind == "markdown":
                lines += [body[0].rstrip(), ""]
            elif kind == "picture":
                key = body[0]
                lines += [f"![{PICTURES[key]}]({pictures[key]})" if key in pictures else f"({PICTURES[key]}: none)", ""]
            elif kind == "text":
                lines += [f"- {body[0]}"]
            elif kind == "config":
                lines += ["<details><summary>composed config</summary>", "", "```yaml", body[0].rstrip(), "```", "",
                          "</details>", ""]
        lines.append("")
    return "\n".join(lines)


def inline_png(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


# every picture loads or the page says so: a headless browser's DOM dump shows the count
CHECK_IMAGES = ("<script>addEventListener('load',()=>{const i=[...document.images];"
                "document.body.dataset.images=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length})"
                "</script>")


def to_html(name: str, sections: list, inlined: dict) -> str:
    esc = html.escape

    def table(header, rows) -> str:
        return ("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in header) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")

    def block(kind, *body) -> str:
        if kind == "table":
            return table(*body) if body[1] else ""
        if kind == "markdown":
            rows = [r.strip().strip("|").split("|") for r in body[0].strip().splitlines() if not r.startswith("|---")]
            return table([c.strip() for c in rows[0]], [[c.strip() for c in r] for r in rows[1:]])
        if kind == "picture":
            key = body[0]
            return (f"<figure><img src='{inlined[key]}' alt='{esc(PICTURES[key])}'><figcaption>{esc(PICTURES[key])}"
                    "</figcaption></figure>" if key in inlined else f"<p>({esc(PICTURES[key])}: none)</p>")
        if kind == "text":
            return f"<p>{esc(body[0])}</p>"
        return f"<details><summary>composed config</summary><pre>{esc(body[0])}</pre></details>"

    parts = [f"<!doctype html><meta charset='utf-8'><title>{esc(name)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}img{image-rendering:"
             "pixelated;min-width:24em;max-width:100%}figure{margin:.5em 0}</style>", CHECK_IMAGES,
             f"<h1>{esc(name)}: the whole chain</h1>"]
    for title, blocks in sections:
        parts.append(f"<h2>{esc(title)}</h2>" + "".join(block(*b) for b in blocks))
    return "\n".join(parts) + "\n"
