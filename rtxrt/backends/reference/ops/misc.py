"""GridSample, AffineGrid, RoiAlign, NonMaxSuppression, TfIdfVectorizer and SwiGLU."""
from __future__ import annotations

import itertools

import numpy as np

from ....ir.activations import SWISH
from ..activation_numpy import evaluate
from ..kernel import OpRun

_CUBIC_A = -0.75  # Keys' cubic convolution parameter, as in PyTorch and ONNX Runtime


class SwiGLU(OpRun):
    def run(self, a, b):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"A and B must have one shape and dtype (no broadcasting), got {a.shape} {a.dtype} "
                             f"and {b.shape} {b.dtype}")
        return (evaluate(SWISH, a, {"alpha": self.attr("alpha", 1.0)}) * b).astype(a.dtype)  # Swish(A) * B


# --- GridSample -------------------------------------------------------------------------

def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold coordinates outside [lo, hi] back in, mirroring at the borders."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    below, above = x < lo, x > hi
    dist = np.where(below, lo - x, x - hi)
    flips = np.floor(dist / span)
    rest = dist - flips * span
    even = flips % 2 == 0
    return np.where(below, np.where(even, lo + rest, hi - rest), np.where(above, np.where(even, hi - rest, lo + rest), x))


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    """Weights of the taps at offsets -1, 0, 1, 2 for a fractional position t in [0, 1)."""
    a = _CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


