//! The `weft` binary; everything lives in the library (`weft::cli`).

/// mimalloc instead of glibc malloc: sled copies a tree node on every write, and glibc's
/// malloc/free was about a quarter of the event processor's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    weft::cli::main()
}
