"""torch's CUDA caching allocator, replayed over a fake step's allocations: reserved, not allocated.

A card runs out of memory when the allocator cannot find a free block in the segments it holds
and cannot get a new segment from the driver; so what decides it is *reserved* memory, which
exceeds allocated memory by the allocator's rounding and fragmentation. This module replays the
allocations and frees of a fake step (``StorageTracker(record=True).events``) through a model of
``c10/cuda/CUDACachingAllocator.cpp`` (native backend, default settings):

- sizes are rounded up to a multiple of 512 bytes (``round_size``);
- requests up to 1 MiB come from the small pool, whose segments are 2 MiB; larger ones from the
  large pool, with 20 MiB segments for requests under 10 MiB and segments of the request rounded
  up to 2 MiB above (``get_allocation_size``);
- a request takes the smallest free block of its pool that is large enough, the lowest address
  first among equals (``get_free_block``); the rest of the block is split off when at least 512
  bytes (small pool) or more than 1 MiB (large pool) remain (``should_split``);
- a freed block merges with free neighbours of its segment; segments are kept (cached), so a
  later request may reuse and split them.

Peaks kept (overall and per phase): allocated (what ``max_memory_allocated`` reports), reserved
(``max_memory_reserved``), and *active*: the bytes of segments that hold at least one live block. A real
allocator that meets a full card releases its wholly free cached segments and retries, so the active peak, not the
reserved one, is the smallest card the step fits (an approximation: released segments are not
re-split as cached ones are). Pure Python, about a microsecond per event.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from planner.base.tracker import ALLOC, FREE, PHASE, Event

MIB = 2**20
MIN_BLOCK = 512
SMALL_SIZE = 1 * MIB
SMALL_BUFFER = 2 * MIB
LARGE_BUFFER = 20 * MIB
MIN_LARGE_ALLOC = 10 * MIB
ROUND_LARGE = 2 * MIB


def round_size(nbytes: int) -> int:
    """The block size torch's allocator gives a request of ``nbytes``."""
    return MIN_BLOCK if nbytes < MIN_BLOCK else MIN_BLOCK * math.ceil(nbytes / MIN_BLOCK)


def segment_size(block_bytes: int) -> int:
    """The segment the allocator asks the driver for when no cached block fits ``block_bytes``."""
    if block_bytes <= SMALL_SIZE:
        return SMALL_BUFFER
    if block_bytes < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * math.ceil(block_bytes / ROUND_LARGE)


def should_split(block_bytes: int, request_bytes: int) -> bool:
    remaining = block_bytes - request_bytes
    return remaining >= MIN_BLOCK if request_bytes <= SMALL_SIZE else remaining > SMALL_SIZE


@dataclass(frozen=True)
class AllocatorPeaks:
    """Peaks of one replay, overall and per phase (bytes)."""

    allocated: int
    reserved: int
    active: int
    phase_allocated: dict[str, int] = field(default_factory=dict)
    phase_active: dict[str, int] = field(default_factory=dict)
    phase_reserved: dict[str, int] = field(default_factory=dict)


class _Block:
    __slots__ = ("address", "allocated", "next", "prev", "segment", "size")

    def __init__(self, segment: int, address: int, size: int):
        self.segment, self.address, self.size = segment, address, size
        self.allocated = False
        self.prev: _Block | None = None
        self.next: _Block | None = None


