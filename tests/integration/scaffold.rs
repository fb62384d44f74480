//! `weft plugin new`: every kind's scaffold builds as it is for `wasm32-wasip2`, with the
//! recommended link settings, and the component passes upload validation and answers each
//! of the sample calls the scaffold writes to its `fixtures/` as the sample's `expect` says.

use std::path::{Path, PathBuf};
use std::process::Command;

use weft::config::RuntimeConfig;
use weft::kind::PluginKind;
use weft::runner::ExpectCheck;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The initial size, in 64 KiB pages, of the memory the component's core module defines.
fn initial_memory_pages(component: &[u8]) -> u64 {
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::MemorySection(reader) = payload.unwrap() {
            return reader.into_iter().next().unwrap().unwrap().initial;
        }
    }
    panic!("the component defines no memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_plugins_of_every_kind_build_and_run() {
    if weft_tests::plugins::SKIPPED {
        return;
    }
    // Under target/ so rustup finds the repository's rust-toolchain.toml (with the wasm
    // target) and reruns reuse the build; a fresh workspace each run.
    let base = repo_root().join("target/scaffold-check");
    let ws = base.join("ws");
    let _ = std::fs::remove_dir_all(&ws);
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(
        ws.join("Cargo.toml"),
        "[workspace]\nresolver = \"2\"\nmembers = [\"*\"]\n",
    )
    .unwrap();
    // The plugins workspace's lock file: same dependency versions, no resolution surprises.
    std::fs::copy(
        repo_root().join("plugins/Cargo.lock"),
        ws.join("Cargo.lock"),
    )
    .unwrap();
    let sdk = repo_root().join("guest-sdk");

    for kind in PluginKind::ALL {
        let name = format!("my-{kind}");
        let dir = weft::scaffold::new_plugin(kind, &name, &ws, &sdk).unwrap();
        assert!(dir.join(".cargo/config.toml").is_file());

        // cargo reads `.cargo/config.toml` from the working directory, as an author's would.
        let out = Command::new(env!("CARGO"))
            .args(["build", "--target", "wasm32-wasip2"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", base.join("target"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_MAKEFLAGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the {kind} scaffold failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wasm = base
            .join("target/wasm32-wasip2/debug")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = std::fs::read(&wasm).unwrap();
        // `--initial-memory=1048576` from the scaffold's `.cargo/config.toml`; without it
        // the linker sizes memory as 1 MiB of stack plus the data, 17 pages or more.
        assert_eq!(
            initial_memory_pages(&bytes),
            16,
            "{kind}: the scaffold's link settings were not applied"
        );

        for (file, _) in weft::scaffold::fixtures(kind) {
            let outcome = weft::runner::run(
                &wasm,
                kind,
                &dir.join("fixtures").join(file),
                RuntimeConfig {
                    pool_instances: 4,
                    ..RuntimeConfig::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{kind} scaffold refused {file}: {e}"));
            assert!(
                outcome.error.is_none(),
                "{kind} scaffold failed on its sample {file}: {:?}",
                outcome.error
            );
            // Each sample states what the template's code answers; a change to either
            // that breaks the other fails here.
            assert_eq!(
                outcome.expect,
                Some(ExpectCheck {
                    met: true,
                    difference: None
                }),
                "{kind} {file}: {:?}",
                outcome.output
            );
        }
    }
}
