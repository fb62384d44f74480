//! A bump allocator for plugins: `weft_guest::bump_allocator!();` at the crate root.
//!
//! Every invocation runs on a fresh instance that is thrown away when the call returns, so
//! a general-purpose allocator's bookkeeping (free lists, coalescing, headers) is wasted
//! work. The bump allocator hands out memory by moving a pointer forward and never reuses
//! it, which makes `alloc` a handful of instructions and `dealloc` nearly free.
//!
//! ```no_run
//! // src/lib.rs of a plugin
//! weft_guest::bump_allocator!();
//! ```
//!
//! # The tradeoff
//!
//! - **Memory is never reused within a call.** A block is only given back when it is the
//!   most recent one (a `Vec` grown and dropped at once, say); everything else stays taken
//!   until no block is live at all, which is after the call for a plugin that keeps
//!   nothing allocated between calls (then the next call on the same instance starts
//!   afresh). A plugin that allocates and frees in a loop (parsing many
//!   documents one after another, building and dropping large temporaries) uses the sum of
//!   its allocations instead of their peak, and the kind's memory cap still applies: past
//!   it the call traps with `memory_limit_exceeded`. Use it for calls that allocate a
//!   bounded amount, such as a personalizer ranking a catalog.
//! - **`realloc` is cheap when the block is the last one**: it grows or shrinks in place,
//!   so a `Vec` or `String` being built at the end of the heap never copies. Otherwise it
//!   copies to a new block and the old one stays taken.
//! - **Single-threaded.** `wasm32-wasip2` has no threads; on a wasm target built with the
//!   `atomics` feature the macro refuses to compile.
//!
//! # Where the memory comes from
//!
//! The first region (256 KiB, or more for a larger first block) is taken from the C
//! allocator, which carves it out of the instance's initial memory: with Weft's
//! recommended `--initial-memory=1048576` a typical call never grows memory at all. Later
//! regions come straight from `memory.grow`, 1 MiB at a time or more for a larger block;
//! consecutive regions are contiguous, so the arena keeps bumping across them. The C
//! allocator keeps working beside it for whatever C code in the plugin calls `malloc`.
//!
//! Outside wasm (`cargo test` of a plugin on the host) the macro expands to nothing and
//! the system allocator stays in place.

#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
use core::{alloc::Layout, ptr};

/// Memory a bump [`Arena`] draws from.
#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
pub(crate) trait Source {
    /// A fresh region of at least `min` bytes as `(start, end)` addresses, or `None` when
    /// there is no more memory.
    fn region(&mut self, min: usize) -> Option<(usize, usize)>;
}

/// The bump arena: blocks are carved from `next` up to `end`.
#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arena {
    /// The first free address.
    next: usize,
    /// One past the last usable address; 0 before the first region.
    end: usize,
    /// Where the current region starts: `next` goes back here when no block is live.
    base: usize,
    /// Blocks handed out and not given back.
    live: usize,
}

#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
impl Arena {
    /// An arena without memory; the first allocation draws the first region.
    pub(crate) const fn new() -> Arena {
        Arena {
            next: 0,
            end: 0,
            base: 0,
            live: 0,
        }
    }

    /// Carves `layout` from the current region, if it fits.
    fn bump(&mut self, layout: Layout) -> Option<usize> {
        // `align` is a power of two, so masking rounds up to a multiple of it.
        let start = self.next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let end = start.checked_add(layout.size())?;
        if end > self.end || self.end == 0 {
            return None;
        }
        self.next = end;
        Some(start)
    }

    /// Takes a new region of at least `min` bytes: `Some(true)` when it continues the
    /// current region and so extends it, `Some(false)` when it replaces it (the rest of the
    /// old one stays unused), `None` when there is no more memory.
    fn refill(&mut self, min: usize, source: &mut impl Source) -> Option<bool> {
        let (start, end) = source.region(min)?;
        let extends = start == self.end && self.end != 0;
        if !extends {
            self.next = start;
            self.base = start;
        }
        self.end = end;
        Some(extends)
    }

