import pytest

from pipeline.backoff import Backoff


def test_waits_double_up_to_the_cap_within_the_jitter_and_reset_starts_over():
    b = Backoff(1.0, 5.0, jitter=0.2)
    waits = [b.next_wait() for _ in range(6)]
    for wait, base in zip(waits, [1, 2, 4, 5, 5, 5], strict=True):
        assert 0.8 * base <= wait <= 1.2 * base, (wait, base)
    b.reset()
    assert 0.8 <= b.next_wait() <= 1.2


def test_cameras_that_fail_together_do_not_retry_in_lockstep():
    waits = {round(Backoff(1.0, 30.0).next_wait(), 6) for _ in range(20)}
    assert len(waits) > 10


def test_no_jitter_gives_exact_waits_and_a_first_wait_above_the_cap_is_capped():
    assert Backoff(0.5, 1.5, jitter=0).next_wait() == 0.5
    b = Backoff(10.0, 3.0, jitter=0)
    assert [b.next_wait(), b.next_wait()] == [3.0, 3.0]


@pytest.mark.parametrize(("first", "cap", "jitter"), [(0, 1, 0.2), (1, 0, 0.2), (1, 2, 1.0), (1, 2, -0.1)])
def test_bad_settings_are_refused_naming_the_values(first, cap, jitter):
    with pytest.raises(ValueError, match="backoff needs first_s > 0, max_s > 0 and 0 <= jitter < 1, got"):
        Backoff(first, cap, jitter)
