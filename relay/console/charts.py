"""Charts drawn on the server as SVG (no script, no network): labelled bars, with the numbers
also in each bar's <title> and in a table beside the chart for screen readers."""

from __future__ import annotations

from html import escape

PALETTE = ("#3b6ea8", "#d9822b", "#2a9d8f", "#9b5de5", "#e63946", "#6c757d", "#8ab17d", "#b5838d")


def bar_chart(title: str, bars: list[tuple[str, float]], width: int = 560, unit: str = "") -> str:
    """Horizontal bars, one per (label, value)."""
    if not bars:
        return f"<p class='chart-empty'>{escape(title)}: nothing to show.</p>"
    row, label_w = 22, 150
    top = max(v for _, v in bars) or 1
    h = row * len(bars) + 10
    parts = [f"<svg class='chart' role='img' aria-label='{escape(title, quote=True)}' width='{width}' height='{h}'"
             f" viewBox='0 0 {width} {h}' xmlns='http://www.w3.org/2000/svg'><title>{escape(title)}</title>"]
    for i, (label, value) in enumerate(bars):
        y = 5 + i * row
        w = max(1.0, (width - label_w - 60) * value / top)
        parts.append(f"<text x='{label_w - 6}' y='{y + 15}' text-anchor='end' font-size='12'>{escape(label[:22])}</text>"
                     f"<rect x='{label_w}' y='{y + 3}' width='{w:.1f}' height='{row - 6}' fill='{PALETTE[0]}'>"
                     f"<title>{escape(label)}: {value:g}{unit}</title></rect>"
                     f"<text x='{label_w + w + 4:.1f}' y='{y + 15}' font-size='12'>{value:g}</text>")
    parts.append("</svg>")
    return "".join(parts)


def stacked_columns(title: str, columns: list[str], series: dict[str, list[float]], width: int = 640,
                    height: int = 220) -> str:
    """Columns (e.g. days), each stacked by series (e.g. channels), with a legend."""
    if not columns or not series:
        return f"<p class='chart-empty'>{escape(title)}: nothing to show.</p>"
    totals = [sum(s[i] for s in series.values()) for i in range(len(columns))]
    top = max(totals) or 1
    left, bottom, legend_h = 40, 30, 18 * ((len(series) + 3) // 4)
    plot_h = height - bottom - legend_h
    col_w = (width - left - 10) / len(columns)
    parts = [f"<svg class='chart' role='img' aria-label='{escape(title, quote=True)}' width='{width}' height='{height}'"
             f" viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg'><title>{escape(title)}</title>",
             f"<text x='4' y='12' font-size='11'>{top:g}</text><line x1='{left}' y1='{plot_h}' x2='{width - 10}'"
             f" y2='{plot_h}' stroke='#999'/>"]
    for i, col in enumerate(columns):
        x = left + i * col_w
        y = plot_h
        for k, (name, values) in enumerate(series.items()):
            v = values[i]
            if not v:
                continue
            hgt = plot_h * v / top
            y -= hgt
            parts.append(f"<rect x='{x + 2:.1f}' y='{y:.1f}' width='{max(1.0, col_w - 4):.1f}' height='{hgt:.1f}'"
                         f" fill='{PALETTE[k % len(PALETTE)]}'><title>{escape(col)} {escape(name)}: {v:g}</title></rect>")
        if len(columns) <= 16 or i % 2 == 0:
            parts.append(f"<text x='{x + col_w / 2:.1f}' y='{plot_h + 14}' text-anchor='middle' font-size='10'>"
                         f"{escape(col[5:])}</text>")
    for k, name in enumerate(series):
        lx, ly = left + (k % 4) * 150, plot_h + bottom + 14 * (k // 4)
        parts.append(f"<rect x='{lx}' y='{ly - 9}' width='10' height='10' fill='{PALETTE[k % len(PALETTE)]}'/>"
                     f"<text x='{lx + 14}' y='{ly}' font-size='11'>{escape(name[:20])}</text>")
    parts.append("</svg>")
    return "".join(parts)