class GridSample(OpRun):
    """Samples X [N, C, *spatial] at the normalized positions of grid [N, *out, ndim]; the last
    grid component indexes the first spatial axis (x, y, z order)."""

    def run(self, x, grid):
        mode = self.attr("mode", "linear")
        mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)  # the names before opset 20
        padding = self.attr("padding_mode", "zeros")
        if mode not in ("nearest", "linear", "cubic") or padding not in ("zeros", "border", "reflection"):
            raise ValueError(f"unsupported mode {mode!r} or padding_mode {padding!r}")
        align = bool(self.attr("align_corners", 0))
        dims = x.shape[2:]
        taps_per_axis = []
        for axis, size in enumerate(dims):
            coord = grid[..., len(dims) - 1 - axis].astype(np.float64)
            coord = (coord + 1) / 2 * (size - 1) if align else ((coord + 1) * size - 1) / 2
            if mode == "nearest":
                coord = np.rint(coord)
            lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
            if mode != "cubic":  # like PyTorch, cubic pads each of its taps, the others the position too
                if padding == "border":
                    coord = np.where((coord < lo) | (coord > hi), np.clip(coord, 0, size - 1), coord)
                elif padding == "reflection":
                    coord = _reflect(coord, lo, hi)
            taps_per_axis.append([self._fetch(i, w, size, padding, lo, hi) for i, w in self._taps(coord, mode)])
        moved = np.moveaxis(x, 1, -1)  # [N, *spatial, C]
        batch = np.arange(x.shape[0]).reshape(-1, *([1] * (grid.ndim - 2)))
        out = np.zeros((*grid.shape[:-1], x.shape[1]), np.float64)
        for combo in itertools.product(*taps_per_axis):
            weight = np.prod([w for _, w in combo], axis=0)
            out += weight[..., None] * moved[(batch, *(i for i, _ in combo))]
        return np.moveaxis(out, -1, 1).astype(x.dtype)

    @staticmethod
    def _taps(coord: np.ndarray, mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(integer position, weight) pairs that interpolate at ``coord`` along one axis."""
        if mode == "nearest":
            return [(coord.astype(np.int64), np.ones_like(coord))]
        base = np.floor(coord)
        t = coord - base
        base = base.astype(np.int64)
        if mode == "linear":
            return [(base, 1 - t), (base + 1, t)]
        return [(base + offset, w) for offset, w in zip((-1, 0, 1, 2), _cubic_weights(t))]

    @staticmethod
    def _fetch(index: np.ndarray, weight: np.ndarray, size: int, padding: str, lo: float, hi: float):
        """Map a tap outside the input by the padding mode; zeros padding drops its weight."""
        if padding == "zeros":
            inside = (index >= 0) & (index < size)
            return np.clip(index, 0, size - 1), weight * inside
        if padding == "border":
            return np.clip(index, 0, size - 1), weight
        return _reflect(index.astype(np.float64), lo, hi).astype(np.int64), weight


class AffineGrid(OpRun):
    """grid[n, *pos] = theta[n] @ (x, y[, z], 1) over a normalized [-1, 1] base grid of ``size``."""

    def run(self, theta, size):
        n, _, *spatial = (int(v) for v in size)
        align = self.attr("align_corners", 0)
        axes = [np.linspace(-1, 1, d) if align else (2 * np.arange(d) + 1) / d - 1 for d in spatial]
        mesh = np.meshgrid(*axes, indexing="ij")
        base = np.stack([*mesh[::-1], np.ones(spatial)], axis=-1).reshape(-1, len(spatial) + 1)
        grid = base @ theta.astype(np.float64).transpose(0, 2, 1)  # [N, points, ndim]
        return grid.reshape(n, *spatial, len(spatial)).astype(theta.dtype)


# --- RoiAlign ---------------------------------------------------------------------------

def _roi_axis(start: float, length: float, pooled: int, samples: int, extent: int):
    """Bilinear taps along one axis for every output cell and sample point:
    (low index, high index, low weight, high weight), each [pooled, samples]."""
    bin_size = length / pooled
    pos = start + np.arange(pooled)[:, None] * bin_size + (np.arange(samples) + 0.5) * bin_size / samples
    valid = (pos >= -1.0) & (pos <= extent)
    pos = np.maximum(pos, 0)
    low = pos.astype(np.int64)
    at_end = low >= extent - 1
    low = np.where(at_end, extent - 1, low)
    high = np.where(at_end, extent - 1, low + 1)
    frac = np.where(at_end, 0.0, pos - low)
    return low, high, (1 - frac) * valid, frac * valid


class RoiAlign(OpRun):
    def run(self, x, rois, batch_indices):
        default_mode = "half_pixel" if self.opset >= 16 else "output_half_pixel"
        half_pixel = self.attr("coordinate_transformation_mode", default_mode) == "half_pixel"
        pooled_h, pooled_w = self.attr("output_height", 1), self.attr("output_width", 1)
        ratio, scale = self.attr("sampling_ratio", 0), self.attr("spatial_scale", 1.0)
        use_max = self.attr("mode", "avg") == "max"
        _, channels, height, width = x.shape
        out = np.zeros((len(rois), channels, pooled_h, pooled_w), np.float64)
        for n, (roi, b) in enumerate(zip(rois.astype(np.float64), batch_indices)):
            x0, y0, x1, y1 = roi * scale - (0.5 if half_pixel else 0.0)
            roi_w, roi_h = x1 - x0, y1 - y0
            if not half_pixel:  # malformed boxes become 1x1
                roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
            grid_h = ratio if ratio > 0 else max(int(np.ceil(roi_h / pooled_h)), 0)
            grid_w = ratio if ratio > 0 else max(int(np.ceil(roi_w / pooled_w)), 0)
            if grid_h * grid_w == 0:
                continue
            ys, xs = _roi_axis(y0, roi_h, pooled_h, grid_h, height), _roi_axis(x0, roi_w, pooled_w, grid_w, width)
            image = x[int(b)].astype(np.float64)
            out[n] = self._pool_max(image, ys, xs) if use_max else self._pool_avg(image, ys, xs, grid_h * grid_w)
        return out.astype(x.dtype)

    @staticmethod
    def _pool_avg(image, ys, xs, count):
        """Bilinear sampling is separable, so the average is (rows @ image @ cols^T) / count."""
        def axis_matrix(taps, extent):
            low, high, w_low, w_high = taps
            matrix = np.zeros((low.shape[0], extent))
            rows = np.arange(low.shape[0])[:, None]
            np.add.at(matrix, (rows, low), w_low)
            np.add.at(matrix, (rows, high), w_high)
            return matrix

        rows, cols = axis_matrix(ys, image.shape[1]), axis_matrix(xs, image.shape[2])
        return np.einsum("ph,chw,qw->cpq", rows, image, cols) / count

    @staticmethod
    def _pool_max(image, ys, xs):
        """ONNX Runtime's max mode: the largest weighted corner value over all sample points."""
        y_idx, y_w = np.stack(ys[:2], -1), np.stack(ys[2:], -1)  # [pooled_h, grid_h, 2]
        x_idx, x_w = np.stack(xs[:2], -1), np.stack(xs[2:], -1)
        values = image[:, y_idx[:, :, :, None, None, None], x_idx[None, None, None]]
        weighted = values * (y_w[:, :, :, None, None, None] * x_w[None, None, None])
        return weighted.max(axis=(2, 3, 5, 6))


# --- NonMaxSuppression ------------------------------------------------------------------

def _suppression_matrix(boxes: np.ndarray, center_point_box: int, threshold: np.floating) -> np.ndarray:
    """[i, j]: box i and box j overlap with IoU above the threshold (in the boxes' precision)."""
    if center_point_box:
        half = boxes[:, 2:] / 2
        x_min, x_max = boxes[:, 0] - half[:, 0], boxes[:, 0] + half[:, 0]
        y_min, y_max = boxes[:, 1] - half[:, 1], boxes[:, 1] + half[:, 1]
    else:  # corners [y1, x1, y2, x2], in either order
        y_min, y_max = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
        x_min, x_max = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    inter_w = np.minimum(x_max[:, None], x_max) - np.maximum(x_min[:, None], x_min)
    inter_h = np.minimum(y_max[:, None], y_max) - np.maximum(y_min[:, None], y_min)
    inter = inter_w * inter_h
    area = (x_max - x_min) * (y_max - y_min)
    union = area[:, None] + area - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    overlaps = (inter_w > 0) & (inter_h > 0) & (area[:, None] > 0) & (area > 0) & (union > 0)
    return overlaps & (iou > threshold)


def _scalar(value: np.ndarray | None, default):
    return default if value is None or value.size == 0 else value.reshape(-1)[0]


class NonMaxSuppression(OpRun):
    def run(self, boxes, scores, max_output_boxes_per_class=None, iou_threshold=None, score_threshold=None):
        limit = max(int(_scalar(max_output_boxes_per_class, 0)), 0)
        iou_limit = np.asarray(_scalar(iou_threshold, 0.0), boxes.dtype)
        min_score = _scalar(score_threshold, None)
        center = self.attr("center_point_box", 0)
        selected = []
        for b in range(boxes.shape[0] if limit else 0):
            suppresses = _suppression_matrix(boxes[b], center, iou_limit)
            for c, class_scores in enumerate(scores[b]):
                candidates = np.arange(len(class_scores))
                if min_score is not None:
                    candidates = candidates[class_scores > min_score]
                order = candidates[np.lexsort((candidates, -class_scores[candidates]))]  # best first, ties by index
                alive = np.ones(len(order), bool)
                kept = 0
                for i, box in enumerate(order):
                    if kept == limit:
                        break
                    if alive[i]:
                        selected.append((b, c, box))
                        kept += 1
                        alive[i + 1:] &= ~suppresses[box, order[i + 1:]]
        return np.array(selected, np.int64).reshape(-1, 3)


# --- TfIdfVectorizer --------------------------------------------------------------------

class TfIdfVectorizer(OpRun):
    """Counts the pool's n-grams in each row (n-gram items may be up to max_skip_count apart),
    then weighs the counts by mode. Only integer pools are supported."""

    def run(self, x):
        pool = self.attr("pool_int64s")
        if pool is None:
            raise NotImplementedError("TfIdfVectorizer with a string pool is not supported")
        if x.ndim not in (1, 2):
            raise ValueError(f"input must be [C] or [N, C], got shape {x.shape}")
        indexes = np.asarray(self.attr("ngram_indexes"), np.int64)
        rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
        counts = np.zeros((rows.shape[0], int(indexes.max()) + 1 if indexes.size else 0), np.float32)
        for n, grams, columns in self._pool_by_size(np.asarray(pool, np.int64), indexes):
            skips = [1] if n == 1 else range(1, self.attr("max_skip_count", 0) + 2)
            for skip in skips:
                span = skip * (n - 1)
                if span >= rows.shape[1]:
                    break
                starts = np.arange(rows.shape[1] - span)
                windows = rows[:, starts[:, None] + skip * np.arange(n)]  # [rows, starts, n]
                column = self._lookup(grams, columns, windows.reshape(-1, n)).reshape(windows.shape[:2])
                row, hit = np.nonzero(column >= 0)
                np.add.at(counts, (row, column[row, hit]), 1)
        return self._weigh(counts, indexes).reshape(*x.shape[:-1], -1)

    def _pool_by_size(self, pool: np.ndarray, indexes: np.ndarray):
        """(n, n-grams [m, n], their output columns [m]) for each n in [min, max] gram length."""
        offsets = list(self.attr("ngram_counts")) + [len(pool)]
        first = 0  # index of the first n-gram of this size among all the pool's n-grams
        for n, (begin, end) in enumerate(zip(offsets, offsets[1:]), start=1):
            grams = pool[begin:end].reshape(-1, n)
            if self.attr("min_gram_length") <= n <= self.attr("max_gram_length") and len(grams):
                yield n, grams, indexes[first : first + len(grams)]
            first += len(grams)

    @staticmethod
    def _lookup(grams: np.ndarray, columns: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Output column of each window's n-gram, -1 where the pool lacks it."""
        _, ids = np.unique(np.concatenate([grams, windows]), axis=0, return_inverse=True)
        ids = ids.reshape(-1)
        table = np.full(ids.max() + 1, -1, np.int64)
        table[ids[: len(grams)]] = columns
        return table[ids[len(grams):]]

    def _weigh(self, counts: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        mode = self.attr("mode")
        if mode == "TF":
            return counts
        if mode == "IDF":
            counts = (counts > 0).astype(np.float32)
        elif mode != "TFIDF":
            raise ValueError(f"mode must be TF, IDF or TFIDF, got {mode!r}")
        weights = self.attr("weights")
        if not weights:
            return counts
        # weights[i] belongs to the pool's i-th n-gram, whose counts land in column indexes[i]
        by_column = np.zeros(counts.shape[1], np.float32)
        by_column[indexes] = weights
        return counts * by_column
