"""Keys: the prefix that groups tasks for duration estimates, and how keys are stored."""

from hypothesis import given
from hypothesis import strategies as st

from teamster.core.keys import _split_str, key_prefix

from .builders import A, compute, finished, graph, in_memory, register_worker, scheduler, spec

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



def test_a_layers_keys_share_one_name_and_equal_fresh_keys_still_find_them() -> None:
    def decoded(i: int) -> tuple[str, int]:  # a name of its own, as each decoded key has
        return ("".join(["x-", "9f8e7d6c5b4a"]), i)

    keys = [decoded(i) for i in range(3)] + [("".join(["y-", "00aa11bb22cc"]), 0, 1)]
    assert keys[0][0] is not keys[1][0]
    s = scheduler(register_worker(A, nthreads=4))
    assert s.handle(graph("c", *(spec(k) for k in keys), sid="g")) == [
        compute(A, k, (0, 1, 0), "g") for k in keys]
    stored = list(s.tasks)
    assert stored == keys
    assert stored[0][0] is stored[1][0] is stored[2][0] is not stored[3][0]
    assert {ts.prefix.name for ts in s.tasks.values()} == {"x", "y"}
    assert s.handle(finished(s, A, decoded(1), sid="f")) == [in_memory("c", decoded(1), (A,), "f")]
