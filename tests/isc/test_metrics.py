from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from matcher.isc.metrics import (
    ManifestError,
    Metrics,
    evaluate,
    evaluate_by_family,
    evaluate_by_kind,
    evaluate_with_breakdowns,
    format_metrics_table,
    fraction_above,
    load_manifest,
    precision_recall_curve,
    queries_by_family,
)
from matcher.isc.submission import GroundTruthMatch, PredictedMatch, SubmissionFormatError

P = PredictedMatch
G = GroundTruthMatch


class TestMicroAP:
    def test_perfect(self) -> None:
        gt = [G("q1", "r1"), G("q2", "r2")]
        preds = [P("q2", "r2", 0.8), P("q1", "r1", 0.9)]
        m = evaluate(preds, gt)
        # ranks: TP (p=1/1), TP (p=2/2); AP = 1/2*1 + 1/2*1 = 1
        assert m.micro_ap == 1.0
        assert m.recall_at_p90 == 1.0 and m.threshold_at_p90 == 0.8
        assert m.recall_at_rank1 == 1.0 and m.recall_at_rank10 == 1.0
        assert (m.n_predictions, m.n_gt_pairs, m.n_true_positives_predicted) == (2, 2, 2)
        assert (m.n_queries_with_gt, m.n_queries_without_gt, m.unknown_queries) == (2, 0, 0)

    @pytest.mark.parametrize("fp_first", [True, False])
    def test_tie_between_positive_and_negative_is_pessimistic(self, fp_first: bool) -> None:
        gt = [G("q1", "r1"), G("q2", "r2"), G("q3", "")]
        fp = P("q3", "r9", 0.5)
        rows = [P("q1", "r1", 0.9), P("q2", "r2", 0.5)]
        preds = [fp, *rows] if fp_first else [*rows, fp]
        # pessimistic order: TP 0.9 (p=1), FP 0.5 (p=1/2), TP 0.5 (p=2/3)
        # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6, whatever the input order
        assert evaluate(preds, gt).micro_ap == pytest.approx(5 / 6)
        # optimistic order (what a strictly lower FP score gives): TP, TP, FP -> AP = 1
        lower = [*rows, P("q3", "r9", 0.4)]
        assert evaluate(lower, gt).micro_ap == 1.0

    def test_queries_without_ground_truth_add_false_positives(self) -> None:
        gt = [G("q1", "r1"), G("q2", "")]
        preds = [P("q1", "r1", 0.9), P("q2", "r5", 0.95)]
        m = evaluate(preds, gt)
        # FP 0.95 (p=0), TP 0.9 (p=1/2): AP = 1 * 1/2
        assert m.micro_ap == 0.5
        assert m.n_queries_without_gt == 1 and m.n_queries_with_gt == 1 and m.unknown_queries == 0
        # precision 0 then 0.5: never 0.9
        assert m.recall_at_p90 == 0.0 and m.threshold_at_p90 is None

    def test_never_predicted_positives_lower_recall(self) -> None:
        gt = [G("q1", "r1"), G("q2", "r2"), G("q3", "r3"), G("q4", "r4")]
        preds = [P("q1", "r1", 0.9), P("q2", "r2", 0.8)]
        m = evaluate(preds, gt)
        # both predictions correct (p=1, p=1) but recall steps are 1/4: AP = 1/4 + 1/4 = 0.5
        assert m.micro_ap == 0.5
        assert m.recall_at_p90 == 0.5 and m.threshold_at_p90 == 0.8
        assert m.recall_at_rank1 == 0.5 and m.n_true_positives_predicted == 2

    def test_unknown_queries_are_false_positives_and_reported(self) -> None:
        gt = [G("q1", "r1")]
        preds = [P("x1", "r1", 0.99), P("x1", "r2", 0.98), P("q1", "r1", 0.5)]
        m = evaluate(preds, gt)
        # FP, FP, TP (p=1/3): AP = 1/3
        assert m.micro_ap == pytest.approx(1 / 3)
        assert m.unknown_queries == 1 and m.n_unknown_predictions == 2

    def test_empty_predictions(self) -> None:
        m = evaluate([], [G("q1", "r1"), G("q2", "")])
        assert m.micro_ap == 0.0 and m.recall_at_p90 == 0.0 and m.threshold_at_p90 is None
        assert m.recall_at_rank1 == 0.0 and m.recall_at_rank10 == 0.0 and m.n_predictions == 0
        p, r, t = precision_recall_curve([], [G("q1", "r1")])
        assert len(p) == len(r) == len(t) == 0

    def test_no_ground_truth_pairs_gives_nan_not_a_crash(self) -> None:
        m = evaluate([P("q1", "r1", 1.0)], [G("q1", "")])
        assert math.isnan(m.micro_ap) and math.isnan(m.recall_at_rank1)
        assert m.to_dict()["micro_ap"] is None
        json.dumps(m.to_dict(), allow_nan=False)

    def test_repeated_pair_is_refused(self) -> None:
        with pytest.raises(SubmissionFormatError, match="repeated pair"):
            evaluate([P("q1", "r1", 1.0), P("q1", "r1", 0.5)], [G("q1", "r1")])


