"""Losses: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss."""
from __future__ import annotations

import numpy as np

from ..kernel import OpRun
from .reduce import widened
from .softmax import log_softmax


def nll_loss(
    log_prob: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    reduction: str,
    ignore_index: int | None,
) -> np.ndarray:
    """log_prob (N, C, d1..dk), target (N, d1..dk) → loss (N, d1..dk), or its weighted sum or
    mean. Targets equal to ``ignore_index`` contribute nothing, to the loss or to the mean's
    denominator."""
    classes = log_prob.shape[1]
    ignored = target == ignore_index if ignore_index is not None else np.zeros(target.shape, bool)
    bad = ~ignored & ((target < 0) | (target >= classes))
    if bad.any():
        raise ValueError(f"target {target[bad].flat[0]} is outside the {classes} classes")
    safe = np.where(ignored, 0, target).astype(np.int64)
    picked = np.take_along_axis(log_prob, safe[:, None], axis=1)[:, 0]
    w = np.ones_like(picked) if weight is None else weight[safe]
    w = np.where(ignored, 0, w).astype(picked.dtype)
    loss = -picked * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.sum(loss)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):  # every target ignored: 0 / 0
            return np.sum(loss) / np.sum(w)
    raise ValueError(f"unknown reduction {reduction!r}")


class NegativeLogLikelihoodLoss(OpRun):
    def run(self, x: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        loss = nll_loss(
            widened(x), target, None if weight is None else widened(weight),
            self.attr("reduction", "mean"), self.attr("ignore_index"),
        )
        return np.asarray(loss).astype(x.dtype, copy=False)


class SoftmaxCrossEntropyLoss(OpRun):
    """NegativeLogLikelihoodLoss of LogSoftmax(scores) over the class axis 1; the second,
    optional output is those log-probabilities."""

    def run(
        self, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        log_prob = log_softmax(widened(scores), axis=1)
        loss = nll_loss(
            log_prob, labels, None if weights is None else widened(weights),
            self.attr("reduction", "mean"), self.attr("ignore_index"),
        )
        return np.asarray(loss).astype(scores.dtype, copy=False), log_prob.astype(scores.dtype, copy=False)