    /// A block for `layout`, or null when memory is exhausted.
    pub(crate) fn alloc(&mut self, layout: Layout, source: &mut impl Source) -> *mut u8 {
        let block = self.carve(layout, source);
        if !block.is_null() {
            self.live += 1;
        }
        block
    }

    /// [`alloc`](Self::alloc) without counting the block.
    fn carve(&mut self, layout: Layout, source: &mut impl Source) -> *mut u8 {
        if let Some(start) = self.bump(layout) {
            return start as *mut u8;
        }
        // Room for the block at any alignment of the new region's start.
        let Some(min) = layout.size().checked_add(layout.align() - 1) else {
            return ptr::null_mut();
        };
        if self.refill(min, source).is_none() {
            return ptr::null_mut();
        }
        self.bump(layout)
            .map_or(ptr::null_mut(), |start| start as *mut u8)
    }

    /// Gives the block back if it is the most recent one; any other stays taken until no
    /// block is live, when the whole current region is free again. That happens after every
    /// call of a plugin that keeps nothing allocated between calls (the call's arguments
    /// and results are freed when it returns), so a long-lived instance reuses its memory.
    pub(crate) fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        self.live = self.live.saturating_sub(1);
        if self.live == 0 {
            self.next = self.base;
        } else if (ptr as usize).wrapping_add(layout.size()) == self.next {
            self.next = ptr as usize;
        }
    }

    /// Resizes a block: in place when it is the most recent one (or when it shrinks),
    /// otherwise by copying it to a new block.
    ///
    /// # Safety
    ///
    /// `ptr` must be a block of this arena allocated with `layout` and not given back, and
    /// `new_size` must form a valid layout with `layout.align()` (as for
    /// [`GlobalAlloc::realloc`](core::alloc::GlobalAlloc::realloc)).
    pub(crate) unsafe fn realloc(
        &mut self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        source: &mut impl Source,
    ) -> *mut u8 {
        let start = ptr as usize;
        if start.wrapping_add(layout.size()) == self.next {
            let Some(new_end) = start.checked_add(new_size) else {
                return ptr::null_mut();
            };
            if new_end <= self.end {
                self.next = new_end;
                return ptr;
            }
            // Past the region's end: a region that continues this one keeps the block in
            // place; any other becomes the arena and the block moves there below.
            match self.refill(new_end - self.end, source) {
                None => return ptr::null_mut(),
                Some(true) => {
                    self.next = new_end;
                    return ptr;
                }
                Some(false) => {}
            }
        } else if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `new_size` and `layout.align()` form a layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // The old block is given up for the new one: the live count stays.
        let new = self.carve(new_layout, source);
        if !new.is_null() {
            // SAFETY: `ptr` holds `layout.size()` bytes, `new` at least `new_size`, and a
            // fresh block never overlaps a live one.
            unsafe { ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
pub use wasm::BumpAllocator;

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
mod wasm {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    use super::{Arena, Source};

    /// A wasm page.
    const PAGE: usize = 64 * 1024;
    /// The first region: a typical personalization call allocates well under 100 KiB, and
    /// 256 KiB fits in the recommended 1 MiB initial memory beside the 128 KiB stack and
    /// the data, leaving the C allocator room of its own.
    const FIRST_REGION: usize = 256 * 1024;
    /// Later regions: each `memory.grow` costs the host a system call (about 1 µs), so grow
    /// a MiB at a time; at most that much of the kind's cap (64 MiB) then sits unused.
    const GROW_STEP: usize = 1024 * 1024;
    /// The alignment asked of the C allocator for the first region: its own maximum
    /// (`max_align_t`), so the request takes its fast path.
    const FIRST_ALIGN: usize = 16;

    /// Where the wasm arena's memory comes from: the C allocator once, then `memory.grow`.
    struct Pages {
        /// Whether the first region was taken.
        started: bool,
    }

    impl Source for Pages {
        fn region(&mut self, min: usize) -> Option<(usize, usize)> {
            if !self.started {
                self.started = true;
                let size = min.max(FIRST_REGION);
                if let Ok(layout) = Layout::from_size_align(size, FIRST_ALIGN) {
                    // SAFETY: `layout` has a non-zero size.
                    let start = unsafe { std::alloc::System.alloc(layout) } as usize;
                    if start != 0 {
                        return Some((start, start + size));
                    }
                }
            }
            let pages = min.max(GROW_STEP).div_ceil(PAGE);
            let previous = core::arch::wasm32::memory_grow(0, pages);
            if previous == usize::MAX {
                return None;
            }
            let start = previous.checked_mul(PAGE)?;
            // At the 4 GiB limit the end address does not fit; lose the last byte.
            let end = (previous + pages).saturating_mul(PAGE);
            Some((start, end))
        }
    }

    struct State {
        arena: Arena,
        pages: Pages,
    }

    /// The global allocator behind [`bump_allocator!`](crate::bump_allocator); see
    /// [the module](crate::bump) for the tradeoff.
    pub struct BumpAllocator {
        state: UnsafeCell<State>,
    }

    // SAFETY: this module only exists for wasm without the `atomics` feature, where there
    // is exactly one thread, so the state is never touched concurrently.
    unsafe impl Sync for BumpAllocator {}

    impl BumpAllocator {
        /// An allocator that has not taken any memory yet.
        #[allow(clippy::new_without_default)]
        pub const fn new() -> BumpAllocator {
            BumpAllocator {
                state: UnsafeCell::new(State {
                    arena: Arena::new(),
                    pages: Pages { started: false },
                }),
            }
        }
    }

    // SAFETY: blocks are carved from memory nothing else uses (the C allocator's block,
    // grown pages), aligned as asked, and never handed out twice while live.
    unsafe impl GlobalAlloc for BumpAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: single-threaded, and the allocator never re-enters itself.
            let state = unsafe { &mut *self.state.get() };
            state.arena.alloc(layout, &mut state.pages)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as in `alloc`.
            let state = unsafe { &mut *self.state.get() };
            state.arena.dealloc(ptr, layout);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as in `alloc`; the caller upholds `GlobalAlloc::realloc`'s contract,
            // which is `Arena::realloc`'s.
            let state = unsafe { &mut *self.state.get() };
            unsafe { state.arena.realloc(ptr, layout, new_size, &mut state.pages) }
        }
    }
}

/// Makes the [bump allocator](crate::bump) the plugin's global allocator: fastest for a
/// call that allocates a bounded amount, since an instance lives for one call; memory is
/// never reused within the call, and the kind's memory cap still applies.
///
/// Use once, at the crate root: `weft_guest::bump_allocator!();`. Only wasm builds get it;
/// native test builds keep the system allocator.
#[macro_export]
macro_rules! bump_allocator {
    () => {
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        #[global_allocator]
        static __WEFT_BUMP_ALLOCATOR: $crate::bump::BumpAllocator =
            $crate::bump::BumpAllocator::new();
        #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
        compile_error!("weft_guest::bump_allocator! is single-threaded: build without `atomics`");
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `memory.grow` over a real buffer: regions are handed out in `step`-byte
    /// multiples, one after another, optionally with a gap (something else grew memory).
    struct Buffer {
        memory: Vec<u64>,
        used: usize,
        step: usize,
        gap: usize,
        regions: usize,
    }

    /// Each fake region is a multiple of 4 KiB, like pages but smaller to fill quickly.
    const STEP: usize = 4096;

    impl Buffer {
        fn new(bytes: usize) -> Buffer {
            Buffer {
                memory: vec![0; bytes / 8],
                used: 0,
                step: STEP,
                gap: 0,
                regions: 0,
            }
        }

        fn base(&self) -> usize {
            self.memory.as_ptr() as usize
        }
    }

    impl Source for Buffer {
        fn region(&mut self, min: usize) -> Option<(usize, usize)> {
            let size = min.div_ceil(self.step) * self.step;
            let start = self.used + self.gap;
            if start + size > self.memory.len() * 8 {
                return None;
            }
            self.used = start + size;
            self.regions += 1;
            Some((self.base() + start, self.base() + start + size))
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// A buffer large enough for every test: 64 KiB.
    const BUFFER: usize = 64 * 1024;

    #[test]
    fn blocks_are_aligned_disjoint_and_consecutive() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        let a = arena.alloc(layout(3, 1), &mut buf) as usize;
        let b = arena.alloc(layout(8, 8), &mut buf) as usize;
        let c = arena.alloc(layout(1, 64), &mut buf) as usize;
        assert_eq!(a, buf.base(), "the first block starts the first region");
        assert_eq!(b % 8, 0);
        assert!(
            b >= a + 3 && b < a + 3 + 8,
            "only alignment padding between blocks"
        );
        assert_eq!(c % 64, 0);
        assert!(c >= b + 8);
        assert_eq!(buf.regions, 1, "one region serves small blocks");
    }

    #[test]
    fn full_region_is_extended_when_the_next_region_continues_it() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        let a = arena.alloc(layout(STEP - 8, 8), &mut buf) as usize;
        let b = arena.alloc(layout(16, 8), &mut buf) as usize;
        assert_eq!(b, a + STEP - 8, "the block straddles both regions");
        assert_eq!(buf.regions, 2);
    }

    #[test]
    fn region_after_a_gap_starts_the_arena_afresh() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        let a = arena.alloc(layout(STEP - 8, 8), &mut buf) as usize;
        buf.gap = STEP;
        let b = arena.alloc(layout(16, 8), &mut buf) as usize;
        assert_eq!(
            b,
            a + 2 * STEP,
            "the block starts the new region, after the gap"
        );
    }

    #[test]
    fn block_larger_than_a_step_gets_a_region_big_enough() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        buf.gap = 8; // Misaligns the region start, so the block needs padding.
        let a = arena.alloc(layout(3 * STEP, 64), &mut buf) as usize;
        assert_ne!(a, 0);
        assert_eq!(a % 64, 0);
        assert!(a + 3 * STEP <= buf.base() + buf.used);
    }

    #[test]
    fn last_block_grows_and_shrinks_in_place_keeping_its_bytes() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        let p = arena.alloc(layout(4, 4), &mut buf);
        unsafe { p.copy_from_nonoverlapping(b"weft".as_ptr(), 4) };
        let q = unsafe { arena.realloc(p, layout(4, 4), 100, &mut buf) };
        assert_eq!(q, p);
        let r = unsafe { arena.realloc(q, layout(100, 4), 2, &mut buf) };
        assert_eq!(r, p);
        assert_eq!(unsafe { core::slice::from_raw_parts(r, 2) }, b"we");
        let next = arena.alloc(layout(1, 1), &mut buf) as usize;
        assert_eq!(
            next,
            p as usize + 2,
            "shrinking the last block gives the tail back"
        );
    }

    #[test]
    fn last_block_grows_in_place_across_a_continuing_region() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        let p = arena.alloc(layout(STEP / 2, 8), &mut buf);
        let q = unsafe { arena.realloc(p, layout(STEP / 2, 8), 3 * STEP, &mut buf) };
        assert_eq!(q, p);
        assert_eq!(buf.regions, 2);
        let next = arena.alloc(layout(8, 8), &mut buf) as usize;
        assert_eq!(next, p as usize + 3 * STEP);
    }

    #[test]
    fn last_block_moves_with_its_bytes_when_the_new_region_is_elsewhere() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        let p = arena.alloc(layout(STEP - 4, 4), &mut buf);
        unsafe { p.copy_from_nonoverlapping(b"weft".as_ptr(), 4) };
        buf.gap = 2 * STEP;
        let q = unsafe { arena.realloc(p, layout(STEP - 4, 4), 2 * STEP, &mut buf) };
        assert!(q as usize >= p as usize + STEP + 2 * STEP, "{p:?} {q:?}");
        assert_eq!(unsafe { core::slice::from_raw_parts(q, 4) }, b"weft");
    }

    #[test]
    fn earlier_block_is_copied_when_it_grows_and_kept_when_it_shrinks() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        let p = arena.alloc(layout(4, 1), &mut buf);
        unsafe { p.copy_from_nonoverlapping(b"weft".as_ptr(), 4) };
        let other = arena.alloc(layout(4, 1), &mut buf);
        let q = unsafe { arena.realloc(p, layout(4, 1), 8, &mut buf) };
        assert_eq!(
            q as usize,
            other as usize + 4,
            "a new block after the last one"
        );
        assert_eq!(unsafe { core::slice::from_raw_parts(q, 4) }, b"weft");
        let r = unsafe { arena.realloc(other, layout(4, 1), 2, &mut buf) };
        assert_eq!(r, other);
    }

    #[test]
    fn only_the_most_recent_block_is_given_back() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        let a = arena.alloc(layout(16, 8), &mut buf);
        let b = arena.alloc(layout(16, 8), &mut buf);
        arena.dealloc(a, layout(16, 8));
        let c = arena.alloc(layout(16, 8), &mut buf);
        assert_eq!(c as usize, b as usize + 16, "an earlier block stays taken");
        arena.dealloc(c, layout(16, 8));
        let d = arena.alloc(layout(16, 8), &mut buf);
        assert_eq!(d, c, "the most recent block is reused");
    }

    #[test]
    fn region_is_reused_from_its_start_once_no_block_is_live() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        // One "call": arguments in, a result grown by realloc (copied, as it is not the
        // last block), everything freed in another order than allocated.
        let args = arena.alloc(layout(100, 8), &mut buf);
        let result = arena.alloc(layout(8, 8), &mut buf);
        let tmp = arena.alloc(layout(50, 1), &mut buf);
        let result = unsafe { arena.realloc(result, layout(8, 8), 64, &mut buf) };
        arena.dealloc(args, layout(100, 8));
        arena.dealloc(tmp, layout(50, 1));
        let kept = arena.alloc(layout(8, 8), &mut buf);
        assert!(
            kept as usize > result as usize,
            "a live block keeps the region taken"
        );
        arena.dealloc(kept, layout(8, 8));
        arena.dealloc(result, layout(64, 8));
        let again = arena.alloc(layout(100, 8), &mut buf);
        assert_eq!(again, args, "the next call starts the region afresh");
        assert_eq!(buf.regions, 1);
    }

    #[test]
    fn many_calls_on_one_instance_stay_in_one_region() {
        let mut buf = Buffer::new(2 * STEP);
        let mut arena = Arena::new();
        for _ in 0..1000 {
            let a = arena.alloc(layout(STEP / 4, 8), &mut buf);
            let b = arena.alloc(layout(STEP / 4, 8), &mut buf);
            assert!(
                !a.is_null() && !b.is_null(),
                "memory is reused across calls"
            );
            arena.dealloc(a, layout(STEP / 4, 8));
            arena.dealloc(b, layout(STEP / 4, 8));
        }
        assert_eq!(buf.regions, 1);
    }

    #[test]
    fn exhausted_memory_gives_null() {
        let mut buf = Buffer::new(2 * STEP);
        let mut arena = Arena::new();
        assert!(!arena.alloc(layout(STEP, 8), &mut buf).is_null());
        assert!(arena.alloc(layout(2 * STEP, 8), &mut buf).is_null());
        let p = arena.alloc(layout(8, 8), &mut buf);
        assert!(!p.is_null(), "a failed refill leaves the arena usable");
        assert!(unsafe { arena.realloc(p, layout(8, 8), 4 * STEP, &mut buf) }.is_null());
    }

    #[test]
    fn sizes_that_overflow_the_address_space_give_null() {
        let mut buf = Buffer::new(BUFFER);
        let mut arena = Arena::new();
        assert!(arena
            .alloc(layout(isize::MAX as usize - 8, 8), &mut buf)
            .is_null());
        let p = arena.alloc(layout(8, 8), &mut buf);
        assert!(
            unsafe { arena.realloc(p, layout(8, 8), isize::MAX as usize - 8, &mut buf) }.is_null()
        );
    }
}