class TestRecallAtP90:
    def test_never_reaches_precision_09(self) -> None:
        gt = [G("q1", "r1")]
        m = evaluate([P("q1", "r9", 0.9), P("q1", "r1", 0.8)], gt)
        # precision 0/1, 1/2 -> never >= 0.9; AP = 1 * 1/2
        assert m.recall_at_p90 == 0.0 and m.threshold_at_p90 is None and m.micro_ap == 0.5

    def test_precision_exactly_09_counts_and_threshold(self) -> None:
        # ranks 1-8 TP, 9 FP, 10 TP, 11 FP, 12 FP, 13 TP; 12 ground-truth pairs (2 never predicted)
        labels = [1] * 8 + [0, 1, 0, 0, 1]
        scores = [1.0 - 0.01 * i for i in range(len(labels))]  # rank 10 has score 0.91
        preds = [P(f"q{i}", f"r{i}" if lab else "rx", s) for i, (lab, s) in enumerate(zip(labels, scores))]
        gt = [G(f"q{i}", f"r{i}") for i, lab in enumerate(labels) if lab] + [G("qa", "ra"), G("qb", "rb")]
        assert len(gt) == 12
        m = evaluate(preds, gt)
        # precision at rank 10 = 9/10 = 0.9 exactly (counts), rank 13 = 10/13 < 0.9
        assert m.recall_at_p90 == 9 / 12
        assert m.threshold_at_p90 == pytest.approx(0.91)
        # AP = (8 * 1 + 9/10 + 10/13) / 12
        assert m.micro_ap == pytest.approx((8 + 0.9 + 10 / 13) / 12)

    def test_threshold_is_not_inside_a_failing_tie_group(self) -> None:
        # ranks 1-10 TP (scores 1.00..0.91), then a tie group at 0.5: FP, FP, TP (pessimistic)
        gt = [G(f"q{i}", f"r{i}") for i in range(11)]
        preds = [P(f"q{i}", f"r{i}", 1.0 - 0.01 * i) for i in range(10)]
        preds += [P("q0", "rx", 0.5), P("q1", "rx", 0.5), P("q10", "r10", 0.5)]
        m = evaluate(preds, gt)
        # rank 11 (FP at 0.5) still has precision 10/11 >= 0.9 but the same recall as rank 10;
        # rank 13 has 11/13 < 0.9. Best recall 10/11, first reached at rank 10 with score 0.91.
        assert m.recall_at_p90 == 10 / 11
        assert m.threshold_at_p90 == pytest.approx(0.91)


