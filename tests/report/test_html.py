"""`icd report`: the self-contained HTML review page of a submission (structure, marks, placeholders, CLI,
rendering in headless Chromium when one is installed)."""
from __future__ import annotations

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matcher.benchmark.demo_photos import demo_photo
from matcher.cli import main
from matcher.isc.metrics import evaluate
from matcher.isc.submission import GroundTruthMatch, PredictedMatch, read_ground_truth, read_predictions
from matcher.report.html import ReportSummary, build_report, plan_queries

SUBMISSION = """query_id,reference_id,score
q_crop,astronaut,0.98
q_crop,coffee,0.62
q_crop,chelsea,0.05
q_flip,chelsea,0.91
q_flip,coffee,0.12
q_bright,astronaut,0.55
q_bright,coffee,0.41
q_neg,chelsea,0.3
q_missing,astronaut,0.2
q_bad,chelsea,0.7
"""
GROUND_TRUTH = """query_id,reference_id
q_crop,astronaut
q_flip,chelsea
q_bright,coffee
q_neg,
q_missing,coffee
q_bad,chelsea
"""
# (query, reference) -> mark with top=2 and threshold 0.5
EXPECTED_MARKS = {
    ("q_crop", "astronaut"): "tp", ("q_crop", "coffee"): "fp",
    ("q_flip", "chelsea"): "tp", ("q_flip", "coffee"): "tn",
    ("q_bright", "astronaut"): "fp", ("q_bright", "coffee"): "fn",
    ("q_neg", "chelsea"): "tn",
    ("q_missing", "astronaut"): "tn", ("q_missing", "coffee"): "missed",
    ("q_bad", "chelsea"): "tp",
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """Queries (a crop, a mirror, a brightened resize, an unrelated photo, a broken file; one id has no file),
    three references, a submission and ground truth."""
    root = tmp_path_factory.mktemp("report_bench")
    (root / "q").mkdir()
    (root / "r").mkdir()
    refs = {n: demo_photo(n) for n in ("astronaut", "chelsea", "coffee")}
    for name, image in refs.items():
        Image.fromarray(image).save(root / "r" / f"{name}.jpg", quality=90)
    Image.fromarray(refs["astronaut"][60:420, 100:460]).save(root / "q" / "q_crop.jpg", quality=90)
    mirrored = np.ascontiguousarray(refs["chelsea"][:, ::-1])
    Image.fromarray(mirrored).save(root / "q" / "q_flip.jpg", quality=90)
    bright = np.clip(refs["coffee"].astype(np.int32) * 6 // 5 + 10, 0, 255).astype(np.uint8)
    Image.fromarray(bright).resize((300, 200)).save(root / "q" / "q_bright.png")
    Image.fromarray(demo_photo("coins")).save(root / "q" / "q_neg.jpg", quality=90)
    (root / "q" / "q_bad.jpg").write_bytes(b"this is not a JPEG file")
    (root / "sub.csv").write_text(SUBMISSION)
    (root / "gt.csv").write_text(GROUND_TRUTH)
    return root


class _Page(HTMLParser):
    """Collects what the tests look at: resource attributes, match rows, placeholders, images, svg, styles."""

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []
        self.rows: list[tuple[str, str, str]] = []  # (query, reference, mark)
        self.sections: list[str] = []
        self.images: list[str] = []
        self.placeholders: list[str] = []
        self.styles: list[str] = []
        self._query = ""
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href", "srcset", "data", "action", "poster", "background"):
            if key in a:
                self.resources.append((tag, key, a[key] or ""))
        if "style" in a:
            self.styles.append(a["style"] or "")
        cls = (a.get("class") or "").split()
        if tag == "section" and "query" in cls:
            self._query = a["data-query"]
            self.sections.append(self._query)
        if tag == "div" and "match" in cls:
            self.rows.append((self._query, a["data-ref"], a["data-mark"]))
        if tag == "div" and "placeholder" in cls:
            self._in = "placeholder"
            self.placeholders.append("")
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "style":
            self._in = "style"
            self.styles.append("")

    def handle_endtag(self, tag):
        if tag in ("div", "style"):
            self._in = None

    def handle_data(self, data):
        if self._in == "placeholder":
            self.placeholders[-1] += data
        elif self._in == "style":
            self.styles[-1] += data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory) -> tuple[ReportSummary, str, _Page]:
    out = tmp_path_factory.mktemp("report_out") / "report.html"
    summary = build_report(bench / "sub.csv", bench / "q", bench / "r", out, ground_truth=bench / "gt.csv",
                           top=2, progress=False)
    text = out.read_text(encoding="utf-8")
    return summary, text, _parse(text)


# ------------------------------------------------------------------------------------------------- planning


def _m(q: str, r: str, s: float) -> PredictedMatch:
    return PredictedMatch(q, r, s)


def test_plan_orders_by_best_score_and_caps_with_problem_queries_first():
    rows = [_m("qa", "ra", 0.9), _m("qb", "rx", 0.8), _m("qc", "rx", 0.3), _m("qd", "rx", 0.2),
            _m("qe", "re", 0.95), _m("qa", "ry", 0.1)]
    gt = [GroundTruthMatch("qa", "ra"), GroundTruthMatch("qb", "rb"), GroundTruthMatch("qc", ""),
          GroundTruthMatch("qd", "rd"), GroundTruthMatch("qe", "re"), GroundTruthMatch("qz", "rz")]
    every = plan_queries(rows, gt, top=3, max_queries=10)
    assert [p.query_id for p in every] == ["qe", "qa", "qb", "qc", "qd", "qz"]  # qz: no rows, last
    assert [p.query_id for p in every if p.flagged] == ["qb", "qd", "qz"]
    qz = every[-1]
    assert qz.best is None and [(x.reference_id, x.score, x.rank, x.mark) for x in qz.pairs] == [
        ("rz", None, None, "missed")]
    # the cap takes the flagged queries first, fills with the best others, and shows them by best score
    capped = plan_queries(rows, gt, top=3, max_queries=4)
    assert [p.query_id for p in capped] == ["qe", "qb", "qd", "qz"]
    # without ground truth: best scores only, no marks
    plain = plan_queries(rows, None, top=1, max_queries=2)
    assert [p.query_id for p in plain] == ["qe", "qa"]
    assert all(x.mark is None for p in plain for x in p.pairs) and [len(p.pairs) for p in plain] == [1, 1]
    with pytest.raises(ValueError):
        plan_queries(rows, gt, top=0)


def test_plan_true_references_beyond_the_top_rows():
    rows = [_m("q", "r1", 0.9), _m("q", "r2", 0.7), _m("q", "r3", 0.2)]
    gt = [GroundTruthMatch("q", "r2"), GroundTruthMatch("q", "r3")]
    (plan,) = plan_queries(rows, gt, top=1, threshold=0.5)
    got = [(x.reference_id, x.rank, x.is_copy, x.mark) for x in plan.pairs]
    # r2 scores above the threshold further down: right; r3 is below it: missed
    assert got == [("r1", 1, True, "fp"), ("r2", 2, True, "tp"), ("r3", 3, False, "missed")]
    assert plan.flagged


# ------------------------------------------------------------------------------------------------- the page


def test_page_is_self_contained(report):
    _, text, page = report
    assert page.resources, "expected images and in-page links"
    for tag, attr, value in page.resources:
        assert value.startswith(("data:", "#")), f"external resource <{tag} {attr}={value[:60]!r}>"
    assert "link" not in page.tags and "iframe" not in page.tags
    for style in page.styles:
        assert "url(" not in style and "@import" not in style
    assert "<script src" not in text
    assert text.startswith("<!DOCTYPE html>")
    # every picture is an embedded JPEG drawn at the modest height
    assert page.images and all(src.startswith("data:image/jpeg;base64,") for src in page.images)
    first = Image.open(io.BytesIO(base64.b64decode(page.images[0].split(",", 1)[1])))
    assert first.format == "JPEG" and first.height == 200


def test_rows_and_marks_match_the_ground_truth(report):
    summary, _, page = report
    # best score first
    assert page.sections == ["q_crop", "q_flip", "q_bad", "q_bright", "q_neg", "q_missing"]
    assert len(page.rows) == summary.n_pairs == len(EXPECTED_MARKS)
    assert summary.n_queries == 6
    assert {(q, r): mark for q, r, mark in page.rows} == EXPECTED_MARKS


def test_verified_pairs_carry_evidence(report):
    _, text, _ = report
    # the crop and the mirrored copy verify; the mirrored one says so
    assert text.count("containment query_in_reference") >= 1
    assert "mirrored" in text and "not verified" in text


def test_missing_and_broken_images_get_placeholders(report, bench):
    summary, _, page = report
    reasons = {Path(p.path).name: p.reason for p in summary.problems}
    assert reasons == {"q_missing.*": "missing", "q_bad.jpg": "not_an_image"}  # once per file
    joined = " | ".join(page.placeholders)
    assert "q_missing" in joined and "no image file" in joined
    assert "q_bad.jpg" in joined and "not a recognised image" in joined
    # q_missing shows two rows, each with its placeholder; q_bad one
    assert len(page.placeholders) == 3


def test_header_has_metrics_and_pr_curve(report, bench):
    _, text, page = report
    m = evaluate(read_predictions(bench / "sub.csv"), read_ground_truth(bench / "gt.csv"))
    assert f"{m.micro_ap:.4f}" in text and "recall@P90" in text
    assert "svg" in page.tags and "polyline" in page.tags
    assert ">recall</text>" in text and ">precision</text>" in text
    assert "6 queries, 10 rows, 3 references" in text


def test_without_ground_truth_in_memory_rows(bench, tmp_path):
    rows = read_predictions(bench / "sub.csv")
    out = tmp_path / "plain.html"
    summary = build_report(rows, bench / "q", bench / "r", out, top=1, max_queries=2, threshold=0.95,
                           progress=False)
    page = _parse(out.read_text(encoding="utf-8"))
    assert page.sections == ["q_crop", "q_flip"] and summary.n_pairs == 2 and not summary.problems
    assert [mark for _, _, mark in page.rows] == ["", ""]
    assert "svg" not in page.tags
    text = out.read_text(encoding="utf-8")
    assert text.count('class="verdict copy"') == 1 and text.count('class="verdict nocopy"') == 1


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_bad_submission_exits_2_naming_file_and_line(bench, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("query_id,reference_id,score\nq_crop,astronaut,0.9\nq_flip,chelsea,high\n")
    out = tmp_path / "r.html"
    rc = main(["report", str(bad), "--queries", str(bench / "q"), "--references", str(bench / "r"),
               "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad} line 3" in err and "not a number" in err
    assert not out.exists()


def test_cli_lists_image_problems_and_writes_atomically(bench, tmp_path, capsys):
    out = tmp_path / "cli.html"
    rc = main(["report", str(bench / "sub.csv"), "--queries", str(bench / "q"), "--references",
               str(bench / "r"), "--ground-truth", str(bench / "gt.csv"), "--top", "1", "--output", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "q_missing" in err and "q_bad.jpg" in err
    assert [p.name for p in tmp_path.iterdir()] == ["cli.html"]  # no temp file left behind
    assert "<title>icd report: sub.csv</title>" in out.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------- render


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_page_renders_in_headless_chromium(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium / chromium-browser / google-chrome on PATH")
    summary, _, _ = report
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1280,1600", Path(summary.output).resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert rgb.shape[:2] == (1600, 1280)
    assert rgb.std() > 20  # not a blank page
    # the embedded photos render: a page of text and grey boxes alone has few strongly coloured pixels
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation > 80).mean() > 0.03  # measured: ~0.08 with the photos, ~0.006 without
