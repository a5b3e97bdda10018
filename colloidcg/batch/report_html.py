"""OUT/report.html: one self-contained page (images as base64 data URIs, no server, no
network) with, per video: particle count, D, MSD and g(r), the D2min map, the
model-versus-data metrics and plots, and the macroscopic SDE's ensemble when the optional
macro stage ran."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from pathlib import Path

import pandas as pd

from .._version import __version__
from ..outputs import atomic_write_bytes
from . import hashing
from .discover import VideoJob

#: (stage, file, caption) of the pictures shown per video before the model-versus-data
#: plots, which :func:`pictures` adds from :data:`colloidcg.evaluate.STATISTICS`.
PICTURES_MEASURED = [
    ("track", "msd.png", "Mean squared displacement (measured)"),
    ("track", "gr.png", "Radial distribution g(r) (measured)"),
    ("rearrangements", "d2min.png", "D2min map (busiest frame; red: rearranging)"),
    ("train", "loss.png", "Training loss"),
]
#: (stage, file, caption) of the pictures shown after the model-versus-data plots.
PICTURES_AFTER = [("macro", "macro.png", "Macroscopic SDE: ensemble against time (the optional macro stage)")]


def pictures() -> list[tuple[str, str, str]]:
    """(stage, file, caption) of every picture shown per video, in order: the measured
    ones, then one model-versus-data plot per drawn statistic."""
    from ..evaluate import STATISTICS

    return PICTURES_MEASURED + [("evaluate", f"{name}.png", f"{stat.label}: model vs data")
                                for name, stat in STATISTICS.items() if not stat.scalar and stat.plot] + PICTURES_AFTER


def metric_rows() -> list[tuple[str, str]]:
    """(metrics.json key, label) of the model-versus-data table, from the statistics."""
    from ..evaluate import STATISTICS

    return [row for stat in STATISTICS.values() for row in stat.metric_rows()]


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-top:1px solid #ccc;padding-top:.8em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
.done,.unchanged{color:#1a7f37}.failed,.blocked{color:#c62828;font-weight:bold}.stale{color:#b26a00;font-weight:bold}
figure{display:inline-block;margin:.4em;vertical-align:top}figure img{max-width:360px;height:auto}
figcaption{font-size:.85em;color:#555;max-width:360px}.err{color:#c62828;white-space:pre-wrap}
"""
# Sets data-images-ok on <body> when the page has loaded and every picture decoded to a
# non-empty image (naturalWidth > 0; data that is not an image gives 0); used by the
# browser test and handy for any automated check of the page.
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-decoded', String(ok));
  document.body.setAttribute('data-images-ok', ok === imgs.length ? 'true' : 'false');
});
"""


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


#: Stage records checked while one report is written: (folder) -> record or None.
_CHECKED: dict[Path, dict | None] = {}


def _completed(folder: Path) -> dict | None:
    """The stage's record when its result is complete on disk now (every recorded file's
    size and SHA-256 checked, once per report), else None."""
    if folder not in _CHECKED:
        _CHECKED[folder] = hashing.completed(folder)
    return _CHECKED[folder]


def _done(out: Path, rel: str, stage: str) -> bool:
    return _completed(out / rel / stage) is not None


def _video_section(out: Path, job: VideoJob, rows: pd.DataFrame, idx: int) -> str:
    rel = job.rel
    parts = [f'<section class="video" id="video-{idx}" data-video="{html.escape(rel)}">',
             f"<h2>{html.escape(rel)}</h2>"]
    parts.append("<table><tr><th>stage</th><th>status</th><th>seconds (this run)</th>"
                 "<th>seconds (computed)</th><th>error</th></tr>")
    for _, r in rows.iterrows():
        st = html.escape(str(r["status"]))
        parts.append(f'<tr><td>{html.escape(str(r["stage"]))}</td><td class="{st}">{st}</td>'
                     f'<td>{_fmt(r["duration_s"])}</td><td>{_fmt(r["computed_s"])}</td>'
                     f'<td class="err">{html.escape(str(r["error"] or ""))}</td></tr>')
    parts.append("</table>")
    stats = out / rel / "track" / "statistics.json"
    numbers = []
    if _done(out, rel, "track") and stats.is_file():
        s = json.loads(stats.read_text())
        numbers += [("particles (trajectories)", s.get("n_particles")),
                    ("particles per frame", s.get("particles_per_frame")),
                    ("frames", s.get("n_frames")),
                    (f"D, short-time ({s.get('D_units')})", s.get("D"))]
    rrec = _completed(out / rel / "rearrangements")
    if rrec:
        n = rrec.get("numbers") or {}
        numbers += [("rearranging particle-frames", n.get("n_rearranging")),
                    ("rearrangement events", n.get("n_events")), ("D2min lag (frames)", n.get("lag_frames"))]
    trec = _completed(out / rel / "train")
    if trec:
        n = trec.get("numbers") or {}
        numbers += [("training epochs", n.get("epochs_run")),
                    ("validation MSD error", n.get("best_val_score")),
                    ("ROC AUC of S for rearrangements", n.get("rearrangement_auc_S"))]
    mrec = _completed(out / rel / "macro")
    if mrec:
        n = mrec.get("numbers") or {}
        numbers += [("macroscopic SDE: variables", n.get("macro_variables")),
                    ("macroscopic SDE: patches per system K", n.get("macro_K")),
                    ("macroscopic SDE: patch increments", n.get("macro_increments")),
                    ("macroscopic SDE: runs outside the fitted states", n.get("macro_runs_outside"))]
    if numbers:
        parts.append('<table class="numbers">' + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in numbers) + "</table>")
    mpath = out / rel / "evaluate" / "metrics.json"
    if _done(out, rel, "evaluate") and mpath.is_file():
        m = json.loads(mpath.read_text())
        parts.append("<h3>Model versus data</h3><table class=\"metrics\">" + "".join(
            f"<tr><th>{html.escape(label)}</th><td>{_fmt(m.get(key))}</td></tr>" for key, label in metric_rows())
            + "</table>")
    figs = [_img(out / rel / stage / name, cap) for stage, name, cap in pictures()
            if _done(out, rel, stage) and (out / rel / stage / name).is_file()]
    if figs:
        parts.append("<div class=\"figures\">" + "".join(figs) + "</div>")
    bundle = out / rel / "export" / "bundle"
    if _done(out, rel, "export") and bundle.is_dir():
        parts.append(f"<p>Model bundle: <code>{html.escape(str(bundle))}</code></p>")
    parts.append("</section>")
    return "\n".join(parts)


def write_report(out, jobs: list[VideoJob], table: pd.DataFrame, stages: list[str],
                 skipped: dict | None = None) -> Path:
    """Write OUT/report.html from the stage folders and the summary table; ``skipped``:
    {file: reason} of image files under ROOT that are not videos."""
    out = Path(out)
    _CHECKED.clear()
    n_bad = table[table["status"].isin(["failed", "blocked", "stale"])]["video"].nunique()
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>colloidcg batch report</title><style>{CSS}</style>"
            f"<script>{SCRIPT}</script></head><body>")
    parts = [head, "<h1>colloidcg batch report</h1>",
             f"<p>{len(jobs)} videos, stages {html.escape(', '.join(stages))}; "
             f"{n_bad} with failures. colloidcg {html.escape(__version__)}, written {when}. "
             f"Per-stage details: <code>summary.csv</code>; provenance of any output: "
             f"<code>colloidcg info PATH</code>.</p>"]
    parts.append("<table><tr><th>video</th>" + "".join(f"<th>{html.escape(s)}</th>" for s in stages) + "</tr>")
    for k, job in enumerate(jobs):
        sub = table[table["video"] == job.rel].set_index("stage")["status"]
        cells = "".join(f'<td class="{html.escape(str(sub.get(s, "")))}">{html.escape(str(sub.get(s, "")))}</td>'
                        for s in stages)
        parts.append(f'<tr><td><a href="#video-{k}">{html.escape(job.rel)}</a></td>{cells}</tr>')
    parts.append("</table>")
    if skipped:
        parts.append(f"<h2>Files skipped (not videos): {len(skipped)}</h2><table>" + "".join(
            f"<tr><td>{html.escape(f)}</td><td>{html.escape(why)}</td></tr>" for f, why in skipped.items())
            + "</table>")
    for k, job in enumerate(jobs):
        parts.append(_video_section(out, job, table[table["video"] == job.rel], k))
    parts.append("</body></html>")
    return atomic_write_bytes(out / "report.html", "\n".join(parts).encode("utf-8"))
