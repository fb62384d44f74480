//! Builds every plugin in `../plugins` from source for wasm32-wasip2 (through
//! `scripts/build-plugins.sh`, the same command people use) and writes `gen.rs`: one
//! constant per plugin with the path of its `.wasm`, plus `foreach_plugin!`.
//!
//! `WEFT_SKIP_PLUGIN_BUILD=1` skips the build (for lint-only jobs); tests then fail with a
//! message saying so.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    // Watch sources, not `plugins/target` (the build writes there and would rerun us).
    for p in [
        "plugins/Cargo.toml",
        // A new plugin crate enters the lock file when it is first built.
        "plugins/Cargo.lock",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "wit",
        "scripts/build-plugins.sh",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=WEFT_SKIP_PLUGIN_BUILD");
    let skip = std::env::var("WEFT_SKIP_PLUGIN_BUILD").is_ok_and(|v| v == "1");
    let mut names: Vec<String> = std::fs::read_dir(root.join("plugins"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        for p in ["src", "Cargo.toml"] {
            println!(
                "cargo:rerun-if-changed={}",
                root.join("plugins").join(n).join(p).display()
            );
        }
    }
    if !skip {
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/build-plugins.sh"))
            .current_dir(&root)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_MAKEFLAGS")
            .status()
            .expect("running scripts/build-plugins.sh");
        assert!(
            status.success(),
            "building plugins failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
        );
    }
    let mut out = String::new();
    out.push_str(&format!(
        "/// Whether build.rs skipped the plugin build.\npub const SKIPPED: bool = {skip};\n"
    ));
    for n in &names {
        let ident = n.to_uppercase().replace('-', "_");
        let path = root.join("target/plugins").join(format!("{n}.wasm"));
        out.push_str(&format!(
            "/// `plugins/{n}` built for wasm32-wasip2.\npub const {ident}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    out.push_str("/// Calls `$m!(ident)` for every plugin.\n#[macro_export]\nmacro_rules! foreach_plugin {\n    ($m:ident) => {\n");
    for n in &names {
        out.push_str(&format!("        $m!({});\n", n.replace('-', "_")));
    }
    out.push_str("    };\n}\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("gen.rs");
    std::fs::write(dest, out).unwrap();
}