class TestRecallAtRank:
    def test_rank1_rank10_with_ties(self) -> None:
        gt = [G("q1", "r1"), G("q2", "r2"), G("q3", "r3"), G("q4", "r4"), G("q5", "ra"), G("q5", "rb")]
        preds = [P("q1", "r1", 0.7), P("q1", "x", 0.7)]  # tie: r1 counted 2nd -> not rank 1, in top 10
        preds += [P("q2", "r2", 0.9), P("q2", "x", 0.3)]  # r2 strictly first -> rank 1
        preds += [P("q3", f"x{i}", 0.9 + 0.001 * i) for i in range(9)]  # 9 above r3 ...
        preds += [P("q3", "r3", 0.5), P("q3", "y", 0.5)]  # ... and a tie: r3 counted 11th -> miss
        preds += [P("q4", f"x{i}", 0.9 + 0.001 * i) for i in range(9)]  # 9 above r4 -> r4 10th, hit
        preds += [P("q4", "r4", 0.5)]
        preds += [P("q5", "ra", 0.6), P("q5", "rb", 0.6)]  # two true refs tied: each counted 2nd
        m = evaluate(preds, gt)
        # rank 1 hits: q2 only -> 1/6; rank 10 hits: q1, q2, q4, q5/ra, q5/rb -> 5/6
        assert m.recall_at_rank1 == pytest.approx(1 / 6)
        assert m.recall_at_rank10 == pytest.approx(5 / 6)


def _reference_metrics(preds: list[PredictedMatch], gt: list[GroundTruthMatch]) -> tuple:
    """Slow, loop-by-loop implementation of the definitions, for comparison."""
    pairs = {(g.query_id, g.reference_id) for g in gt if g.reference_id}
    labelled = [(p.score, (p.query_id, p.reference_id) in pairs) for p in preds]
    labelled.sort(key=lambda x: (-x[0], x[1]))  # score desc, negatives (False) first
    tp = 0
    ap = 0.0
    best_recall, thr = 0.0, None
    for i, (s, is_tp) in enumerate(labelled, 1):
        if is_tp:
            tp += 1
            ap += (tp / i) / len(pairs)
        if tp / i >= 0.9 and tp / len(pairs) > best_recall:
            best_recall, thr = tp / len(pairs), s
    hits1 = hits10 = 0
    for p in preds:
        if (p.query_id, p.reference_id) in pairs:
            rank = sum(1 for o in preds if o.query_id == p.query_id and o.score >= p.score)
            hits1 += rank <= 1
            hits10 += rank <= 10
    return ap, best_recall, thr, hits1 / len(pairs), hits10 / len(pairs)


def test_matches_slow_reference_on_random_data_with_ties() -> None:
    rng = np.random.default_rng(0)
    gt = [G(f"q{i}", f"r{i}") for i in range(60)] + [G(f"q{i}", f"s{i}") for i in range(0, 60, 7)]
    gt += [G(f"q{i}", "") for i in range(60, 150)]
    pairs = {(g.query_id, g.reference_id) for g in gt}
    preds = []
    for q in range(160):  # q150..q159 are unknown to the ground truth
        refs = {f"r{r}" for r in rng.choice(80, size=rng.integers(0, 15), replace=False)}
        if q < 60 and rng.random() < 0.7:
            refs |= {f"r{q}", f"s{q}"}  # s{q} is true only for every 7th query
        for r in sorted(refs):
            is_true = (f"q{q}", r) in pairs
            score = float(np.round(rng.random() * (1.3 if is_true else 1.0), 1))  # coarse: many ties
            preds.append(P(f"q{q}", r, score))
    m = evaluate(preds, gt)
    ap, r90, thr, r1, r10 = _reference_metrics(preds, gt)
    assert m.n_true_positives_predicted > 30 and 0 < r90 < 1 and 0 < ap < 1  # a non-trivial case
    assert m.micro_ap == pytest.approx(ap)
    assert m.recall_at_p90 == pytest.approx(r90)
    assert m.threshold_at_p90 == thr
    assert m.recall_at_rank1 == pytest.approx(r1) and m.recall_at_rank10 == pytest.approx(r10)
    assert m.unknown_queries == len({p.query_id for p in preds if int(p.query_id[1:]) >= 150})
    # the curve agrees with AP: sum of precision at each recall step
    precision, recall, thresholds = precision_recall_curve(preds, gt)
    steps = np.diff(np.concatenate([[0.0], recall]))
    assert float((steps * precision).sum()) == pytest.approx(m.micro_ap)
    assert np.all(np.diff(thresholds) <= 0)


