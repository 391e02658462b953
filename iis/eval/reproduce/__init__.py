"""Reproduction manifests: a released checkpoint, the paper's protocol, the published NoC85/NoC90.

``iis-eval --reproduce NAME --weights FILE [--data-root D]`` evaluates ``FILE`` (the authors' file, converted
in memory, or its ``iis-convert`` output) on every dataset of the manifest that is present, under the
manifest's protocol preset, and prints measured vs published NoC85/NoC90 with the difference. Absent
datasets are listed as skipped. The published numbers are data (``*.yaml`` beside this file), each with
its source (paper title, table, row); nothing here is computed from them.

Manifest fields: ``name``, ``model`` (iis registry name), ``protocol`` (preset), ``weights`` (the file name
as the authors publish it), ``weights_name_confirmed``, ``host``, ``trained_on``, ``source`` (``paper``,
``table``, ``row``) and ``published: {dataset: {noc85, noc90[, source]}}`` (a dataset-level ``source``
overrides the manifest's; a threshold the source does not print is absent).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

from ...core.errors import IISError

__all__ = ["Manifest", "manifests", "get_manifest", "prepare", "comparison_table", "run_reproduce"]

_HERE = Path(__file__).parent
METRICS = ("85", "90")


@dataclass(frozen=True)
class Manifest:
    name: str
    model: str
    protocol: str
    weights: str
    source: dict[str, str]
    published: dict[str, dict[str, Any]]
    host: str = ""
    trained_on: str = ""
    weights_name_confirmed: bool = True
    file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def source_of(self, dataset: str) -> dict[str, str]:
        return dict(self.published.get(dataset, {}).get("source") or self.source)

    def published_noc(self, dataset: str, thr: str) -> float | None:
        v = self.published.get(dataset, {}).get(f"noc{thr}")
        return None if v is None else float(v)


_REQUIRED = ("name", "model", "protocol", "weights", "source", "published")


@lru_cache(maxsize=1)
def _load() -> tuple[Manifest, ...]:
    out, seen = [], set()
    for path in sorted(_HERE.glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text()) or []:
            missing = [k for k in _REQUIRED if k not in entry]
            if missing:
                raise IISError(f"{path.name}: manifest {entry.get('name', '?')!r} lacks {', '.join(missing)}")
            if entry["name"] in seen:
                raise IISError(f"{path.name}: manifest {entry['name']!r} defined twice")
            seen.add(entry["name"])
            known = {k: entry[k] for k in ("host", "trained_on", "weights_name_confirmed") if k in entry}
            extra = {k: v for k, v in entry.items() if k not in _REQUIRED and k not in known}
            out.append(Manifest(entry["name"], entry["model"], entry["protocol"], entry["weights"],
                                dict(entry["source"]), {k: dict(v) for k, v in entry["published"].items()},
                                file=path.name, extra=extra, **known))
    return tuple(out)


def manifests() -> dict[str, Manifest]:
    """Every manifest, by name."""
    return {m.name: m for m in _load()}


def get_manifest(name: str) -> Manifest:
    ms = manifests()
    if name not in ms:
        raise IISError(f"--reproduce {name!r}: unknown; manifests: {', '.join(sorted(ms))}")
    return ms[name]


def list_lines() -> list[str]:
    """One line per manifest for ``iis-eval --list`` (with whether its model is registered here)."""
    from ...models.registry import list_models

    have = set(list_models())
    lines = []
    for m in manifests().values():
        state = "" if m.model in have else f"  [model {m.model} not registered yet: listed, cannot run]"
        lines.append(f"  {m.name}: {m.model}, protocol {m.protocol}, weights {m.weights} "
                     f"({m.trained_on}){state}")
    return lines


@dataclass
class Plan:
    manifest: Manifest
    present: list[str]
    skipped: dict[str, str]  # dataset -> why


def prepare(args: Any) -> Plan:
    """Check a ``--reproduce`` request and fill ``args`` (method, datasets, protocol, out) for the run.

    Raises:
        IISError: unknown manifest, model not registered, no ``--weights``, or options that would change
            the published protocol.
    """
    from ...data import get_dataset
    from ...models.registry import list_models

    m = get_manifest(args.reproduce)
    if m.model not in list_models():
        raise IISError(f"--reproduce {m.name}: its model {m.model} is not registered in this iis version "
                       f"(the manifest is listed, but cannot run until that model exists)")
    if not args.weights:
        raise IISError(f"--reproduce {m.name}: give the released weights with --weights FILE (the authors' "
                       f"{m.weights}, or its iis-convert output)")
    # --limit and --max-clicks stay allowed for smoke runs (the table then says it is not comparable);
    # these would silently change the published protocol
    changed = [opt for opt in ("protocol", "target_iou", "thresh", "iou_analysis", "no_flip")
               if getattr(args, opt, None) not in (None, False)]
    if changed:
        raise IISError(f"--reproduce {m.name}: --{changed[0].replace('_', '-')} would change the published "
                       f"protocol ({m.protocol}); drop it")
    present, skipped = [], {}
    for ds in m.published:
        try:
            get_dataset(ds, args.data_root)
            present.append(ds)
        except (FileNotFoundError, ValueError) as e:
            skipped[ds] = str(e).split(";")[0]
    args.method = m.model
    args.protocol = m.protocol
    args.datasets = ",".join(present)
    if not args.out:
        args.out = str(Path("runs") / "reproduce" / m.name)
    return Plan(m, present, skipped)


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def comparison_table(plan: Plan, results: dict[str, Any], limit: int | None = None,
                     max_clicks: int | None = None) -> str:
    """Measured vs published NoC85/NoC90 per dataset, the difference, skipped datasets and the weights' source."""
    m = plan.manifest
    method = results.get("method", {})
    src = method.get("source") or {}
    wfile = src.get("file") or Path(str(method.get("weights") or "?")).name
    sha = src.get("sha256") or method.get("weights_sha256") or "?"
    lines = [f"Reproduction {m.name}: {m.model} under protocol {m.protocol} (published weights: {m.weights}, "
             f"{m.trained_on})",
             f"weights used: {wfile} (sha256 {sha})"]
    if src.get("family"):
        lines.append(f"converted from: {src['family']}")
    head = "| Dataset | N | NoC85 measured | NoC85 published | diff | NoC90 measured | NoC90 published | diff | source |"
    lines += [head, "|" + "|".join("---" for _ in range(9)) + "|"]
    for ds in m.published:
        s = m.source_of(ds)
        cite = f"{s.get('paper', '?').split(' (')[0].split(':')[0]}, {s.get('table', '?')}"
        if ds in plan.skipped:
            pub = " | ".join(f"- | {_fmt(m.published_noc(ds, t))} | -" for t in METRICS)
            lines.append(f"| {ds} | skipped | {pub} | {cite} |")
            continue
        summ = results.get("datasets", {}).get(ds, {})
        cells = []
        for t in METRICS:
            meas = (summ.get("noc") or {}).get(t)
            pub = m.published_noc(ds, t)
            diff = None if meas is None or pub is None else meas - pub
            cells.append(f"{_fmt(meas)} | {_fmt(pub)} | {'-' if diff is None else f'{diff:+.2f}'}")
        lines.append(f"| {ds} | {summ.get('num_instances', '?')} | {' | '.join(cells)} | {cite} |")
    for ds, why in plan.skipped.items():
        lines.append(f"skipped {ds}: {why}")
    if limit:
        lines.append(f"NOTE: --limit {limit}: only the first {limit} instances of each dataset were evaluated; not "
                     "comparable to the published numbers")
    if max_clicks and max_clicks != 20:
        lines.append(f"NOTE: --max-clicks {max_clicks} (published: 20): NoC is capped at {max_clicks}; not comparable")
    rows = {s.get("row") for s in (m.source_of(ds) for ds in m.published)}
    lines.append("published rows: " + "; ".join(sorted(r for r in rows if r)))
    return "\n".join(lines)


