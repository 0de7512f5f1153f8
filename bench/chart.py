"""chart.png: pages/s per mode (throughput part) and efficiency (ideal / wall) per mode, medians with
min..max bars. matplotlib (Agg) is installed on demand; without it a plain bar picture is written."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

__all__ = ["efficiency_bars", "throughput_bars", "write_chart"]

Bars = list[tuple[str, float, float, float]]  #: label, median, min, max


def throughput_bars(summary: dict[str, Any]) -> Bars:
    figures = summary.get("throughput", {})
    return [
        (name.removesuffix(" pages/s"), f["median"], f["min"], f["max"])
        for name, f in figures.items()
        if name.endswith(" pages/s")
    ]


def efficiency_bars(summary: dict[str, Any]) -> Bars:
    bars: Bars = []
    for name, f in summary.get("classic", {}).items():
        if name.endswith(" efficiency"):
            bars.append((name.removesuffix(" efficiency"), f["median"], f["min"], f["max"]))
    for name, f in summary.get("latency", {}).items():
        if name.endswith("wall/ideal"):
            label = "latency: " + name.removesuffix(" wall/ideal")
            bars.append((label, 1 / f["median"], 1 / f["max"], 1 / f["min"]))
    for name, f in summary.get("scaleout", {}).items():
        if name.endswith(" efficiency"):
            bars.append(("scale-out: crawlq " + name.removesuffix(" efficiency"), f["median"], f["min"], f["max"]))
    return bars


def write_chart(path: Path, summary: dict[str, Any], title: str) -> str:
    """Write the chart; returns "matplotlib" or "fallback"."""
    panels = [("pages/s (throughput-bound, /fast)", throughput_bars(summary))]
    panels.append(("efficiency = ideal / wall", efficiency_bars(summary)))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _fallback_png(path, [bars for _, bars in panels])
        return "fallback"
    figure, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    for axis, (label, bars) in zip(axes, panels, strict=True):
        axis.set_xlabel(label)
        if not bars:
            axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes)
            continue
        names = [bar[0] for bar in bars]
        medians = [bar[1] for bar in bars]
        errors = [[bar[1] - bar[2] for bar in bars], [bar[3] - bar[1] for bar in bars]]
        colors = ["tab:orange" if "crawlq" in name else "tab:blue" for name in names]
        axis.barh(names, medians, xerr=errors, color=colors, capsize=3)
        axis.invert_yaxis()
        if label.startswith("efficiency"):
            axis.axvline(1.0, color="grey", linewidth=0.8)
        axis.grid(axis="x", alpha=0.3)
        for y, bar in enumerate(bars):
            value = bar[1]
            axis.text(bar[3], y, f"  {value:,.0f}" if value >= 10 else f"  {value:.2f}", va="center", fontsize=8)
        axis.set_xlim(0, max(bar[3] for bar in bars) * 1.15)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return "matplotlib"


def _fallback_png(path: Path, panels: list[Bars], width: int = 800, bar_h: int = 14) -> None:
    """Horizontal bars only (no text): one block per panel, crawlq in orange, peers in blue."""
    rows: list[list[tuple[int, int, int]]] = []
    for bars in panels:
        top = max((bar[1] for bar in bars), default=1.0) or 1.0
        for label, median, _, _ in bars:
            color = (230, 120, 20) if "crawlq" in label else (40, 100, 180)
            length = int((width - 20) * median / top)
            line = [(255, 255, 255)] * 10 + [color] * length + [(255, 255, 255)] * (width - 10 - length)
            rows += [line] * bar_h + [[(255, 255, 255)] * width] * 4
        rows += [[(200, 200, 200)] * width] * 2
    raw = b"".join(b"\x00" + bytes(channel for pixel in line for channel in pixel) for line in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
