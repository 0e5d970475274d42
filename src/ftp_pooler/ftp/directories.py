"""Remote directories made with ``mkdir -p`` once per directory at a time.

Many uploads into one new directory start together; each would otherwise
run its own ``mkdir -p`` (one MKD per level, more round trips when a level
exists) before the first one finished and was remembered. Here the first
task makes it and the others wait for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


class RemoteDirectories:
    """Directories of one FTP connection known to exist, and the ones being made.

    Not thread-safe; one Trio run. A failed make is not remembered: the tasks
    that waited for it find the directory unknown and the next one tries
    itself (and gets the server's own refusal if it repeats).
    """

    def __init__(self) -> None:
        self._made: set[str] = set()
        self._making: dict[str, trio.Event] = {}

    def known(self, directory: str) -> bool:
        """Whether ``directory`` was made (or found) by an earlier :meth:`ensure`."""
        return directory in self._made

    def forget(self, directory: str) -> None:
        """Drop ``directory`` from what is known (the server refused a file in it)."""
        self._made.discard(directory)

    async def ensure(self, directory: str, make: Callable[[str], Awaitable[object]]) -> None:
        """Run ``make(directory)`` unless it is known, or wait for the task already making it.

        Raises:
            Whatever ``make`` raises (only in the task that ran it).
        """
        while directory not in self._made:
            event = self._making.get(directory)
            if event is None:
                event = self._making[directory] = trio.Event()
                try:
                    await make(directory)
                    self._made.add(directory)
                finally:
                    del self._making[directory]
                    event.set()
                return
            await event.wait()