def run_reproduce(args: Any, run: Callable[[Any], int]) -> int:
    """``iis-eval --reproduce``: prepare, evaluate the present datasets with ``run`` (iis-eval's own run), compare."""
    plan = prepare(args)
    results: dict[str, Any] = {"method": {}, "datasets": {}}
    out = Path(args.out)
    if plan.present:
        rc = run(args)
        if rc:
            return rc
        results = json.loads((out / "results.json").read_text())
    else:
        from ..loading import build_method  # still check that the weights load, and record their source

        results["method"] = build_method(args.method, weights=args.weights).desc
    table = comparison_table(plan, results, getattr(args, "limit", None), getattr(args, "max_clicks", None))
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reproduce.txt").write_text(table + "\n")
    from ..io import atomic_write_json

    atomic_write_json(out / "reproduce.json", {
        "manifest": plan.manifest.name, "model": plan.manifest.model, "protocol": plan.manifest.protocol,
        "weights": results.get("method", {}), "skipped": plan.skipped,
        "rows": {ds: {"source": plan.manifest.source_of(ds),
                      **{f"noc{t}": {"published": plan.manifest.published_noc(ds, t),
                                     "measured": (results.get("datasets", {}).get(ds, {}).get("noc") or {}).get(t)}
                         for t in METRICS}} for ds in plan.manifest.published}})
    return 0
