"""Small charts drawn with PIL only: line charts for training curves, bar charts for code usage."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vqgen.formats.files import atomic_write

BACKGROUND = (255, 255, 255)
INK = (40, 40, 40)
GRID = (225, 225, 225)
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.4g}"


def save_image(image: Image.Image, path: str | Path) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    size: tuple[int, int] = (320, 220),
    x_label: str = "epoch",
) -> Image.Image:
    """One panel: each series is (name, xs, ys); axes span all of them, a legend names them."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    small = font(10)
    draw.text((width // 2, 4), title, fill=INK, font=font(12), anchor="mt")
    left, right, top, bottom = 52, width - 10, 24, height - 40
    xs = [x for _, sx, _ in series for x in sx]
    ys = [y for _, _, sy in series for y in sy if math.isfinite(y)]
    if not xs or not ys:
        draw.text((width // 2, height // 2), "no data", fill=INK, font=small, anchor="mm")
        return image
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    for y in nice_ticks(y0, y1, most=5):  # horizontal grid lines with their values
        _, py = to_px(x0, y)
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.text((left - 4, py), format_number(y), fill=INK, font=small, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline=INK)
    for x in nice_ticks(x0, x1, integer=True):
        px, _ = to_px(x, y0)
        draw.line([(px, bottom), (px, bottom + 3)], fill=INK)
        draw.text((px, bottom + 5), format_number(x), fill=INK, font=small, anchor="mt")
    draw.text(((left + right) // 2, bottom + 17), x_label, fill=INK, font=small, anchor="mt")

    legend_x = left
    for k, (name, sx, sy) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        points = [to_px(x, y) for x, y in zip(sx, sy) if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        draw.line([(legend_x, height - 8), (legend_x + 14, height - 8)], fill=color, width=2)
        draw.text((legend_x + 18, height - 8), name, fill=INK, font=small, anchor="lm")
        legend_x += 24 + int(draw.textlength(name, font=small))
    return image


def nice_ticks(lo: float, hi: float, most: int = 8, integer: bool = False) -> list[float]:
    """Round tick positions (1, 2 or 5 times a power of ten) between lo and hi; whole numbers if ``integer``."""
    raw = (hi - lo) / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def bar_chart(values: Sequence[float], size: tuple[int, int], title: str) -> Image.Image:
    """Bars left to right, scaled to the largest value; the title sits on top."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), title, fill=INK, font=font(12))
    left, right, top, bottom = 4, width - 4, 22, height - 4
    draw.line([(left, bottom), (right, bottom)], fill=INK)
    peak = max(max(values, default=0), 1e-12)
    step = (right - left) / max(len(values), 1)
    for k, value in enumerate(values):
        if value <= 0:
            continue
        x_start = left + k * step
        gap = step * 0.2 if step >= 6 else (1 if step >= 3 else 0)
        x_end = max(x_start, left + (k + 1) * step - gap)
        y = bottom - value / peak * (bottom - top)
        draw.rectangle([x_start, y, x_end, bottom], fill=COLORS[0])
    return image


def stack(images: Sequence[Image.Image], horizontal: bool = True, gap: int = 0) -> Image.Image:
    """Place panels side by side (or one below another) on a white canvas."""
    if horizontal:
        size = (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images))
    else:
        size = (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1))
    canvas = Image.new("RGB", size, BACKGROUND)
    offset = 0
    for image in images:
        canvas.paste(image.convert("RGB"), (offset, 0) if horizontal else (0, offset))
        offset += (image.width if horizontal else image.height) + gap
    return canvas
