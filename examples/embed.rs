//! Embedding Weft as a library: open a host on a temporary data directory, create a tenant,
//! upload and activate a plugin, and invoke it — no HTTP involved.
//!
//! ```sh
//! bash scripts/build-plugins.sh
//! cargo run -p weft --example embed
//! ```

use std::sync::Arc;

use weft::app::App;
use weft::kind::PluginKind;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let root = weft::cli::repo_root();
    let wasm = std::fs::read(root.join("target/plugins/abandoned-cart.wasm"))
        .map_err(|e| anyhow::anyhow!("{e}: run `bash scripts/build-plugins.sh` first"))?;
    let dir = std::env::temp_dir().join(format!("weft-embed-{}", std::process::id()));
    let app = App::open(&App::test_config(&dir)).await?;
    let registry = Arc::clone(&app.state.registry);
    let now = app.state.clock.now_ms();
    let tenant = weft::tenants::create(&app.state.db, "embedded", now).await?;
    let version = registry
        .upload(
            &tenant.id,
            "abandoned-cart",
            "1.0.0",
            PluginKind::JourneyRule,
            wasm.into(),
            now,
        )
        .await?;
    println!("uploaded: ready in {} µs", version.ready_us);
    registry
        .activate(&tenant.id, "abandoned-cart", "1.0.0", now)
        .await?;
    let active = registry
        .active(&tenant.id, "abandoned-cart")
        .expect("just activated");
    let out = registry
        .invoke(&tenant.id, active, weft::samples::journey_entered())
        .await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
