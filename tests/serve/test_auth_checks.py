"""Key checks shared by concurrent requests: fewer store reads, never an answer older than the request."""

from __future__ import annotations

import asyncio

import pytest

from tuneloop.serve.http import SharedReads


class Keys:
    """A key table whose reads are counted and can be held in flight."""

    def __init__(self) -> None:
        self.active = True
        self.reads = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def read(self, key: str) -> bool:
        self.reads += 1
        answer = self.active  # what the store holds when the read begins
        await self.release.wait()
        if self.fail:
            raise RuntimeError("store unavailable")
        return answer


def test_concurrent_checks_of_one_key_share_a_read() -> None:
    async def run() -> None:
        keys = Keys()
        checks = SharedReads(keys.read)
        assert await asyncio.gather(*(checks("k") for _ in range(20))) == [True] * 20
        assert keys.reads == 1
        assert await checks("other") and keys.reads == 2

    asyncio.run(run())


def test_a_check_asked_during_a_read_waits_for_a_read_that_sees_a_revocation_made_before_it() -> None:
    async def run() -> None:
        keys = Keys()
        checks = SharedReads(keys.read)
        keys.release.clear()
        early = asyncio.create_task(checks("k"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert keys.reads == 1  # the first read is in flight, begun while the key was active
        keys.active = False  # revoked; the requests below arrive after it
        late = [asyncio.create_task(checks("k")) for _ in range(5)]
        keys.release.set()
        assert await early is True
        assert await asyncio.gather(*late) == [False] * 5
        assert keys.reads == 2

    asyncio.run(run())


def test_a_caller_that_goes_away_does_not_cancel_the_others_read() -> None:
    async def run() -> None:
        keys = Keys()
        checks = SharedReads(keys.read)
        keys.release.clear()
        gone, staying = asyncio.create_task(checks("k")), asyncio.create_task(checks("k"))
        await asyncio.sleep(0)
        gone.cancel()
        keys.release.set()
        assert await staying is True
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(run())


def test_a_failed_read_fails_its_callers_and_the_next_check_reads_again() -> None:
    async def run() -> None:
        keys = Keys()
        checks = SharedReads(keys.read)
        keys.fail = True
        outcomes = await asyncio.gather(checks("k"), checks("k"), return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes) and keys.reads == 1
        keys.fail = False
        assert await checks("k") is True and keys.reads == 2

    asyncio.run(run())


def test_checks_still_answer_on_a_new_event_loop_after_one_closed_mid_read() -> None:
    keys = Keys()
    checks = SharedReads(keys.read)

    async def abandoned() -> None:
        keys.release.clear()
        asyncio.get_running_loop().create_task(checks("k"))
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(abandoned())
    loop.close()  # its read never finished
    keys.release = asyncio.Event()
    keys.release.set()
    assert asyncio.run(asyncio.wait_for(checks("k"), 5)) is True
