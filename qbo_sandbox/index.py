"""Per-store indexes that let queries and CDC answer without walking, re-parsing and sorting every object.

A :class:`TimeIndex` covers one store (an entity's objects or its tombstones): each object's parsed
``MetaData.LastUpdatedTime`` and a list of ``(instant, int Id, Id)`` kept sorted, plus a lazily sorted list of the ids.
It lives beside the store and is never serialised. ``Realm`` builds it on first use and keeps it up to date on every
write that goes through ``Realm.put`` / ``Realm.remove`` / ``Realm.bury``. Ordering by ``(instant, int Id)`` is the
same order :func:`query.sort_key` gives (second-precision instants compare the same as their timestamps, digit ids
the same as their decimals), so answers drawn from the index equal the brute-force ones.

A store holding an object the index cannot order exactly (no parseable ``LastUpdatedTime``, a non-digit ``Id``, an
``Id`` that is not its key) is *irregular*: callers then fall back to the brute-force evaluation.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right, insort
from datetime import datetime
from operator import itemgetter
from typing import Any

from qbo_sandbox.clock import parse_instant

Entry = tuple[datetime, int, str]  # (LastUpdatedTime, int(Id), Id)

entry_instant = itemgetter(0)  # an Entry's LastUpdatedTime, the key bisect searches by
DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}")  # text query.py compares and orders as instants


def entry_of(key: str, obj: Any) -> Entry | None:
    """The index entry of an object stored under ``key``, or None when it cannot be ordered exactly."""
    try:
        text = obj["MetaData"]["LastUpdatedTime"]
        obj_id = obj["Id"]
    except (KeyError, TypeError):
        return None
    if not isinstance(text, str) or obj_id != key or not (key.isascii() and key.isdigit()):
        return None
    if not DATE_LIKE.match(text) or str(int(key)) != key:  # query.sort_key orders date-like text as instants
        return None
    try:
        return parse_instant(text), int(key), key
    except ValueError:
        return None


class TimeIndex:
    """One store's objects in ``(LastUpdatedTime, Id)`` order; see the module docstring."""

    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store
        self.regular = True
        self.stamps: dict[str, Entry] = {}
        self._by_id: list[tuple[int, str]] | None = None
        for key, obj in store.items():
            entry = entry_of(key, obj)
            if entry is None:
                self.regular = False
                break
            self.stamps[key] = entry
        self.entries: list[Entry] = sorted(self.stamps.values()) if self.regular else []

    def __len__(self) -> int:
        return len(self.stamps)

    def put(self, key: str, obj: Any) -> bool:
        """Record a new version of ``store[key]``; False when the index can no longer order the store."""
        entry = entry_of(key, obj)
        if entry is None:
            self.regular = False
            return False
        old = self.stamps.get(key)
        if old == entry:
            return True
        if old is not None:
            del self.entries[bisect_left(self.entries, old)]
        elif self._by_id is not None:
            if not self._by_id or self._by_id[-1][0] < entry[1]:
                self._by_id.append((entry[1], key))
            else:
                insort(self._by_id, (entry[1], key))
        self.stamps[key] = entry
        insort(self.entries, entry)
        return True

    def remove(self, key: str) -> None:
        """Forget ``store[key]``."""
        old = self.stamps.pop(key, None)
        if old is None:
            return
        del self.entries[bisect_left(self.entries, old)]
        if self._by_id is not None:
            del self._by_id[bisect_left(self._by_id, (old[1], key))]

    def by_id(self) -> list[tuple[int, str]]:
        """``(int Id, Id)`` of every object, in Id order."""
        if self._by_id is None:
            self._by_id = sorted((entry[1], key) for key, entry in self.stamps.items())
        return self._by_id

    def span(
        self, low: datetime | None, low_inclusive: bool, high: datetime | None, high_inclusive: bool
    ) -> tuple[int, int]:
        """The slice ``[i, j)`` of :attr:`entries` whose instants lie within the bounds (None: unbounded)."""
        i, j = 0, len(self.entries)
        if low is not None:
            i = (bisect_left if low_inclusive else bisect_right)(self.entries, low, key=entry_instant)
        if high is not None:
            j = (bisect_right if high_inclusive else bisect_left)(self.entries, high, key=entry_instant)
        return i, max(i, j)
