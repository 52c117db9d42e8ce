import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.batching import MicroBatcher


@settings(max_examples=25, deadline=None)
@given(items=st.lists(st.integers(), max_size=40), size=st.integers(1, 8))
def test_outputs_match_inputs_in_order_and_batches_are_bounded(items, size):
    async def main():
        async def double(xs):
            await asyncio.sleep(0)
            return [x * 2 for x in xs]

        b = MicroBatcher(double, size, 0.001)
        out = await asyncio.gather(*(b.submit(x, key=x % 3) for x in items))
        return out, b.batch_sizes

    out, sizes = asyncio.run(main())
    assert out == [x * 2 for x in items]
    assert all(1 <= s <= size for s in sizes)
    assert sum(sizes) == len(items)


def test_busy_model_gets_bigger_batches():
    async def main():
        async def slow(xs):
            await asyncio.sleep(0.05)
            return xs

        b = MicroBatcher(slow, 16, 0.0)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.01)  # the first batch (1 item) is running
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 9)]
        await asyncio.gather(first, *rest)
        return b.batch_sizes

    assert asyncio.run(main()) == [1, 8]


def test_exception_fails_every_caller_and_length_is_checked():
    async def main(fn):
        b = MicroBatcher(fn, 4, 0.01)
        return await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)

    async def boom(xs):
        raise RuntimeError("model failed")

    async def short(xs):
        return xs[:-1]

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main(boom)))
    assert all(isinstance(r, ValueError) and "2 outputs for 3" in str(r) for r in asyncio.run(main(short)))


def test_bad_limits_raise():
    async def f(xs):
        return xs

    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(f, 0, 0.1)
