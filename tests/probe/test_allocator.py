"""The caching-allocator replay: torch's block and segment sizes, best fit, splitting, merging."""

from planner.base.tracker import ALLOC, FREE, PHASE
from planner.probe.meters.allocator import (
    LARGE_BUFFER,
    MIB,
    SMALL_BUFFER,
    CachingAllocator,
    round_size,
    segment_size,
    steady_state_peaks,
)


def test_sizes_are_torchs():
    assert [round_size(n) for n in (1, 512, 513, 4096)] == [512, 512, 1024, 4096]
    assert segment_size(512) == SMALL_BUFFER == 2 * MIB
    assert segment_size(MIB + 512) == LARGE_BUFFER == 20 * MIB
    assert segment_size(10 * MIB) == 10 * MIB
    assert segment_size(11 * MIB + 1) == 12 * MIB


def test_small_blocks_share_a_segment_and_large_ones_get_their_own():
    allocator = CachingAllocator()
    for key in range(4):
        allocator.malloc(key, 100_000)  # 4 × 100,352 bytes in one 2 MiB segment
    allocator.malloc("big", 30 * MIB)
    assert allocator.reserved == SMALL_BUFFER + 30 * MIB
    assert allocator.allocated == 4 * round_size(100_000) + 30 * MIB


def test_a_freed_block_is_reused_split_and_merged_back():
    allocator = CachingAllocator()
    allocator.malloc("a", 30 * MIB)
    allocator.free("a")
    allocator.malloc("b", 12 * MIB)  # best fit: the cached 30 MiB block, split (18 MiB > 1 MiB remain)
    allocator.malloc("c", 12 * MIB)  # the 18 MiB remainder
    assert allocator.reserved == 30 * MIB
    allocator.free("b")
    allocator.free("c")  # merges with its free neighbours into the whole segment again
    allocator.malloc("d", 30 * MIB)
    assert allocator.reserved == 30 * MIB and allocator.active == 30 * MIB


def test_fragmentation_makes_reserved_exceed_allocated_and_active_ignores_free_segments():
    allocator = CachingAllocator()
    allocator.malloc("a", 12 * MIB)
    allocator.malloc("b", 12 * MIB)
    allocator.free("a")
    allocator.malloc("c", 14 * MIB)  # does not fit the free 12 MiB segment: a new one
    assert allocator.allocated == 26 * MIB
    assert allocator.reserved == 38 * MIB
    assert allocator.active == 26 * MIB  # the cached 12 MiB segment holds nothing live
    assert allocator.peak_active == 26 * MIB


def test_steady_state_replays_the_step_on_the_layout_the_previous_step_left():
    setup = [(ALLOC, "weights", 40 * MIB)]
    step = [(PHASE, "forward_backward", 0), (ALLOC, 1, 12 * MIB), (ALLOC, 2, 20 * MIB), (FREE, 1, 0),
            (ALLOC, 3, 14 * MIB), (FREE, 2, 0), (FREE, 3, 0)]
    first = steady_state_peaks(setup, step, steps=1)
    second = steady_state_peaks(setup, step, steps=2)
    assert first.allocated == second.allocated == 40 * MIB + 34 * MIB
    # the second step finds the first step's 12, 20 and 14 MiB segments cached and reuses them
    assert first.reserved == second.reserved == 40 * MIB + 46 * MIB
    assert second.phase_allocated["forward_backward"] == 74 * MIB