MANIFEST = {
    "queries": {
        "q1": {"kind": "copy", "families": ["crop", "jpeg"], "edits": []},
        "q2": {"kind": "copy", "families": ["jpeg"], "edits": []},
        "q3": {"kind": "negative", "families": ["crop"], "edits": []},
        "q4": {"kind": "hard_negative_holistic", "families": [], "edits": []},
    }
}
FAM_GT = [G("q1", "r1"), G("q2", "r2"), G("q3", ""), G("q4", "")]
FAM_PREDS = [P("q1", "r1", 0.9), P("q2", "r2", 0.4), P("q3", "r7", 0.8), P("q4", "r1", 0.85)]


class TestBreakdowns:
    def test_overall(self) -> None:
        m = evaluate(FAM_PREDS, FAM_GT)
        # q1 TP 0.9 (p=1), q4 FP, q3 FP, q2 TP 0.4 (p=2/4): AP = (1 + 1/2) / 2 = 0.75
        assert m.micro_ap == 0.75
        assert m.recall_at_p90 == 0.5 and m.threshold_at_p90 == 0.9

    def test_by_family(self) -> None:
        assert queries_by_family(MANIFEST) == {"crop": {"q1", "q3"}, "jpeg": {"q1", "q2"}}
        fam = evaluate_by_family(FAM_PREDS, FAM_GT, MANIFEST)
        assert list(fam) == ["crop", "jpeg"]
        # crop = {q1, q3}: TP 0.9 (p=1), FP 0.8 -> AP = 1; one query with and one without a copy
        assert fam["crop"].micro_ap == 1.0
        assert (fam["crop"].n_gt_pairs, fam["crop"].n_queries_with_gt, fam["crop"].n_queries_without_gt) == (1, 1, 1)
        assert fam["crop"].n_predictions == 2
        # jpeg = {q1, q2}: TP 0.9, TP 0.4 -> AP = 1 (q4's FP at 0.85 is not in this family)
        assert fam["jpeg"].micro_ap == 1.0 and fam["jpeg"].n_gt_pairs == 2

    def test_by_kind_and_fraction_above(self) -> None:
        kinds = evaluate_by_kind(FAM_PREDS, FAM_GT, MANIFEST)
        assert list(kinds) == ["copy", "hard_negative_holistic", "negative"]
        assert kinds["copy"].micro_ap == 1.0
        assert math.isnan(kinds["negative"].micro_ap) and kinds["negative"].n_predictions == 1
        thr = evaluate(FAM_PREDS, FAM_GT).threshold_at_p90  # 0.9
        assert fraction_above(FAM_PREDS, {"q4"}, thr) == 0.0  # 0.85 < 0.9
        assert fraction_above(FAM_PREDS, {"q4"}, 0.85) == 1.0  # at the threshold counts
        assert fraction_above(FAM_PREDS, {"q3", "q4"}, 0.82) == 0.5
        assert fraction_above(FAM_PREDS, {"q1", "q2"}, 0.5, per="prediction") == 0.5
        assert math.isnan(fraction_above(FAM_PREDS, set(), 0.5))
        q4 = [p for p in FAM_PREDS if p.query_id == "q4"]  # per pair: only the named reference counts
        assert fraction_above(FAM_PREDS, {"q4"}, 0.0, per="pair", pairs={"q4": {q4[0].reference_id}}) == 1.0
        assert fraction_above(FAM_PREDS, {"q4"}, 0.0, per="pair", pairs={"q4": {"not-there"}}) == 0.0
        assert fraction_above(FAM_PREDS, {"q4"}, 1.1, per="pair", pairs={"q4": {q4[0].reference_id}}) == 0.0
        with pytest.raises(ValueError, match="needs pairs"):
            fraction_above(FAM_PREDS, {"q4"}, 0.5, per="pair")
        with pytest.raises(ValueError):
            fraction_above(FAM_PREDS, {"q1"}, 0.5, per="row")

    def test_one_pass_equals_separate_calls(self) -> None:
        overall, fam, kind = evaluate_with_breakdowns(FAM_PREDS, FAM_GT, MANIFEST)
        assert overall.to_dict() == evaluate(FAM_PREDS, FAM_GT).to_dict()
        assert {k: v.to_dict() for k, v in fam.items()} == {
            k: v.to_dict() for k, v in evaluate_by_family(FAM_PREDS, FAM_GT, MANIFEST).items()
        }
        assert set(kind) == {"copy", "negative", "hard_negative_holistic"}
        assert evaluate_with_breakdowns(FAM_PREDS, FAM_GT)[1:] == ({}, {})


