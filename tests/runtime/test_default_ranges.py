"""A model without a profile gets default ranges for its symbolic dims: each over
[1, max(its first size, 2048)], except that an input's largest shape is capped at
DEFAULT_MAX_ELEMENTS elements (an image's batch, height and width cannot all be 2048): the
largest upper bounds are halved, never below the sizes first seen."""
from __future__ import annotations

import math
from types import SimpleNamespace

from rtxrt.runtime.session import DEFAULT_MAX_ELEMENTS, IOInfo, Session


def ranges(declared: dict[str, tuple], shapes: dict[str, tuple[int, ...]]):
    inputs = SimpleNamespace(inputs=[IOInfo(n, "float32", s) for n, s in declared.items()])
    return Session._default_ranges(inputs, shapes)


def test_text_dims_range_up_to_2048():
    got = ranges({"ids": ("batch", "seq")}, {"ids": (2, 16)})
    assert got == {"ids": ((1, 1), (2, 16), (2048, 2048))}


def test_an_image_s_largest_default_shape_is_capped_in_elements():
    low, opt, high = ranges({"x": ("n", 3, "h", "w")}, {"x": (1, 3, 64, 64)})["x"]
    assert low == (1, 3, 1, 1) and opt == (1, 3, 64, 64)
    assert math.prod(high) <= DEFAULT_MAX_ELEMENTS and high[1] == 3
    assert all(h >= 256 for h in high[::2]) and high[2] == high[3]  # halved evenly, not one dim to its floor


def test_the_sizes_seen_first_are_always_in_range():
    low, opt, high = ranges({"x": ("n", 3, "h", "w")}, {"x": (64, 3, 4096, 4096)})["x"]
    assert all(o <= h for o, h in zip(opt, high))
    assert high == (64, 3, 4096, 4096)  # already past the cap: nothing larger
