//! The plugins' and the guest SDK's own unit tests (formatting, provider answer mapping,
//! webhook parsing, signature base strings), run natively so `cargo test --workspace` covers
//! them: the plugins live in their own wasm32 workspace, which the root workspace excludes.

use std::path::Path;
use std::process::Command;

#[test]
fn plugin_and_guest_sdk_unit_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["test", "--quiet", "--workspace", "--manifest-path"])
        .arg(root.join("plugins/Cargo.toml"))
        // The plugins' own target dir, as scripts/build-plugins.sh uses; native test
        // binaries go to its `debug/` next to the wasm builds.
        .env("CARGO_TARGET_DIR", root.join("plugins/target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plugin unit tests failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
