from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from matcher.isc.submission import (
    GroundTruthMatch,
    PredictedMatch,
    SubmissionFormatError,
    cap_total,
    read_ground_truth,
    read_predictions,
    top_k_per_query,
    validate_ground_truth,
    validate_predictions,
    write_ground_truth,
    write_predictions,
)

P = PredictedMatch
G = GroundTruthMatch


def _write(tmp_path: Path, text: str, name: str = "sub.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _err(fn: Callable[..., object], *args: object, **kw: object) -> SubmissionFormatError:
    with pytest.raises(SubmissionFormatError) as info:
        fn(*args, **kw)
    return info.value


class TestReadPredictions:
    def test_header_present_or_absent_same_rows(self, tmp_path: Path) -> None:
        body = "q1,r1,0.5\nq2,r2,-1.25e-3\n"
        with_header = read_predictions(_write(tmp_path, "query_id,reference_id,score\n" + body, "a.csv"))
        without = read_predictions(_write(tmp_path, body, "b.csv"))
        assert with_header == without == [P("q1", "r1", 0.5), P("q2", "r2", -1.25e-3)]

    def test_whitespace_blank_lines_and_bom(self, tmp_path: Path) -> None:
        p = tmp_path / "s.csv"
        p.write_bytes("\ufeffquery_id, reference_id ,score\n\n  q1 , r1 , 0.25 \n\n".encode())
        assert read_predictions(p) == [P("q1", "r1", 0.25)]

    def test_empty_file_and_header_only(self, tmp_path: Path) -> None:
        assert read_predictions(_write(tmp_path, "", "e.csv")) == []
        assert read_predictions(_write(tmp_path, "query_id,reference_id,score\n", "h.csv")) == []

    def test_repeated_pair_line_numbers(self, tmp_path: Path) -> None:
        # line 1 header, line 2 q1/r1, line 3 q1/r3, line 4 q2/r3, line 5 repeats line 3
        p = _write(tmp_path, "query_id,reference_id,score\nq1,r1,1\nq1,r3,0.5\nq2,r3,0.4\nq1,r3,0.1\n")
        e = _err(read_predictions, p)
        assert e.line == 5 and e.path == str(p)
        assert "repeated pair (q1, r3), first seen on line 3" in str(e)
        assert str(e).startswith(f"{p} line 5:")

    @pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "1e999"])
    def test_non_finite_score(self, tmp_path: Path, bad: str) -> None:
        e = _err(read_predictions, _write(tmp_path, f"q1,r1,0.5\nq1,r2,0.3\nq2,r1,{bad}\n"))
        assert e.line == 3 and "not finite" in str(e)

    def test_unparsable_score(self, tmp_path: Path) -> None:
        e = _err(read_predictions, _write(tmp_path, "q1,r1,0.5\nq1,r2,high\n"))
        assert e.line == 2 and "'high' is not a number" in str(e)

    def test_first_row_with_text_score_other_than_score_is_an_error(self, tmp_path: Path) -> None:
        e = _err(read_predictions, _write(tmp_path, "query,reference,similarity\nq1,r1,0.5\n"))
        assert e.line == 1 and "not a number" in str(e)

    def test_missing_and_extra_columns(self, tmp_path: Path) -> None:
        e = _err(read_predictions, _write(tmp_path, "q1,r1,0.5\n\nq2,r2\n", "m.csv"))
        assert e.line == 3 and "missing column" in str(e)  # the blank line 2 still counts
        e = _err(read_predictions, _write(tmp_path, "q1,r1,0.5,extra\n", "x.csv"))
        assert e.line == 1 and "extra columns" in str(e)

    def test_empty_ids(self, tmp_path: Path) -> None:
        e = _err(read_predictions, _write(tmp_path, "q1,r1,1\n ,r1,0.5\n", "q.csv"))
        assert e.line == 2 and "empty query_id" in str(e)
        e = _err(read_predictions, _write(tmp_path, "q1,,0.5\n", "r.csv"))
        assert e.line == 1 and "empty reference_id" in str(e)

    def test_too_many_rows_small_cap(self, tmp_path: Path) -> None:
        p = _write(tmp_path, "query_id,reference_id,score\nq1,r1,4\nq1,r2,3\nq1,r3,2\nq1,r4,1\n")
        assert len(read_predictions(p, max_rows=4)) == 4
        e = _err(read_predictions, p, max_rows=3)
        assert e.line == 5  # header + 3 allowed rows; the 4th data row is on line 5
        assert "max_rows=3" in str(e) and "--max-rows" in str(e)
        assert len(read_predictions(p, max_rows=None)) == 4

    def test_not_utf8(self, tmp_path: Path) -> None:
        p = tmp_path / "bin.csv"
        p.write_bytes(b"q1,r1,0.5\n\xff\xfe,r,1\n")
        e = _err(read_predictions, p)
        assert "UTF-8" in str(e) and str(p) in str(e)

    def test_is_value_error(self) -> None:
        assert issubclass(SubmissionFormatError, ValueError)


