#!/usr/bin/env python3
"""Draws bench/chart.svg from bench/load.csv and bench/inprocess.csv (no third-party modules).

    python3 scripts/chart.py [--load bench/load.csv] [--inprocess bench/inprocess.csv] [--out bench/chart.svg]
"""
import argparse
import csv
from html import escape


def bars(x0, y0, width, height, title, rows, unit, fmt):
    """A horizontal bar chart: rows of (label, value, note)."""
    out = [f'<text x="{x0}" y="{y0 - 10}" font-size="15" font-weight="bold">{escape(title)}</text>']
    top = max(v for _, v, _ in rows) or 1
    bar_h = (height - 10) / len(rows)
    for i, (label, value, note) in enumerate(rows):
        y = y0 + i * bar_h
        w = (width - 110 - 330) * value / top
        out.append(f'<text x="{x0}" y="{y + bar_h * 0.6}" font-size="12">{escape(label)}</text>')
        out.append(f'<rect x="{x0 + 110}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 8:.1f}" fill="#4a7bd0"/>')
        text = f"{fmt(value)} {unit}" + (f"  ({note})" if note else "")
        out.append(f'<text x="{x0 + 116 + w:.1f}" y="{y + bar_h * 0.6}" font-size="12">{escape(text)}</text>')
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--load", default="bench/load.csv")
    p.add_argument("--inprocess", default="bench/inprocess.csv")
    p.add_argument("--out", default="bench/chart.svg")
    a = p.parse_args()

    load = [r for r in csv.DictReader(open(a.load)) if r["scenario"] in ("plain", "miss", "replay")]
    load_rows = [(r["scenario"], float(r["requests_per_s"]), f'{float(r["ratio_to_plain"]):.2f}x plain, p99 {r["p99_ms"]} ms') for r in load]

    medians = {r["benchmark"]: float(r["median_us"]) for r in csv.DictReader(open(a.inprocess))}
    plain = medians["engine/plain_handler"]
    engine_rows = [
        (name, medians[f"engine/{name}"] - plain, f'{medians[f"engine/{name}"]:.1f} µs in all')
        for name in ("miss", "miss_full_store", "replay", "mismatch", "in_flight_conflict")
        if f"engine/{name}" in medians
    ]

    width, height = 900, 500
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    svg += bars(20, 40, width - 40, 170, "Whole server (wrk, 32 connections): requests/s", load_rows, "req/s", lambda v: f"{v:,.0f}")
    svg += bars(20, 270, width - 40, 210, f"Engine cost per request beyond a plain handler ({plain:.1f} µs), in process", engine_rows, "µs", lambda v: f"{v:.1f}")
    svg.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
