#!/usr/bin/env python3
"""Summarises a spike run of `surge-loadtest` for the README: TTFT p50/p95/p99 of the
streaming requests by phase, errors, workers over time (from the report's /metrics
timeline), and how long after the spike's hold ended the rolling p95 TTFT (requests by
intended send time, 5 s windows) was back within 20% of the baseline phase's p95.

    loadtest/scripts/spike_summary.py RESULTS_DIR [RESULTS_DIR ...]
"""
import json
import sys
from pathlib import Path


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarise(d: Path):
    recs = [json.loads(l) for l in (d / "requests.jsonl").read_text().splitlines() if l]
    report = json.loads((d / "report.json").read_text())
    phases = []
    for r in recs:
        if r["phase"] not in phases:
            phases.append(r["phase"])
    print(f"## {report['name']} -> {report['target']}")
    print("| phase | sent | errors | TTFT p50 | p95 | p99 (s) |")
    print("|---|---|---|---|---|---|")
    for ph in phases:
        rs = [r for r in recs if r["phase"] == ph]
        tt = [r["ttft"] for r in rs if r.get("ttft") is not None and r["status"] == 200]
        errs = sum(1 for r in rs if not (r["status"] == 200 and not r.get("error")))
        print(f"| {ph} | {len(rs)} | {errs} | {pct(tt,50):.3f} | {pct(tt,95):.3f} | {pct(tt,99):.3f} |")
    statuses = {}
    for r in recs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    print(f"statuses: {statuses}")
    # Recovery: end of the spike's hold (the last non-recovery phase) to the first 5 s
    # window whose p95 TTFT is within 20% of the baseline's.
    base = [r["ttft"] for r in recs if r["phase"] == phases[0] and r.get("ttft") is not None]
    target = pct(base, 95) * 1.2
    rec = [r for r in recs if r["phase"] == phases[-1]]
    if rec and base:
        start = min(r["intended"] for r in rec)
        t, back = start, None
        while t < max(r["intended"] for r in rec):
            w = [r["ttft"] for r in rec if t <= r["intended"] < t + 5 and r.get("ttft") is not None]
            if len(w) >= 3 and pct(w, 95) <= target:
                back = t - start
                break
            t += 1
        print(f"baseline p95 TTFT {pct(base,95):.3f} s; back within 20% "
              f"{'after %.0f s of recovery' % back if back is not None else 'never'}")
    ms = report.get("metrics") or []
    if ms:
        pts = [(round(m["t"]), int(m["workers_ready"] + m["workers_starting"])) for m in ms]
        print("workers (ready + starting) every 10 s:", ", ".join(f"{t}s:{w}" for t, w in pts[::10]))
        print(f"max workers {max(w for _, w in pts)}, queue depth max "
              f"{max(m['queue_depth'] for m in ms):.0f}, cold starts "
              f"{ms[-1]['cold_starts'] - ms[0]['cold_starts']:.0f}")
    print()


for d in sys.argv[1:]:
    summarise(Path(d))
