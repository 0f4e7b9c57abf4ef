"""The one-``pack`` state encodings write exactly the bytes of the piecewise layout, so
state stored by any earlier worker still decodes and a replay stores the same bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamfs import statecodec as sc

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
counts = st.integers(min_value=0, max_value=2**64 - 1)


@given(numbers)
def test_a_versioned_number_is_the_version_then_the_number(value: int | float) -> None:
    assert sc.encode_versioned_number(value) == sc.VERSION_BYTE + sc.encode_number(value)


@given(counts, numbers)
def test_a_count_and_number_is_the_version_count_then_number(
    count: int, value: int | float
) -> None:
    expected = sc.VERSION_BYTE + sc.encode_u64(count) + sc.encode_number(value)
    assert sc.encode_versioned_count_number(count, value) == expected


@given(counts, st.floats(), st.floats())
def test_welford_state_is_the_version_count_then_two_doubles(
    count: int, a: float, b: float
) -> None:
    expected = sc.VERSION_BYTE + sc.encode_u64(count) + sc.encode_f64(a) + sc.encode_f64(b)
    assert sc.encode_versioned_u64_f64_f64(count, a, b) == expected
    assert sc.encode_versioned_u64(count) == sc.VERSION_BYTE + sc.encode_u64(count)
