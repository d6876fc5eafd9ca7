"""The review page of a dedup run: one self-contained HTML file (pictures are inline base64 JPEG thumbnails, styles
inline, no scripts, no external resources). One section per group: the likely original first, then the other
members with their size and their pair scores; the files that were skipped at the end."""
from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from matcher.config import LoadConfig
from matcher.dedup.groups import Group, source_of
from matcher.dedup.pairs import Picture
from matcher.io.atomic import atomic_write_text
from matcher.io.folders import SkippedFile
from matcher.io.images import ImageLoadError, load_image

__all__ = ["THUMB_HEIGHT", "render_page", "thumbnail_uri", "write_page"]

THUMB_HEIGHT = 140  # px
JPEG_QUALITY = 75

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f4f4f4;color:#222}
.card{background:#fff;border-radius:6px;padding:.8em 1em;margin:0 0 1em;box-shadow:0 1px 2px #0002}
.members{display:flex;flex-wrap:wrap;gap:.8em}
figure{margin:0;padding:.4em;border:2px solid #ddd;border-radius:4px;max-width:260px}
figure.original{border-color:#2a7}
figure img{height:140px;display:block}
figcaption{font-size:.85em;word-break:break-all}
.tag{background:#2a7;color:#fff;border-radius:3px;padding:0 .3em;font-size:.8em}
.muted{color:#777}
table{border-collapse:collapse;font-size:.9em}
td,th{padding:.1em .6em;text-align:left;border-bottom:1px solid #eee}
.placeholder{height:140px;width:140px;display:flex;align-items:center;justify-content:center;background:#eee;
font-size:.8em;text-align:center}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def thumbnail_uri(rgb: np.ndarray, height: int = THUMB_HEIGHT) -> str:
    """An RGB uint8 (H, W, 3) picture as a ``data:image/jpeg;base64,...`` URI, ``height`` px high (never enlarged)."""
    im = Image.fromarray(rgb)
    if im.height > height:
        im = im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(pid: str, pic: Picture | None, is_original: bool, votes: int, load: LoadConfig, image: Any) -> str:
    if pic is None:
        body, size = '<div class="placeholder">no file</div>', ""
    else:
        try:
            src = pic.path if image is None else image
            body = f'<img src="{thumbnail_uri(load_image(src, config=load))}" alt="{_esc(pid)}">'
        except ImageLoadError as exc:
            body = f'<div class="placeholder">&#9888; {_esc(exc.detail)}</div>'
        size = f"{pic.width}&times;{pic.height} px"
    tag = '<span class="tag">original</span> ' if is_original else ""
    path = f'<br><span class="muted">{_esc(pic.path)}</span>' if pic is not None else ""
    return (f'<figure class="{"original" if is_original else "copy"}">{body}<figcaption>{tag}<b>{_esc(pid)}</b> '
            f'{size} <span class="muted">votes {votes:+d}</span>{path}</figcaption></figure>')


def _pairs_table(group: Group, threshold: float) -> str:
    rows = []
    for p in group.pairs:
        src = source_of(p, threshold)
        how = ("byte-identical" if p.exact else f"{_esc(p.b if src == p.a else p.a)} is a crop or edit of "
               f"{_esc(src)}" if src is not None else "same extent (no direction)")
        ab = "-" if p.ab is None else f"{p.ab.score:.3f} ({_esc(p.ab.containment)})"
        ba = "-" if p.ba is None else f"{p.ba.score:.3f} ({_esc(p.ba.containment)})"
        rows.append(f"<tr><td>{_esc(p.a)}</td><td>{_esc(p.b)}</td><td><b>{p.score:.4f}</b></td><td>{ab}</td>"
                    f"<td>{ba}</td><td>{how}</td></tr>")
    return ("<table><tr><th>a</th><th>b</th><th>score</th><th>a vs b</th><th>b vs a</th><th>reading</th></tr>"
            f'{"".join(rows)}</table>')


def render_page(groups: Sequence[Group], pictures: Mapping[str, Picture], threshold: float, *,
                skipped: Sequence[SkippedFile] = (), n_pictures: int | None = None, title: str = "icd dedup",
                max_groups: int | None = None, load: LoadConfig | None = None,
                images: Mapping[str, Any] | None = None) -> str:
    """The page as a string; at most ``max_groups`` groups are drawn (all when None). ``images``: id -> the
    picture itself (bytes, array, PIL image) for pictures that were given in memory, not as files."""
    load = load or LoadConfig()
    shown = list(groups if max_groups is None else groups[:max_groups])
    n = len(pictures) if n_pictures is None else n_pictures
    in_groups = sum(len(g.members) for g in groups)
    head = (f'<div class="card"><h1>{_esc(title)}</h1><p>{n} pictures, {len(groups)} groups of copies holding '
            f"{in_groups} pictures ({in_groups - len(groups)} could be removed, keeping each original); pairs "
            f"scoring at least {threshold:g}; {len(skipped)} file(s) skipped.")
    if len(shown) < len(groups):
        head += f" Showing the first {len(shown)} groups (largest first)."
    head += ("</p><p class=\"muted\">The original is the member the others are crops or edits of (pair evidence; "
             "votes: +1 per pair naming it the source, -1 per pair naming it the copy), then the largest.</p></div>")
    sections = []
    for i, g in enumerate(shown):
        figs = "".join(_figure(m, pictures.get(m), m == g.original, g.votes.get(m, 0), load, (images or {}).get(m))
                       for m in g.members)
        sections.append(f'<section class="card" id="g{i}"><h2>group {i + 1}: {len(g.members)} pictures, original '
                        f'{_esc(g.original)}</h2><div class="members">{figs}</div>'
                        f"<details><summary>{len(g.pairs)} pairs</summary>{_pairs_table(g, threshold)}</details>"
                        "</section>")
    tail = ""
    if skipped:
        items = "".join(f"<li>{_esc(s.message)}</li>" for s in skipped)
        tail = f'<div class="card"><h2>Skipped files</h2><ul>{items}</ul></div>'
    body = "".join(sections) or '<div class="card">No copies found.</div>'
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>{head}{body}{tail}</body></html>\n")


def write_page(path: str | os.PathLike[str], groups: Sequence[Group], pictures: Mapping[str, Picture],
               threshold: float, **kwargs: object) -> None:
    """Write :func:`render_page` to ``path`` atomically (keyword arguments as for it)."""
    atomic_write_text(path, render_page(groups, pictures, threshold, **kwargs))  # type: ignore[arg-type]
