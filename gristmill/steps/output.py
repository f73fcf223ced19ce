"""Collects a job's stdout or stderr up to its cap, passing chunks on as they come."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gristmill.model import Output

CHUNK = 65536


class CappedOutput:
    """Keeps the first `cap` bytes of a stream and counts the rest.

    `on_overflow` is called once when the stream passes the cap, so the job can
    be stopped; the bytes up to the cap are kept, never lost.
    """

    def __init__(
        self,
        cap: int,
        on_chunk: Callable[[bytes], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self._cap = cap
        self._on_chunk = on_chunk
        self._on_overflow = on_overflow
        self._data = bytearray()
        self._total = 0

    async def drain(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(CHUNK):
            room = self._cap - len(self._data)
            kept = chunk[: max(room, 0)]
            if kept:
                self._data += kept
                self._on_chunk(kept)
            was_over = self._total > self._cap
            self._total += len(chunk)
            if self._total > self._cap and not was_over:
                self._on_overflow()

    @property
    def overflowed(self) -> bool:
        return self._total > self._cap

    def output(self) -> Output:
        return Output(bytes(self._data), self.overflowed, self._total)
