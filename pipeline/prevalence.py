"""The mask fraction corrected for the classifier's errors, with an interval that carries their uncertainty.

The raw fraction counts people *decided* mask; a classifier with sensitivity Se (masked people decided mask) and
specificity Sp (unmasked people decided no mask) biases it: apparent = Se * p + (1 - Sp) * (1 - p). The
Rogan–Gladen estimator inverts that (W. J. Rogan, B. Gladen, "Estimating prevalence from the results of a screening
test", Am. J. Epidemiol. 107(1):71-76, 1978):

    p_RG = (apparent + Sp - 1) / (Se + Sp - 1), clipped to [0, 1].

Se and Sp are themselves estimated on a finite validation set (the model card's held-out faces), so the interval
must widen with their sampling error too. :func:`lang_reiczigel` implements the adjusted Wald interval of
Zs. Lang and J. Reiczigel, "Confidence limits for prevalence of disease adjusted for estimated sensitivity and
specificity", Preventive Veterinary Medicine 113:13-22, 2014: z²/2 successes and failures added to the prevalence
sample (Agresti–Coull), 1 each to the sensitivity and specificity samples, the delta-method standard error of the
Rogan–Gladen estimate from the three independent binomials, and a shift of the centre that corrects the skewness.
The paper's simulations show near-nominal coverage from ~30 people.

Caveat for maskwatch: Se and Sp are measured per face crop; a person's decision is a vote over many crops, which is
usually more accurate, so the correction is conservative when the crop-level errors are independent between frames.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

Z_95 = 1.959963984540054  # two-sided 95% normal quantile

_COUNT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class ClassifierValidation:
    """How the classifier did on labelled faces it was not trained on (the model card's held-out set).

    Attributes:
        mask_correct: Faces with a mask that it called mask (true positives).
        mask_n: Faces with a mask.
        no_mask_correct: Faces without a mask (or worn incorrectly) that it called no mask (true negatives).
        no_mask_n: Faces without a mask.
        source: Where the counts come from and what they were measured on (per face or per person), for the
            statistics record; None when unknown.

    Raises:
        ValueError: If a count is negative, a ``*_correct`` exceeds its ``*_n``, a set is empty, or
            Se + Sp <= 1 (a classifier no better than chance cannot be corrected for).
    """

    mask_correct: int
    mask_n: int
    no_mask_correct: int
    no_mask_n: int
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name, k, n in (("sensitivity", self.mask_correct, self.mask_n),
                           ("specificity", self.no_mask_correct, self.no_mask_n)):
            if n <= 0 or not 0 <= k <= n:
                msg = f"classifier {name} counts must be 0 <= correct <= n with n > 0, got {k}/{n}"
                raise ValueError(msg)
        if self.sensitivity + self.specificity <= 1:
            msg = (f"classifier sensitivity {self.sensitivity:.3f} + specificity {self.specificity:.3f} <= 1: "
                   "no better than chance, nothing to correct with")
            raise ValueError(msg)

    @property
    def sensitivity(self) -> float:
        """Se = mask_correct / mask_n."""
        return self.mask_correct / self.mask_n

    @property
    def specificity(self) -> float:
        """Sp = no_mask_correct / no_mask_n."""
        return self.no_mask_correct / self.no_mask_n

    @classmethod
    def parse(cls, sensitivity: str, specificity: str, source: str | None = None) -> ClassifierValidation:
        """From ``"correct/n"`` strings, e.g. ``parse("308/314", "50/53")``; ``source`` as the attribute.

        Raises:
            ValueError: Naming the string, if one is not ``"<int>/<int>"`` (or the counts are invalid, see above).
        """
        parts = []
        for name, text in (("sensitivity", sensitivity), ("specificity", specificity)):
            m = _COUNT.match(str(text))
            if m is None:
                msg = f"classifier {name} must be 'correct/n' (e.g. '308/314'), got {text!r}"
                raise ValueError(msg)
            parts += [int(m.group(1)), int(m.group(2))]
        return cls(parts[0], parts[1], parts[2], parts[3], source)

    def counts(self) -> tuple[str, str]:
        """``("correct/n", "correct/n")`` for sensitivity and specificity (the :meth:`parse` format)."""
        return f"{self.mask_correct}/{self.mask_n}", f"{self.no_mask_correct}/{self.no_mask_n}"


def rogan_gladen(apparent: float, sensitivity: float, specificity: float) -> float:
    """Rogan–Gladen estimate of the true fraction from the apparent one (Rogan & Gladen 1978), clipped to [0, 1].

    Raises:
        ValueError: If ``sensitivity + specificity <= 1``.

    Examples:
        >>> round(rogan_gladen(0.3, 0.9, 0.9), 6)  # (0.3 + 0.9 - 1) / (0.9 + 0.9 - 1)
        0.25
    """
    youden = sensitivity + specificity - 1
    if youden <= 0:
        msg = f"sensitivity + specificity must exceed 1, got {sensitivity} + {specificity}"
        raise ValueError(msg)
    return min(1.0, max(0.0, (apparent + specificity - 1) / youden))


def lang_reiczigel(
    positives: int, n: int, validation: ClassifierValidation, z: float = Z_95
) -> tuple[float, float, float] | None:
    """Rogan–Gladen estimate with the Lang–Reiczigel (2014) adjusted confidence interval.

    Args:
        positives: People decided mask.
        n: People decided (mask + no mask).
        validation: The classifier's validation counts (sensitivity and specificity samples).
        z: Normal quantile of the two-sided level (1.96 for 95%).

    Returns:
        `(estimate, low, high)` in [0, 1], or None when ``n == 0``.

    Raises:
        ValueError: If ``positives`` is outside ``[0, n]``.
    """
    if not 0 <= positives <= n:
        msg = f"positives must be in [0, n={n}], got {positives}"
        raise ValueError(msg)
    if n == 0:
        return None
    v = validation
    estimate = rogan_gladen(positives / n, v.sensitivity, v.specificity)
    z2 = z * z
    # Adjusted proportions: Agresti–Coull for the prevalence sample, "add 1 success and 1 failure" for Se and Sp.
    n_ap, n_se, n_sp = n + z2, v.mask_n + 2, v.no_mask_n + 2
    ap = (positives + z2 / 2) / n_ap
    se = (v.mask_correct + 1) / n_se
    sp = (v.no_mask_correct + 1) / n_sp
    youden = se + sp - 1
    p = (ap + sp - 1) / youden
    var_se, var_sp = se * (1 - se) / n_se, sp * (1 - sp) / n_sp
    std_err = math.sqrt(ap * (1 - ap) / n_ap + var_se * p * p + var_sp * (1 - p) ** 2) / abs(youden)
    shift = 2 * z2 * (p * var_se - (1 - p) * var_sp)
    low = min(1.0, max(0.0, p + shift - z * std_err))
    high = min(1.0, max(0.0, p + shift + z * std_err))
    return estimate, low, high
