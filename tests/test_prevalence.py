"""The corrected mask fraction: Rogan–Gladen estimate and Lang–Reiczigel interval, against a worked example."""

from __future__ import annotations

import math

import pytest

from pipeline.prevalence import ClassifierValidation, lang_reiczigel, rogan_gladen
from pipeline.stats import CameraWindows
from pipeline.voting import TrackLedger


def test_worked_example_by_hand():
    # 30 of 100 decided people wear a mask; the classifier called 45 of 50 masked faces "mask" (Se 0.9) and 90 of
    # 100 unmasked faces "no mask" (Sp 0.9).
    # Rogan-Gladen: (0.30 + 0.90 - 1) / (0.90 + 0.90 - 1) = 0.20 / 0.80 = 0.25.
    # Lang-Reiczigel 95% (z = 1.959964, z^2 = 3.841459):
    #   apparent' = (30 + z^2/2) / (100 + z^2) = 31.920729 / 103.841459 = 0.307399
    #   Se' = (45 + 1) / (50 + 2) = 0.884615, Sp' = (90 + 1) / (100 + 2) = 0.892157, Youden' = 0.776772
    #   p' = (0.307399 + 0.892157 - 1) / 0.776772 = 0.256904
    #   SE = sqrt(0.307399 * 0.692601 / 103.841459 + 0.884615 * 0.115385 / 52 * p'^2
    #             + 0.892157 * 0.107843 / 102 * (1 - p')^2) / 0.776772
    #      = sqrt(0.00205030 + 0.00012955 + 0.00052081) / 0.776772 = 0.066903
    #   shift = 2 z^2 (p' * 0.00196286 - (1 - p') * 0.00094327) = 7.682918 * (0.00050427 - 0.00070094) = -0.001511
    #   interval = p' + shift -/+ z * SE = 0.255393 -/+ 0.131128 = [0.124265, 0.386520]
    est, low, high = lang_reiczigel(30, 100, ClassifierValidation(45, 50, 90, 100))
    assert est == pytest.approx(0.25)
    assert low == pytest.approx(0.124265, abs=2e-6)
    assert high == pytest.approx(0.386520, abs=2e-6)


def test_rogan_gladen_inverts_the_classifier_bias_and_clips():
    se, sp, p = 0.95, 0.8, 0.6
    apparent = se * p + (1 - sp) * (1 - p)
    assert rogan_gladen(apparent, se, sp) == pytest.approx(p)
    assert rogan_gladen(0.05, se, sp) == 0.0  # fewer positives than the false-positive rate alone would give
    assert rogan_gladen(1.0, se, sp) == 1.0
    with pytest.raises(ValueError, match="exceed 1"):
        rogan_gladen(0.5, 0.5, 0.5)


def test_interval_widens_with_a_smaller_validation_set():
    big = lang_reiczigel(60, 100, ClassifierValidation(900, 1000, 800, 1000))
    small = lang_reiczigel(60, 100, ClassifierValidation(9, 10, 8, 10))
    assert big[0] == pytest.approx(small[0])
    assert (small[2] - small[1]) > 1.5 * (big[2] - big[1])
    assert small[1] <= small[0] <= small[2]
    assert big[1] <= big[0] <= big[2]
    assert lang_reiczigel(0, 0, ClassifierValidation(9, 10, 8, 10)) is None


def test_perfect_classifier_with_a_huge_validation_set_gives_a_plain_binomial_interval():
    est, low, high = lang_reiczigel(40, 100, ClassifierValidation(10**9, 10**9, 10**9, 10**9))
    assert est == pytest.approx(0.4)
    # Agresti-Coull centre (40 + z^2/2) / (100 + z^2) and its Wald half-width.
    z2 = 1.959963984540054**2
    c = (40 + z2 / 2) / (100 + z2)
    half = 1.959963984540054 * math.sqrt(c * (1 - c) / (100 + z2))
    assert (low, high) == pytest.approx((c - half, c + half), abs=1e-6)


@pytest.mark.parametrize(
    ("se", "sp", "match"),
    [("308/314", "50", "correct/n"), ("315/314", "50/53", "0 <= correct <= n"), ("1/2", "1/2", "chance"),
     ("0/0", "1/1", "n > 0")],
)
def test_bad_validation_counts_are_named(se, sp, match):
    with pytest.raises(ValueError, match=match):
        ClassifierValidation.parse(se, sp)


def test_camera_statistics_carry_the_corrected_fraction():
    validation = ClassifierValidation.parse("45/50", "90/100")
    ledger, w = TrackLedger("cam"), CameraWindows("cam", 60, validation)
    t = 1_700_000_000 * 10**9
    for tid in range(1, 101):
        for f in range(ledger.rules.min_frames_tracked):
            ledger.observe([tid], f + 10 * tid, t)
        ledger.add_scores([tid] * 3, [0.9 if tid <= 30 else 0.1] * 3)
        w.add(ledger.end({tid}), t)
    s = w.close(t)
    assert (s.masked, s.unmasked, s.mask_fraction) == (30, 70, 0.3)
    assert s.corrected_mask_fraction == pytest.approx(0.25)
    assert (s.corrected_mask_fraction_low, s.corrected_mask_fraction_high) == pytest.approx((0.124265, 0.38652),
                                                                                              abs=2e-6)
    assert s.total_corrected_mask_fraction == s.corrected_mask_fraction
    assert (s.classifier_sensitivity, s.classifier_specificity) == ("45/50", "90/100")
    plain = CameraWindows("cam", 60).close(t)
    assert plain.corrected_mask_fraction is None
    assert plain.classifier_sensitivity is None
