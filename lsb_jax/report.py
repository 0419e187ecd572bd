"""The Markdown reproduction report: one section per experiment with its numbers and figures."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any, Sequence

from lsb_jax import io


_NON_FINITE = {"Infinity": "inf", "-Infinity": "-inf", "NaN": "nan"}   # how JSON brings non-finite floats back


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and v and len(v) <= 8 and all(
            isinstance(x, (int, float)) or x in _NON_FINITE for x in v):
        return "[" + ", ".join(_num(x) for x in v) + "]"
    return str(v)


def _cell(v: Any) -> str:
    """Text for a Markdown table cell: a `|` would end the cell and a newline the row."""
    return " ".join(str(v).replace("|", "\\|").split())


def _validation_lines(validation: Any) -> list[str]:
    """What the experiment's data readers kept and skipped (`llm.data.ValidationReport.to_json()`,
    one or a list of them)."""
    reports = validation if isinstance(validation, list) else [validation] if isinstance(validation, dict) else []
    out = []
    for r in reports:
        if not isinstance(r, dict) or "read" not in r:
            continue
        skipped = ", ".join(f"{n} {why}" for why, n in (r.get("skipped") or {}).items())
        out.append(f"- `{r.get('source', '?')}`: read {r['read']}, kept {r.get('kept', '?')}, "
                   f"skipped {r.get('num_skipped', 0)}" + (f" ({skipped})" if skipped else ""))
    return (["", "Data read:"] + out) if out else []


def _num(v: Any) -> str:
    if isinstance(v, str):      # non-finite floats come back from JSON as strings
        return _NON_FINITE.get(v, v)
    return _fmt(float(v)) if isinstance(v, (int, float)) else str(v)


def _claim_cell(c: dict, decide_with: str | None = None) -> tuple[str, str]:
    """(effect with its 95% interval per base seed, verdict with the reason when base seeds disagree
    and, for an inconclusive verdict, the command of the larger config that can decide it)."""
    rows = c.get("by_base_seed") or []
    unit = f" {c['unit']}" if c.get("unit") else ""
    effect = "; ".join(f"{_num(r['effect'])}{unit} [{_num(r['ci'][0])}, {_num(r['ci'][1])}] (base {r['base_seed']}, "
                       f"n={r['n']})" for r in rows) or "-"
    verdict = f"**{c['verdict']}**" + (f" ({c['reason']})" if c.get("reason") else "")
    if decide_with and c["verdict"] == "inconclusive":
        verdict += f"; more seeds: `{decide_with}`"
    return effect, verdict


def claims_section(entries: Sequence[dict]) -> list[str]:
    """One table per paper (claim, source, effect with its 95% interval per base seed, verdict,
    experiment), then the verdict counts per paper; empty when no run declared claims."""
    from lsb_jax import claims as claims_lib

    by_paper: dict[str, list[tuple[dict, dict]]] = {}
    for e in entries:
        for c in (e.get("results") or {}).get("claims", []):
            by_paper.setdefault(c["paper"], []).append((e, c))
    if not by_paper:
        return []
    lines = ["## Paper claims", "",
             "Effect = mean over seeds of (arm - comparison), paired on seeds; 95% interval per base seed "
             "(`lsb_jax.claims`; the LLM accuracy claims: seeds are target seeds, each one's accuracy over the "
             "same test items). Reproduced / opposite: the interval excludes no effect on the paper's / the other "
             "side; inconclusive: it contains it, or the base seeds disagree."]
    counts_rows = []
    for paper in sorted(by_paper):
        lines += ["", f"### seed {paper}", "",
                  "| claim | source | comparison | effect [95% CI] | verdict | experiment |",
                  "|---|---|---|---|---|---|"]
        for e, c in by_paper[paper]:
            effect, verdict = _claim_cell(c, e.get("decide_with"))
            old = " (earlier run)" if e.get("earlier") else ""
            lines.append(f"| {_cell(c['says'])} | {_cell(c['figure'])} | {_cell(c['comparison'])} | {_cell(effect)} | "
                         f"{_cell(verdict)} | [{e['experiment']}](#{e['experiment']}){old} |")
        n = claims_lib.counts([c for _, c in by_paper[paper]])
        counts_rows.append(f"| seed {paper} | " + " | ".join(str(n[v]) for v in claims_lib.VERDICTS)
                           + " |")
    lines += ["", "### Verdicts per paper", "", "| paper | " + " | ".join(claims_lib.VERDICTS) + " |",
              "|---|" + "---|" * len(claims_lib.VERDICTS), *counts_rows, ""]
    return lines


def _headline(res: dict) -> str:
    """The summary table's result column: the claims' verdicts when declared, else the first numbers."""
    decided = res.get("claims") or []
    if decided:
        return "; ".join(f"{c['key']}: {c['verdict']}" for c in decided)
    return "; ".join(f"{k} = {_fmt(v)}" for k, v in list(res.get("headline", {}).items())[:4])


def write_report(path: str | Path, entries: Sequence[dict], mode: str) -> Path:
    """entries: {"experiment", "reproduces", "run_dir", "status", "results", "error", "earlier"} in order
    ("earlier": a finished run this invocation did not run, e.g. outside `--only`).

    The report opens with the paper claims (`claims_section`), then the summary table and one section
    per experiment. Figure links are relative to the report's folder, so the report renders in place.
    """
    path = Path(path)
    import jax

    lines = [f"# lsb_jax reproduction report ({mode})", "",
             f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} "
             f"on {platform.node() or 'unknown host'}: "
             f"python {platform.python_version()}, jax {jax.__version__}, "
             f"devices {[d.platform for d in jax.devices()]}.", ""]
    lines += claims_section(entries)
    lines += ["## Experiments", "", "| experiment | reproduces | status | wall s | result |", "|---|---|---|---|---|"]
    for e in entries:
        res = e.get("results") or {}
        status = e["status"] + (" (earlier run)" if e.get("earlier") else "")
        lines.append(f"| {e['experiment']} | {_cell(e['reproduces'])} | {status} | "
                     f"{_fmt(res.get('wall_seconds', ''))} | {_cell(_headline(res))} |")
    for e in entries:
        res = e.get("results") or {}
        lines += ["", f"### {e['experiment']}", "",
                  f"Reproduces: {e['reproduces']}. Run directory: `{e['run_dir']}`"
                  + (" (an earlier run: not run by this invocation)." if e.get("earlier") else ".")]
        if e.get("error"):
            lines += ["", f"**Failed:** `{e['error']}`"]
        if res.get("summary"):
            lines += ["", res["summary"]]
        lines += _validation_lines(res.get("validation"))
        head = res.get("headline", {})
        if head:
            lines += ["", "| quantity | value |", "|---|---|"]
            lines += [f"| {_cell(k)} | {_cell(_fmt(v))} |" for k, v in head.items()]
        for fig in res.get("figures", []):
            rel = Path(e["run_dir"], fig)
            try:
                rel = rel.resolve().relative_to(path.parent.resolve())
            except ValueError:
                rel = rel.resolve()
            lines += ["", f"![{fig}]({rel.as_posix()})"]
    return io.write_text(path, "\n".join(lines) + "\n")