class TestManifest:
    def test_load_good(self, tmp_path: Path) -> None:
        p = tmp_path / "manifest.json"
        p.write_text(json.dumps(MANIFEST))
        assert load_manifest(p) == MANIFEST

    def test_bad_json_names_file_and_line(self, tmp_path: Path) -> None:
        p = tmp_path / "manifest.json"
        p.write_text('{"queries": {\n  "q1": {"kind": "copy",}\n}}')
        with pytest.raises(ManifestError, match=r"manifest\.json line 2"):
            load_manifest(p)

    def test_bad_shape(self, tmp_path: Path) -> None:
        p = tmp_path / "m.json"
        p.write_text(json.dumps({"queries": {"q1": {"families": "crop"}}}))
        with pytest.raises(ManifestError, match="q1.*families"):
            load_manifest(p)
        p.write_text("[]")
        with pytest.raises(ManifestError, match='"queries"'):
            load_manifest(p)


class TestFormat:
    def test_table_contents_and_alignment(self) -> None:
        overall, fam, kind = evaluate_with_breakdowns(FAM_PREDS, FAM_GT, MANIFEST)
        text = format_metrics_table(overall, fam, by_kind=kind, flagged={"hard_negative_holistic": 0.0})
        assert "micro-AP" in text and "0.7500" in text and "recall@P90" in text
        fam_block = text.split("\n\n")[1].splitlines()
        assert fam_block[0].startswith("family") and fam_block[2].startswith("crop")
        # right-aligned columns: every row of the block ends its µAP column at the same offset
        end = fam_block[0].index("µAP") + len("µAP")
        assert all(line[end - 6:end] in ("1.0000", "   µAP") for line in fam_block if not line.startswith("-"))
        assert "n/a" in text  # the negative kind has no AP
        assert "flagged@P90" in text

    def test_unknown_query_warning(self) -> None:
        m = evaluate([P("zz", "r", 1.0)], [G("q1", "r1")])
        assert "not in the ground truth" in format_metrics_table(m)
        assert isinstance(m, Metrics)


def test_precision_and_recall_at_a_threshold() -> None:
    from matcher.isc.metrics import at_threshold

    gt = [GroundTruthMatch("q1", "r1"), GroundTruthMatch("q2", "r2"), GroundTruthMatch("q3", "")]
    preds = [PredictedMatch("q1", "r1", 0.9), PredictedMatch("q2", "r9", 0.7), PredictedMatch("q2", "r2", 0.4),
             PredictedMatch("q3", "r1", 0.6)]
    p, r, n = at_threshold(preds, gt, 0.5)
    assert (p, r, n) == (1 / 3, 0.5, 3)
    p, r, n = at_threshold(preds, gt, 0.95)
    assert math.isnan(p) and r == 0.0 and n == 0
