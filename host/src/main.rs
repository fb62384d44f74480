//! The `weft` binary; everything lives in the library (`weft::cli`).

fn main() -> anyhow::Result<()> {
    weft::cli::main()
}
