from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from matcher.cli.eval import add_eval_arguments, run_eval, run_eval_from_args


def _files(tmp_path: Path, sub: str) -> tuple[Path, Path, Path]:
    s = tmp_path / "sub.csv"
    s.write_text(sub)
    g = tmp_path / "gt.csv"
    g.write_text("query_id,reference_id\nq1,r1\nq2,r2\nq3,\nq4,\n")
    m = tmp_path / "manifest.json"
    m.write_text(json.dumps({"queries": {
        "q1": {"kind": "copy", "families": ["crop", "jpeg"]},
        "q2": {"kind": "copy", "families": ["jpeg"]},
        "q3": {"kind": "negative", "families": ["crop"]},
        "q4": {"kind": "hard_negative_holistic", "families": []},
    }}))
    return s, g, m


GOOD = "query_id,reference_id,score\nq1,r1,0.9\nq2,r2,0.4\nq3,r7,0.8\nq4,r1,0.95\n"


def test_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, g, m = _files(tmp_path, GOOD)
    assert run_eval(s, g, manifest=m) == 0
    out = capsys.readouterr().out
    # FP 0.95, TP 0.9 (p=1/2), FP 0.8, TP 0.4 (p=2/4): AP = 0.5
    assert "micro-AP" in out and "0.5000" in out and "family" in out and "hard_negative_holistic" in out


def test_json_output_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, g, m = _files(tmp_path, GOOD)
    plot = tmp_path / "pr.png"
    assert run_eval(s, g, manifest=m, json_out=True, plot=plot) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["overall"]["micro_ap"] == 0.5
    assert set(doc["by_family"]) == {"crop", "jpeg"}
    assert doc["by_kind"]["negative"]["micro_ap"] is None
    assert doc["flagged_at_p90"] is None  # precision never reaches 0.9 here
    assert plot.stat().st_size > 1000


def test_format_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, g, _ = _files(tmp_path, "q1,r1,0.9\nq1,r1,0.5\n")
    assert run_eval(s, g) == 2
    err = capsys.readouterr().err
    assert "sub.csv line 2" in err and "repeated pair" in err
    assert run_eval(tmp_path / "missing.csv", g) == 2


def test_argparse_wiring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, g, m = _files(tmp_path, GOOD)
    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    args = p.parse_args([str(s), str(g), "--manifest", str(m), "--json", "--max-rows", "3"])
    assert (args.json_out, args.max_rows, args.plot) == (True, 3, None)
    assert run_eval_from_args(args) == 2  # 4 rows > --max-rows 3
    assert "max_rows=3" in capsys.readouterr().err


def test_flagged_share_at_overall_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, g, m = _files(tmp_path, "q1,r1,0.9\nq2,r2,0.85\nq4,r1,0.85\nq3,r7,0.2\n")
    assert run_eval(s, g, manifest=m, json_out=True) == 0
    doc = json.loads(capsys.readouterr().out)
    # TP 0.9 (p=1), tie at 0.85 pessimistic: FP q4 (1/2), TP q2 (2/3): recall@P90 = 1/2 at score 0.9
    assert doc["overall"]["threshold_at_p90"] == 0.9 and doc["overall"]["recall_at_p90"] == 0.5
    # share of each kind's queries with a prediction >= 0.9: copy q1 of {q1, q2}; q3, q4 none
    assert doc["flagged_at_p90"] == {"copy": 0.5, "hard_negative_holistic": 0.0, "negative": 0.0}
    assert run_eval(s, g, manifest=m) == 0
    assert "flagged@P90" in capsys.readouterr().out
