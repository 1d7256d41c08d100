import asyncio

from kiam.k8s.waiters import KeyedWaiters


async def test_a_wake_on_the_key_ends_the_wait() -> None:
    waiters = KeyedWaiters()
    store: dict[str, int] = {}
    task = asyncio.create_task(waiters.wait_for("a", lambda: store.get("a"), timeout=5))
    await asyncio.sleep(0)
    assert waiters.waiting_keys() == ["a"]
    waiters.wake(["b"])  # another key: still waiting
    await asyncio.sleep(0)
    assert not task.done()
    store["a"] = 1
    waiters.wake(["a"])
    assert await task == 1
    assert not waiters


async def test_time_up_answers_none_and_forgets_the_waiter() -> None:
    waiters = KeyedWaiters()
    assert await waiters.wait_for("a", lambda: None, timeout=0.01) is None
    assert waiters.waiting_keys() == []


async def test_a_present_key_answers_at_once() -> None:
    waiters = KeyedWaiters()
    assert await waiters.wait_for("a", lambda: "here", timeout=0) == "here"
