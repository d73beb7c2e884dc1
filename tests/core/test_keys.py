"""key_prefix: the name that groups tasks for duration estimates."""

from hypothesis import given
from hypothesis import strategies as st

from teamster.core.keys import _split_str, key_prefix

WORDS = st.sampled_from(["inc", "sum", "read", "parquet", "x", "", "0", "17", "deadbeef",
                         "9f8e7d6c5b4a3928", "abc", "beefcafe1", "a1"])


@given(st.lists(WORDS, min_size=1, max_size=5))
def test_fast_path_names_string_keys_like_the_word_by_word_split(words: list[str]) -> None:
    key = "-".join(words)
    assert key_prefix(key) == _split_str(key)


def test_examples() -> None:
    assert key_prefix("inc-9f8e7d6c5b4a39281706") == "inc"
    assert key_prefix("read-parquet-17") == "read-parquet"
    assert key_prefix("x-1-2") == "x"
    assert key_prefix("1-2") == "1-2"  # nothing but tokens: the key itself
    assert key_prefix(("sum-deadbeef00", 3, 4)) == "sum"
    assert key_prefix(b"load-12") == "load"
    assert key_prefix(42) == "int"
