"""A model without a profile gets default ranges for its symbolic dims: each over
[1, max(its first size, 2048)], except that an input's largest shape is capped at
DEFAULT_MAX_ELEMENTS elements (an image's batch, height and width cannot all be 2048): the
largest upper bounds are halved, never below the sizes first seen. Where the model refuses
the min or max shapes, the bounds narrow until it takes them: lower bounds rise to the powers
of two a U-Net needs, upper bounds halve below a table's length."""
from __future__ import annotations

import math

import pytest

from rtxrt.errors import GraphError
from rtxrt.ir.default_ranges import DEFAULT_MAX_ELEMENTS, default_ranges, fitting_ranges

ranges = default_ranges


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


def refusing(rule):
    """A probe standing in for a model: refuses ranges whose min or max shape breaks ``rule``."""
    probed = []

    def probe(ranges):
        probed.append(ranges)
        for low, _, high in ranges.values():
            for shape in (low, high):
                if not rule(shape):
                    raise GraphError("refused")
        return "dims"

    return probe, probed


def test_ranges_the_model_takes_at_once_are_kept():
    probe, probed = refusing(lambda shape: True)
    got, dims = fitting_ranges({"x": ("n", 3, "h", "w")}, {"x": (1, 3, 64, 64)}, probe)
    assert got == default_ranges({"x": ("n", 3, "h", "w")}, {"x": (1, 3, 64, 64)}) and dims == "dims"
    assert len(probed) == 1


def test_a_unet_gets_lower_bounds_its_pooling_divides():
    """Two 2x poolings and skip concatenations: height and width must be multiples of 4; the
    batch keeps its lower bound of 1."""
    probe, _ = refusing(lambda shape: shape[2] % 4 == 0 and shape[3] % 4 == 0)
    got, _ = fitting_ranges({"x": ("n", 1, "h", "w")}, {"x": (2, 1, 48, 64)}, probe)
    low, opt, high = got["x"]
    assert low == (1, 1, 4, 4) and opt == (2, 1, 48, 64) and high[2] % 4 == 0 and high[3] % 4 == 0


def test_a_position_table_halves_the_upper_limit():
    probe, _ = refusing(lambda shape: shape[1] <= 512)
    got, _ = fitting_ranges({"ids": ("batch", "seq")}, {"ids": (2, 16)}, probe)
    assert got["ids"] == ((1, 1), (2, 16), (512, 512))


def test_no_range_is_found_where_the_model_takes_only_its_first_shape():
    probe, _ = refusing(lambda shape: tuple(shape) == (2, 16))
    assert fitting_ranges({"ids": ("batch", "seq")}, {"ids": (2, 16)}, probe) is None


@pytest.mark.parametrize("size, low", [(24, 8), (40, 8), (64, 8), (8, 8)])
def test_a_lower_bound_is_the_smallest_power_of_two_the_model_takes(size, low):
    probe, _ = refusing(lambda shape: shape[2] % 8 == 0)
    got, _ = fitting_ranges({"x": (1, 1, "h")}, {"x": (1, 1, size)}, probe)
    assert got["x"][0] == (1, 1, low)
