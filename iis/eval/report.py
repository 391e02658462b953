"""Reference-style result tables, mIoU-vs-click plots and mask overlays."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..core.types import Click

__all__ = ["results_table", "plot_miou", "overlay"]


def _hms(sec: float) -> str:
    sec = int(round(sec))
    return f"{sec // 3600}:{sec % 3600 // 60:02d}:{sec % 60:02d}"


def _num(v: Any, fmt: str) -> str:
    """A table cell; a missing number (None/NaN: no scored instance) is "-"."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def _below_table(name: str, s: Mapping[str, Any]) -> list[str]:
    out = []
    sel = s.get("selection") or {}
    if sel.get("instances") is not None and sel.get("instances") < sel.get("dataset_instances", 0):
        out.append(f"{name}: first {sel['instances']} of {sel['dataset_instances']} instances (limit)")
    skipped = s.get("skipped") or []
    if skipped:
        shown = "; ".join(f"{x['id']}: {x['reason']}" for x in skipped[:3])
        more = f"; ... ({len(skipped) - 3} more in results.json)" if len(skipped) > 3 else ""
        out.append(f"{name}: {len(skipped)} instance(s) skipped as invalid, not counted in N/NoC/NoF/mIoU: "
                   f"{shown}{more}")
    return out


def results_table(title: str, per_dataset: Mapping[str, Mapping[str, Any]], note: str | None = None) -> str:
    """The RITM table (protocol.md §A.9): NoC@80/85/90, NoF@85/90 (">=20@"), SPC, time.

    The ``>=N@`` header uses the run's max clicks, so a 100-click run prints ``>=100@85%``. Under the
    table: a ``--limit`` selection and the instances skipped as invalid, per dataset.
    """
    rows = []
    for name, s in per_dataset.items():
        mc = s.get("max_clicks", 20)
        noc, nof = s["noc"], s["nof"]
        rows.append([name, _num(noc["80"], ".2f"), _num(noc["85"], ".2f"), _num(noc["90"], ".2f"),
                     str(nof["85"]), str(nof["90"]), _num(s.get("spc"), ".3f"), _hms(s.get("time", 0.0)),
                     str(s["num_instances"])])
        header_mc = mc
    head = ["Dataset", "NoC@80%", "NoC@85%", "NoC@90%", f">={header_mc if rows else 20}@85%",
            f">={header_mc if rows else 20}@90%", "SPC,s", "Time", "N"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "|" + "|".join(f" {c:^{w}} " for c, w in zip(cells, widths)) + "|"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [f"Eval results for model: {title}"]
    if note:
        out.append(note)
    out += [line(head), sep, *(line(r) for r in rows)]
    for name, s in per_dataset.items():
        out += _below_table(name, s)
    for name, s in per_dataset.items():
        if s.get("miou"):
            ks = [k for k in (1, 3, 5, 10, 20) if k <= len(s["miou"])]
            out.append(f"{name}: " + "; ".join(f"mIoU@{k}={100 * s['miou'][k - 1]:.2f}%" for k in ks))
    return "\n".join(out)


def plot_miou(per_dataset: Mapping[str, Mapping[str, Any]], path: str | Path, title: str) -> None:
    """mIoU-vs-click curves; early-stopped runs are drawn dashed and labelled (held at last IoU)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for name, s in per_dataset.items():
        curve, style, label = s.get("miou"), "-", name
        if curve is None:
            curve, style, label = s.get("miou_early_stopped"), "--", f"{name} (early stop: held at last IoU)"
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, style, marker="o", ms=3, label=label)
            drawn = True
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mIoU")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def overlay(image: np.ndarray, mask: np.ndarray, clicks: Sequence[Click], gt: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 picture: the mask blended in blue, GT contour in yellow, clicks as green/red dots."""
    import cv2

    out = image.astype(np.float32).copy()
    m = mask.astype(bool)
    out[m] = 0.5 * out[m] + 0.5 * np.array([40, 120, 255], np.float32)
    out = out.clip(0, 255).astype(np.uint8)
    if gt is not None:
        cnts, _ = cv2.findContours((gt == 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, cnts, -1, (255, 230, 0), 1)
    r = max(3, round(min(image.shape[:2]) / 100))
    for c in clicks:
        color = (0, 220, 0) if c.positive else (230, 0, 0)
        cv2.circle(out, (int(round(c.x)), int(round(c.y))), r, color, -1)
        cv2.circle(out, (int(round(c.x)), int(round(c.y))), r, (255, 255, 255), 1)
    return out
