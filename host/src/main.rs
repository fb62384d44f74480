//! The `weft` binary; everything lives in the library (`weft::cli`).

/// jemalloc instead of glibc malloc: sled copies a tree node on every write, and glibc's
/// malloc/free (`_int_malloc`, `malloc_consolidate`) was about a quarter of the event
/// processor's CPU. With jemalloc the drain went from 5.6-6.6k to 9.0k events/s
/// (BENCHMARKS.md, session 14).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start (the `_RJEM_MALLOC_CONF` environment
/// variable still overrides them). Thread caches stay small: tokio's blocking pool can
/// hold hundreds of idle threads after a burst, and with the default caches (objects up
/// to 32 KiB, 200 per size) an idle chat conversation cost 64 KiB instead of 45; objects
/// up to 1 KiB, 32 per size, keep glibc's footprint and the same speed.
// SAFETY: jemalloc reads this NUL-terminated string once, before the first allocation;
// it is immutable and lives for the whole program.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"tcache_max:1024,tcache_nslots_small_max:32\0"[0];

fn main() -> anyhow::Result<()> {
    weft::cli::main()
}