class CachingAllocator:
    """The replay's state: segments, free blocks per pool, live blocks by key; see the module docstring."""

    def __init__(self) -> None:
        self.pools: dict[bool, list[tuple[int, int, _Block]]] = {True: [], False: []}  # small? -> (size, addr)
        self.live: dict[int | str, _Block] = {}
        self.segment_bytes: dict[int, int] = {}
        self.segment_users: dict[int, int] = {}
        self.next_address = 0
        self.allocated = self.reserved = self.active = 0
        self.reset_peaks()

    def reset_peaks(self) -> None:
        self.peak_allocated, self.peak_reserved, self.peak_active = self.allocated, self.reserved, self.active
        self.phase = "other"
        self.phase_allocated: dict[str, int] = {}
        self.phase_active: dict[str, int] = {}
        self.phase_reserved: dict[str, int] = {}

    def peaks(self) -> AllocatorPeaks:
        return AllocatorPeaks(self.peak_allocated, self.peak_reserved, self.peak_active,
                              dict(self.phase_allocated), dict(self.phase_active), dict(self.phase_reserved))

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self._update_phase()

    def malloc(self, key: int | str, nbytes: int) -> None:
        if nbytes == 0:
            return
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        pool = self.pools[small]
        index = bisect.bisect_left(pool, (size, -1))
        block = pool.pop(index)[2] if index < len(pool) else self._new_segment(segment_size(size))
        if should_split(block.size, size):
            rest = _Block(block.segment, block.address + size, block.size - size)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            bisect.insort(self.pools[small], (rest.size, rest.address, rest))
        block.allocated = True
        self.live[key] = block
        users = self.segment_users[block.segment]
        self.segment_users[block.segment] = users + 1
        if users == 0:
            self.active += self.segment_bytes[block.segment]
        self.allocated += block.size
        if self.allocated > self.peak_allocated:
            self.peak_allocated = self.allocated
        if self.active > self.peak_active:
            self.peak_active = self.active
        self._update_phase()

    def free(self, key: int | str) -> None:
        block = self.live.pop(key, None)
        if block is None:
            return
        small = self.segment_bytes[block.segment] == SMALL_BUFFER  # large-pool segments are >= 10 MiB
        pool = self.pools[small]
        self.allocated -= block.size
        block.allocated = False
        for neighbour in (block.prev, block.next):
            if neighbour is not None and not neighbour.allocated:
                del pool[bisect.bisect_left(pool, (neighbour.size, neighbour.address))]
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        bisect.insort(pool, (block.size, block.address, block))
        users = self.segment_users[block.segment] - 1
        self.segment_users[block.segment] = users
        if users == 0:
            self.active -= self.segment_bytes[block.segment]

    def _new_segment(self, nbytes: int) -> _Block:
        segment = len(self.segment_bytes)
        self.segment_bytes[segment] = nbytes
        self.segment_users[segment] = 0
        block = _Block(segment, self.next_address, nbytes)
        self.next_address += nbytes
        self.reserved += nbytes
        if self.reserved > self.peak_reserved:
            self.peak_reserved = self.reserved
        return block

    def _update_phase(self) -> None:
        if self.allocated > self.phase_allocated.get(self.phase, 0):
            self.phase_allocated[self.phase] = self.allocated
        if self.active > self.phase_active.get(self.phase, 0):
            self.phase_active[self.phase] = self.active
        if self.reserved > self.phase_reserved.get(self.phase, 0):
            self.phase_reserved[self.phase] = self.reserved


def replay(events: Iterable[Event], allocator: CachingAllocator | None = None) -> CachingAllocator:
    """Apply ``events`` to ``allocator`` (a fresh one by default) and return it."""
    allocator = allocator or CachingAllocator()
    for kind, key, nbytes in events:
        if kind == ALLOC:
            allocator.malloc(key, nbytes)
        elif kind == FREE:
            allocator.free(key)
        elif kind == PHASE:
            allocator.set_phase(str(key))
    return allocator


def steady_state_peaks(setup: list[Event], step: list[Event], steps: int = 2) -> AllocatorPeaks:
    """Peaks of the last of ``steps`` identical training steps, after ``setup`` (weights, state, batch).

    A training loop repeats the same allocations every step; the caching allocator's layout is
    what the earlier steps left, so the step is replayed ``steps`` times and the last one's peaks
    are kept. Blocks the step leaves live (its outputs) are freed before the next replay.
    """
    allocator = replay(setup)
    persistent = set(allocator.live)
    for index in range(steps):
        if index:
            for key in [key for key in allocator.live if key not in persistent]:
                allocator.free(key)
        allocator.reset_peaks()
        replay(step, allocator)
    return allocator.peaks()


def sequence_peaks(setup: list[Event], sequence: list[Event]) -> AllocatorPeaks:
    """Peaks of a run's whole sequence (``FakeStep.run_sequence``), replayed once after ``setup``:
    the segments an earlier phase caches are what later phases reuse or split, as on the card."""
    allocator = replay(setup)
    allocator.reset_peaks()
    return replay(sequence, allocator).peaks()
