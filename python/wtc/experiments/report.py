"""`wtc report`: the paper's table 1 and figures 2-7 from a sweep folder, written as Markdown,
HTML and CSV. The numbers come from :mod:`wtc.experiments.results` (how runs are aggregated),
the pictures from :mod:`wtc.experiments.figures`; the Markdown and HTML tables are one table of
cells (:func:`table_cells`) in two markups."""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wtc.experiments.figures import (
    correlation_heatmap,
    scatter_vs_reconstruction,
    traversals,
    violins,
)
from wtc.experiments.results import (  # noqa: F401 (also the names this module exported)
    CORRELATED,
    Collected,
    Setting,
    _ranks,
    best_run,
    best_settings,
    collect,
    columns,
    digits,
    display,
    lower_is_better,
    rank_correlations,
    setting_label,
    setting_lines,
    table1,
)
from wtc.experiments.sweep import expected_eval

_digits = digits  # the old private name


def __getattr__(name):
    # The registry's columns as the dicts this module held before, read at the time of asking.
    if name == "COLUMNS":
        return columns()
    if name == "LOWER_IS_BETTER":
        return {m for m in columns() if lower_is_better(m)}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- table 1's cells, shared by the Markdown and the HTML table -----------------------------------

@dataclass(frozen=True)
class Markup:
    escape: Callable[[str], str]
    best: str  #: format of the best cell of a data set's block
    second: str  #: format of the second best
    dagger: str  #: the mark of a setting missing seeds


MARKDOWN = Markup(str, "**{}**", "<u>{}</u>", "†")
HTML = Markup(html.escape, "<b>{}</b>", "<u>{}</u>", "&dagger;")


def _cell(row, m, places) -> str:
    mean, std = row[m]
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{places}f} ({std:.{places}f})"


def table_header(metrics) -> list:
    return ["data set", "model", "strength"] + [display(m) for m in metrics]


def table_cells(row: dict, metrics, markup: Markup) -> list:
    """One table1 row's cells (data set, model, strength, then each metric), escaped and
    marked up: the best of a block and the second best, and a strength short of seeds."""
    e = markup.escape
    if row["strength"] is None:
        strength = "-"
    else:
        strength = e(setting_label(row["strength"], row["value"], row.get("axes", ())))
        if row["seeds"] < row["expected_seeds"]:
            strength += f" {markup.dagger}({row['seeds']}/{row['expected_seeds']} seeds)"
    cells = [e(row["data"]), e(row["model"]), strength]
    for m in metrics:
        text = e(_cell(row, m, digits(m)))
        rank = row.get(f"{m}_rank")
        cells.append(markup.best.format(text) if rank == 0 else
                     markup.second.format(text) if rank == 1 else text)
    return cells


def table1_markdown(c: Collected, rows: list, select_by: str) -> str:
    header = table_header(c.metrics)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(table_cells(r, c.metrics, MARKDOWN)) + " |" for r in rows]
    arrows = ", ".join(f"{display(m)} {'lower' if lower_is_better(m) else 'higher'}"
                       for m in c.metrics)
    lines += ["", f"Mean (std) over seeds at each model's best strength by "
                  f"{display(select_by)}; best of each data set in bold, second underlined "
                  f"({arrows} is better). † marks a setting missing seeds."]
    return "\n".join(lines)


def write_csv(c: Collected, rows: list, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["data", "model", "strength", "value"] + _axes_header(c)
                   + ["seeds", "expected_seeds"]
                   + [f"{m}_{k}" for m in c.metrics for k in ("mean", "std")])
        for r in rows:
            w.writerow([r["data"], r["model"], r["strength"] or "", "" if r["value"] is None
                        else f"{r['value']:g}"] + _axes_cells(c, r.get("axes", ()))
                       + [r["seeds"], r["expected_seeds"]]
                       + [f"{x:.6g}" for m in c.metrics for x in r[m]])


def _axes_header(c: Collected) -> list:
    """One column per [axes] field of the spec (none without axes, as before)."""
    return list(c.spec.axes)


def _axes_cells(c: Collected, axes: tuple) -> list:
    from wtc.experiments.sweep import axis_text

    values = dict(axes)
    return [axis_text(values[k]) if k in values else "" for k in c.spec.axes]


