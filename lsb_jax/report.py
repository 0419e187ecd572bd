"""The Markdown reproduction report: one section per experiment with its numbers and figures."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any, Sequence

from lsb_jax import io


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v) and len(v) <= 8:
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


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


def write_report(path: str | Path, entries: Sequence[dict], mode: str) -> Path:
    """entries: {"experiment", "reproduces", "run_dir", "status", "results", "error"} in order.

    Figure links are relative to the report's folder, so the report renders in place.
    """
    path = Path(path)
    import jax

    lines = [f"# lsb_jax reproduction report ({mode})", "",
             f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} "
             f"on {platform.node() or 'unknown host'}: "
             f"python {platform.python_version()}, jax {jax.__version__}, "
             f"devices {[d.platform for d in jax.devices()]}.", "",
             "| experiment | reproduces | status | wall s | headline |", "|---|---|---|---|---|"]
    for e in entries:
        res = e.get("results") or {}
        head = res.get("headline", {})
        headline = "; ".join(f"{k} = {_fmt(v)}" for k, v in list(head.items())[:4])
        lines.append(f"| {e['experiment']} | {e['reproduces']} | {e['status']} | "
                     f"{_fmt(res.get('wall_seconds', ''))} | {headline} |")
    for e in entries:
        res = e.get("results") or {}
        lines += ["", f"## {e['experiment']}", "", f"Reproduces: {e['reproduces']}. Run directory: `{e['run_dir']}`."]
        if e.get("error"):
            lines += ["", f"**Failed:** `{e['error']}`"]
        if res.get("summary"):
            lines += ["", res["summary"]]
        lines += _validation_lines(res.get("validation"))
        head = res.get("headline", {})
        if head:
            lines += ["", "| quantity | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in head.items()]
        for fig in res.get("figures", []):
            rel = Path(e["run_dir"], fig)
            try:
                rel = rel.resolve().relative_to(path.parent.resolve())
            except ValueError:
                rel = rel.resolve()
            lines += ["", f"![{fig}]({rel.as_posix()})"]
    return io.write_text(path, "\n".join(lines) + "\n")
