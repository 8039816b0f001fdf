"""Is a message there? A p-value and a decision at a stated false-positive rate, from matching bits alone.

With an n-bit message and k recovered bits equal to it, an unwatermarked image or video reads each bit as a
fair coin, so the chance of k or more matches by luck is

    pvalue(k, n) = P(Binomial(n, 1/2) >= k) = sum_{i=k..n} C(n, i) / 2**n

which is videoseal's `evals/metrics.pvalue` (scipy `binomtest(k, n, 0.5, alternative='greater')`, i.e. ">= k").
videoseal rounds k from a float bit accuracy (`int(acc * n)`, which can land one low); we count k exactly.
The sum is done in integers (math.comb), so it is exact for any n, no scipy.

Deciding "watermarked" at a false-positive rate `fpr` means pvalue(k, n) <= fpr, i.e. k >= the smallest k*
with pvalue(k*, n) <= fpr. A message of n bits can never be more certain than pvalue(n, n) = 2**-n: a 16-bit
card cannot reach 1e-6 (its best is 1.5e-5), and `decide` says so instead of pretending.

When the bits are the best of several readings (`hypotheses`: a crop re-synchronised over extents and phases,
`resync.py`), the p-value is multiplied by their number, capped at 1. This is Bonferroni's bound: if each reading
alone matches by luck with the binomial probability, the chance that any of them does is at most that many times
it. It is conservative: the choice never looks at the message, so for a message drawn at random the plain p-value
would already hold.

A video whose tile is tracked (`video.TileTracker`: each frame read at the most confident of 9 shifts, then
averaged over frames) keeps the plain p-value. Bonferroni over 9 choices per frame would be 9**frames and say
nothing, while the argument above holds as it stands: the choice is made by confidence, before any message is
seen. Measured on nine unmarked 720p pans (`scripts/video_tracking.py`), read tracked, the bits matched 50 random
messages in 7.7-8.4 of 16 on average per clip (at most 13), as read as is (7.6-8.1, at most 13).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

DEFAULT_FPR = 1e-6


def pvalue(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) >= k), exact: 1.0 for k <= 0, 2**-n for k == n, 0.0 for k > n."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def min_matching_bits(n: int, fpr: float) -> int | None:
    """The smallest k with pvalue(k, n) <= fpr, or None when even k = n is not enough (2**-n > fpr)."""
    if not 0 < fpr <= 1:
        raise ValueError(f"false-positive rate must be in (0, 1], got {fpr}")
    tail = 0
    for k in range(n, -1, -1):  # grow the upper tail from k = n down while it stays under fpr
        tail += math.comb(n, k)
        if tail / 2**n > fpr:
            return k + 1 if k < n else None
    return 0


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The decision for one read-out: `watermarked` is True only when pvalue <= fpr."""

    matching_bits: int
    nbits: int
    pvalue: float
    fpr: float
    threshold_bits: int | None  # matches needed for pvalue <= fpr; None when the card cannot reach fpr
    best_fpr: float  # 2**-nbits: the lowest false-positive rate n bits can ever give

    @property
    def reachable(self) -> bool:
        return self.threshold_bits is not None

    @property
    def watermarked(self) -> bool:
        return self.reachable and self.pvalue <= self.fpr

    def sentence(self) -> str:
        """One line a user reads: the decision and why."""
        if not self.reachable:
            return (
                f"undecided at FPR {self.fpr:.0e}: a {self.nbits}-bit message reaches at best "
                f"FPR {self.best_fpr:.2g} "
                f"(all bits matching); choose --fpr {self.best_fpr:.2g} or higher"
            )
        if self.watermarked:
            return (
                f"watermarked (p-value {self.pvalue:.3g} <= FPR {self.fpr:.0e}: "
                f"{self.matching_bits}/{self.nbits} bits match, {self.threshold_bits} needed)"
            )
        return (
            f"not shown to be watermarked (p-value {self.pvalue:.3g} > FPR {self.fpr:.0e}: "
            f"{self.matching_bits}/{self.nbits} bits match, {self.threshold_bits} needed)"
        )

    def to_json(self) -> dict:
        return {
            "matching_bits": self.matching_bits,
            "nbits": self.nbits,
            "pvalue": self.pvalue,
            "fpr": self.fpr,
            "threshold_bits": self.threshold_bits,
            "best_fpr": self.best_fpr,
            # undecidable is not "no": a script keyed on this field must not read a perfect match as unmarked
            "watermarked": self.watermarked if self.reachable else None,
            "verdict": self.sentence(),
        } | ({} if self.reachable else {"reason": f"{self.nbits} bits cannot reach FPR {self.fpr:.0e}"})


def decide(bits: np.ndarray, message: np.ndarray, fpr: float = DEFAULT_FPR, hypotheses: int = 1) -> Verdict:
    """Recovered bits vs the expected message ([nbits] each, any 0/1 or bool dtype) -> Verdict at `fpr`;
    `hypotheses`: how many readings the bits were chosen among (their p-value is multiplied by it)."""
    bits, message = np.asarray(bits).astype(bool).reshape(-1), np.asarray(message).astype(bool).reshape(-1)
    if bits.shape != message.shape:
        raise ValueError(f"{bits.size} recovered bits vs a {message.size}-bit message")
    n = int(bits.size)
    k = int((bits == message).sum())
    if hypotheses < 1:
        raise ValueError(f"hypotheses must be >= 1, got {hypotheses}")
    threshold = min_matching_bits(n, fpr / hypotheses)
    return Verdict(k, n, min(1.0, pvalue(k, n) * hypotheses), fpr, threshold, min(1.0, 2.0**-n * hypotheses))
