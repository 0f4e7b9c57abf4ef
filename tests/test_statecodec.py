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
sums = st.one_of(  # what a sum or mean state holds (no booleans)
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)


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


def _same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN and the type kept (1 is not 1.0, True is not 1)."""
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b
    return type(a) is type(b) and a == b


@given(sums)
def test_one_unpack_reads_a_versioned_number_as_the_piecewise_decoder_does(
    value: int | float,
) -> None:
    data = sc.encode_versioned_number(value)
    piecewise, _ = sc.decode_number(data, sc.check_version(data, "sum"))
    fast = sc.unpack_versioned_number(data)
    # Only big ints take the long way.
    assert fast is not None or not -(2**63) <= value < 2**63
    assert fast is None or _same(fast, piecewise)
    assert sc.unpack_versioned_number(bytes([sc.VERSION + 1]) + data[1:]) is None


@given(counts, sums)
def test_one_unpack_reads_counts_and_welford_states_as_the_piecewise_decoder_does(
    count: int, value: int | float
) -> None:
    data = sc.encode_versioned_count_number(count, value)
    offset = sc.check_version(data, "mean")
    n, offset = sc.decode_u64(data, offset)
    total, _ = sc.decode_number(data, offset)
    fast = sc.unpack_versioned_count_number(data)
    assert fast is None or (fast[0] == n and _same(fast[1], total))
    assert sc.unpack_versioned_u64(sc.encode_versioned_u64(count)) == count
    welford = sc.unpack_versioned_u64_f64_f64(
        sc.encode_versioned_u64_f64_f64(count, float(value), 2.5)
    )
    assert welford is not None
    assert welford[0] == count
    assert _same(welford[1], float(value))