class TestWritePredictions:
    def test_round_trip_sorted_and_bit_exact(self, tmp_path: Path) -> None:
        rows = [P("q1", "r1", 0.1 + 0.2), P("q2", "r1", 1 / 3), P("q1", "r2", 1e-300), P("q3", "r,4", -5.0),
                P("q3", "r5", 1 / 3)]
        p = tmp_path / "out.csv"
        write_predictions(p, rows)
        assert p.read_text().splitlines()[0] == "query_id,reference_id,score"
        back = read_predictions(p)
        # descending by score; the two 1/3 rows keep their input order (q2/r1 before q3/r5)
        assert back == [rows[1], rows[4], rows[0], rows[2], rows[3]]
        assert back[2].score == 0.1 + 0.2  # repr keeps every bit (%.6g would give 0.3)

    def test_invalid_rows_are_refused_and_nothing_written(self, tmp_path: Path) -> None:
        p = tmp_path / "out.csv"
        e = _err(write_predictions, p, [P("q1", "r1", 1.0), P("q1", "r2", math.nan)])
        assert e.line == 3  # with the header written first, row index 1 would be on line 3
        e = _err(write_predictions, p, [P("q1", "r1", 1.0), P("q1", "r1", 0.5)])
        assert "repeated pair (q1, r1), first seen on line 2" in str(e)
        e = _err(write_predictions, p, [P("q1", "r1", 1.0)] * 1 + [P("q2", "r1", 1.0)], max_rows=1)
        assert "max_rows=1" in str(e)
        assert not p.exists()
        assert list(tmp_path.iterdir()) == []  # no temp files left either


class TestValidatePredictions:
    def test_line_is_index_plus_one_or_two_with_header(self) -> None:
        rows = [P("q1", "r1", 1.0), P("q1", "r2", 0.5), P("q1", "r1", 0.2)]
        assert _err(validate_predictions, rows, 10).line == 3
        assert _err(validate_predictions, rows, 10, header=True).line == 4

    def test_cap_and_bad_values(self) -> None:
        assert _err(validate_predictions, [P("q", "a", 1.0), P("q", "b", 1.0)], 1).line == 2
        assert "not finite" in str(_err(validate_predictions, [P("q", "a", math.inf)], 5))
        assert "empty reference_id" in str(_err(validate_predictions, [P("q", " ", 1.0)], 5))
        assert "whitespace" in str(_err(validate_predictions, [P(" q", "a", 1.0)], 5))
        validate_predictions([P("q", "a", 1)], None)  # ints are scores too


class TestGroundTruth:
    def test_read_with_and_without_header_empty_reference(self, tmp_path: Path) -> None:
        body = "Q1,R1\nQ2,\nQ3,R3\nQ3,R4\n"
        a = read_ground_truth(_write(tmp_path, "query_id,reference_id\n" + body, "a.csv"))
        b = read_ground_truth(_write(tmp_path, body, "b.csv"))
        assert a == b == [G("Q1", "R1"), G("Q2", ""), G("Q3", "R3"), G("Q3", "R4")]

    def test_errors_with_line_numbers(self, tmp_path: Path) -> None:
        e = _err(read_ground_truth, _write(tmp_path, "query_id,reference_id\nQ1,R1\nQ2\n", "m.csv"))
        assert e.line == 3 and "missing column" in str(e)
        e = _err(read_ground_truth, _write(tmp_path, "Q1,R1,x\n", "x.csv"))
        assert e.line == 1 and "extra columns" in str(e)
        e = _err(read_ground_truth, _write(tmp_path, "Q1,R1\nQ2,R2\nQ1,R1\n", "r.csv"))
        assert e.line == 3 and "first seen on line 1" in str(e)
        e = _err(read_ground_truth, _write(tmp_path, "Q1,R1\n,R2\n", "e.csv"))
        assert e.line == 2 and "empty query_id" in str(e)
        e = _err(read_ground_truth, _write(tmp_path, "Q1,\nQ1,\n", "d.csv"))
        assert e.line == 2 and "<no copy>" in str(e)

    def test_no_copy_and_copy_for_one_query_is_an_error(self, tmp_path: Path) -> None:
        e = _err(read_ground_truth, _write(tmp_path, "Q1,\nQ2,R2\nQ1,R1\n", "a.csv"))
        assert e.line == 3 and "without a copy on line 1" in str(e)
        e = _err(read_ground_truth, _write(tmp_path, "Q1,R1\nQ2,R2\nQ1,\n", "b.csv"))
        assert e.line == 3 and "has a reference on line 1" in str(e)

    def test_round_trip(self, tmp_path: Path) -> None:
        rows = [G("Q2", ""), G("Q1", "R1"), G("Q1", "R 2")]
        p = tmp_path / "gt.csv"
        write_ground_truth(p, rows)
        assert p.read_text().splitlines() == ["query_id,reference_id", "Q2,", "Q1,R1", "Q1,R 2"]
        assert read_ground_truth(p) == rows

    def test_validate_in_memory(self) -> None:
        assert _err(validate_ground_truth, [G("a", "b"), G("a", "b")]).line == 2
        assert "empty query_id" in str(_err(validate_ground_truth, [G("", "b")]))


SEL_ROWS = (P("q1", "a", 0.1), P("q1", "b", 0.9), P("q2", "a", 0.5), P("q1", "c", 0.5), P("q1", "d", 0.5))


class TestSelection:
    rows = SEL_ROWS

    def test_top_k_per_query(self) -> None:
        # q1 sorted: b 0.9, c 0.5, d 0.5 (tie kept in input order), a 0.1; q2: a 0.5
        out = top_k_per_query(self.rows, 2)
        assert out == [P("q1", "b", 0.9), P("q2", "a", 0.5), P("q1", "c", 0.5)]
        assert top_k_per_query(self.rows, 0) == []
        with pytest.raises(ValueError):
            top_k_per_query(self.rows, -1)

    def test_cap_total(self) -> None:
        assert cap_total(self.rows, 2) == [P("q1", "b", 0.9), P("q2", "a", 0.5)]
        assert len(cap_total(self.rows, 100)) == 5
