import pytest

from cellstudy.parallel import map_with_progress


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("item 3 is bad")
    return x


@pytest.mark.parametrize("n_workers", [1, 2])
def test_results_in_input_order(n_workers):
    items = list(range(23))
    assert map_with_progress(square, items, n_workers, "squares", progress=False) == [x * x for x in items]


@pytest.mark.parametrize("n_workers", [1, 2])
def test_worker_error_reaches_the_caller(n_workers):
    with pytest.raises(ValueError, match="item 3"):
        map_with_progress(fail_on_three, list(range(6)), n_workers, "items", progress=False)