def write_settings_csv(c: Collected, path: Path) -> None:
    """Every setting, not only the best strengths (what figures 2, 3, 6 and 7 plot)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["data", "model", "strength", "value"] + _axes_header(c)
                   + ["seeds", "expected_seeds"]
                   + [f"{m}_{k}" for m in c.metrics for k in ("mean", "std")])
        for s in c.settings:
            w.writerow([s.data, s.model, s.strength, f"{s.value:g}"] + _axes_cells(c, s.axes)
                       + [len(s.seeds), s.expected_seeds]
                       + [f"{x:.6g}" for m in c.metrics for x in (s.mean(m), s.std(m))])


# -- the setting the numbers come from ---------------------------------------------------------

def setting_markdown(lines: list) -> str:
    """The setting of table 1's numbers beside the paper's, deviations marked."""
    out = ["| setting | these numbers | the paper | |", "|---|---|---|---|"]
    out += [f"| {ln.name} | {ln.ours} | {ln.paper} | {'**differs**' if ln.differs else ''} |"
            for ln in lines]
    n = sum(ln.differs for ln in lines)
    out += ["", (f"{n} setting(s) differ from what the paper states: the numbers below are not "
                 "the paper's setting's." if n else "Every setting is the paper's.")]
    return "\n".join(out)


def _setting_html(lines: list) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(ln.name)}</td><td>{e(ln.ours)}</td><td>{e(ln.paper)}</td>"
                   f"<td>{'<b>differs</b>' if ln.differs else ''}</td></tr>" for ln in lines)
    n = sum(ln.differs for ln in lines)
    note = (f"{n} setting(s) differ from what the paper states." if n
            else "Every setting is the paper's.")
    return ("<h2>Setting</h2><table><tr><th>setting</th><th>these numbers</th><th>the paper"
            f"</th><th></th></tr>{rows}</table><p>{e(note)}</p>")


#: The default metric table 1 is selected by; a sweep without it (CelebA: reconstruction
#: alone) is selected by its first metric instead.
DEFAULT_SELECT_BY = "factor_vae"


# -- the report -----------------------------------------------------------------------------------

def make_report(sweep_dir, out, select_by: str = "factor_vae", device: str | None = None,
                echo=print) -> dict:
    """Write table1.md/.csv, settings.csv, the figures, report.md and index.html into ``out``;
    above table 1, the setting its numbers come from (the runs' config.json and eval.json)
    beside the paper's, deviations marked. Returns {"table": rows, "missing": {...},
    "figures": [...], "setting": [SettingLine]}."""
    sweep_dir, out = Path(sweep_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = collect(sweep_dir)
    if not c.runs:
        raise ValueError(f"no run in {sweep_dir} has a complete evaluation yet "
                         f"({len(c.missing)} runs lack one); nothing to report")
    if select_by == DEFAULT_SELECT_BY and select_by not in c.metrics:
        select_by = c.metrics[0]
    setting = setting_lines(c)
    md_setting = setting_markdown(setting)
    rows = table1(c, select_by)
    md_table = table1_markdown(c, rows, select_by)
    (out / "table1.md").write_text(md_table + "\n")
    write_csv(c, rows, out / "table1.csv")
    write_settings_csv(c, out / "settings.csv")

    figures = []  # (file, caption)
    for metric, number in (("factor_vae", 2), ("wdg", 6)):
        if metric in c.metrics and "reconstruction" in c.metrics:
            name = f"figure{number}_{metric}_vs_reconstruction.png"
            scatter_vs_reconstruction(c, metric, out / name)
            figures.append((name, f"Figure {number}: {display(metric)} against reconstruction "
                                  "error, one point per strength (upper left is better)."))
    for metric, number in (("wdg", 3), ("factor_vae", 7)):
        if metric in c.metrics:
            name = f"figure{number}_{metric}_violins.png"
            violins(c, metric, out / name)
            figures.append((name, f"Figure {number}: {display(metric)} per strength, every "
                                  "evaluation of every seed."))
    corr = {}
    if sum(m in c.metrics for m in CORRELATED) >= 2:
        name = "figure5_rank_correlation.png"
        corr = correlation_heatmap(c, out / name)
        figures.append((name, "Figure 5: Spearman rank correlation between the metrics over "
                              "all evaluated runs."))
    notes = []
    for data in c.spec.data:
        run = best_run(c, data, select_by)
        if run is None:
            notes.append(f"No traversals for {data}: no evaluated run.")
            continue
        name = f"figure4_traversals_{data}.png"
        try:
            traversals(sweep_dir / run["id"], out / name, device,
                        f"{run['id']} (best {display(select_by)} "
                        f"{run['scores'][select_by]:.3f})")
            figures.append((name, f"Figure 4: latent traversals of the best run on {data} by "
                                  f"{display(select_by)}: {run['id']}."))
        except Exception as err:  # a report without one figure beats no report
            notes.append(f"No traversals for {data} ({run['id']}): {err}")

    missing_lines = [f"- {run_id}: {why}" for run_id, why in sorted(c.missing.items())]
    spec, settings = c.spec, expected_eval(c.spec)
    summary = (f"Sweep `{spec.name}`: {len(c.runs)} of {len(c.runs) + len(c.missing)} runs "
               f"evaluated; {spec.steps} steps, batch {spec.batch_size}, Adam {spec.lr:g}; "
               f"evaluation protocol `{spec.eval.protocol}` ({settings['repeats']} repeat(s), "
               f"sample sizes {settings['sample_sizes']}).")
    md = [f"# Report: sweep {spec.name}", "", summary, "", "## Setting", "", md_setting, "",
          "## Table 1", "", md_table, ""]
    if missing_lines:
        md += ["## Runs without a complete evaluation (left out of every number above)", ""]
        md += missing_lines + [""]
    md += ["## Figures", ""]
    for name, caption in figures:
        md += [f"![{caption}]({name})", "", caption, ""]
    md += notes
    (out / "report.md").write_text("\n".join(md) + "\n")
    _write_html(out / "index.html", spec, summary, c, rows, figures, c.missing, notes, select_by,
                setting)
    (out / "report.json").write_text(json.dumps(
        {"table": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()}
                   for r in rows],
         "missing": c.missing,
         "setting": [vars(ln) for ln in setting],
         "rank_correlation": {d: {"metrics": n, "matrix": np.where(np.isnan(m), None, m)
                                  .tolist()} for d, (n, m) in corr.items()},
         "figures": [f for f, _ in figures]}, indent=1, default=float))
    differing = [ln for ln in setting if ln.differs]
    if differing:
        echo("Differs from the paper's setting: " + "; ".join(
            f"{ln.name} {ln.ours} (paper: {ln.paper})" for ln in differing) + "\n")
    echo(md_table)
    if c.missing:
        echo(f"\n{len(c.missing)} run(s) lack a complete evaluation and are left out:")
        echo("\n".join(missing_lines))
    echo(f"\nwrote {out / 'index.html'} and {out / 'report.md'}")
    return {"table": rows, "missing": c.missing, "figures": [f for f, _ in figures],
            "setting": setting}


def _write_html(path, spec, summary, c, rows, figures, missing, notes, select_by,
                setting=()) -> None:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in table_header(c.metrics))
    body = ["<tr>" + "".join(f"<td>{cell}</td>" for cell in table_cells(r, c.metrics, HTML))
            + "</tr>" for r in rows]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>wtc report: {e(spec.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}"
        "img{max-width:100%;border:1px solid #eee}</style></head><body>",
        f"<h1>Sweep {e(spec.name)}</h1><p>{e(summary)}</p>",
        _setting_html(list(setting)),
        f"<h2>Table 1</h2><table><tr>{head}</tr>{''.join(body)}</table>",
        f"<p>Mean (std) over seeds at each model's best strength by {e(display(select_by))}; "
        "best of each data set in bold, second underlined. &dagger; marks a setting missing "
        "seeds. <a href='table1.csv'>table1.csv</a>, <a href='settings.csv'>settings.csv</a> "
        "(every strength).</p>",
    ]
    if missing:
        parts.append("<h2>Runs without a complete evaluation</h2><p>Left out of every number "
                     "on this page:</p><ul>" + "".join(
                         f"<li>{e(k)}: {e(v)}</li>" for k, v in sorted(missing.items()))
                     + "</ul>")
    parts.append("<h2>Figures</h2>")
    for name, caption in figures:
        parts.append(f"<figure><img src='{e(name)}' alt='{e(caption)}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts += [f"<p>{e(n)}</p>" for n in notes]
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts))
