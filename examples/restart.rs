//! Restart benchmark: how long a host with many installed plugins takes to be ready to
//! serve again (`App::open`: store open, engine, every active plugin loaded from the
//! compiled-artifact cache), and its peak memory.
//!
//! ```text
//! cargo run --release -p weft --example restart -- [--plugins 100] [--runs 7] [--cold-runs 2] [--dir DIR]
//! ```
//!
//! Each measurement is a fresh process that only opens the data directory (`restart open
//! DIR`), so its peak RSS (`VmHWM`) is not polluted by the setup. The setup (`restart setup
//! DIR N`, also its own process) creates a tenant and uploads + activates N plugins: copies
//! of the four example plugins, each made distinct by a custom section naming the copy, so
//! each has its own digest, blob and compiled artifact as N different plugins would.
//! "Cold" runs delete the artifact cache first, so every plugin is recompiled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weft::app::App;
use weft::config::Config;
use weft::kind::PluginKind;

const EXAMPLES: [(&str, PluginKind); 4] = [
    ("abandoned-cart", PluginKind::JourneyRule),
    ("tier-personalize", PluginKind::Personalization),
    ("zalo-oa", PluginKind::ChannelAdapter),
    ("faq-bot", PluginKind::ChatbotFlow),
];

/// The production configuration (as `weft serve` without a config file) rooted at `dir`.
fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

fn plugins_dir() -> PathBuf {
    match std::env::var_os("WEFT_PLUGINS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    }
}

fn plugin_bytes(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = plugins_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read plugin {} ({e}); run `bash scripts/build-plugins.sh` from the repository root first (or set WEFT_PLUGINS_DIR)",
            path.display()
        )
    })
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `component` with a trailing custom section `name` holding `payload`: same code, new digest.
fn with_custom_section(mut component: Vec<u8>, name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    component.push(0); // custom section id
    leb128(content.len(), &mut component);
    component.extend_from_slice(&content);
    component
}

/// `restart setup DIR N`: a tenant with N active plugins.
async fn setup(dir: &Path, n: usize) -> anyhow::Result<()> {
    let bases = EXAMPLES
        .iter()
        .map(|(name, _)| plugin_bytes(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let app = App::open(&config(dir)).await?;
    let registry = app.state.registry.clone();
    let now = app.state.clock.now_ms();
    let tenant = weft::tenants::create(&app.state.db, "restart-bench", now).await?;
    let t0 = Instant::now();
    for i in 0..n {
        let (base, kind) = EXAMPLES[i % EXAMPLES.len()];
        let name = format!("{base}-{i:03}");
        let bytes = with_custom_section(
            bases[i % EXAMPLES.len()].clone(),
            "weft-bench-copy",
            name.as_bytes(),
        );
        registry
            .upload(&tenant.id, &name, "1.0.0", kind, bytes.into(), now)
            .await
            .map_err(|e| anyhow::anyhow!("uploading {name}: {e}"))?;
        registry
            .activate(&tenant.id, &name, "1.0.0", now)
            .await
            .map_err(|e| anyhow::anyhow!("activating {name}: {e}"))?;
        if (i + 1) % 25 == 0 {
            eprintln!(
                "  installed {}/{n} plugins ({:.1} s)",
                i + 1,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Reads a `kB` field of `/proc/self/status` (Linux); 0 elsewhere.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `restart open DIR`: open once, print one JSON line.
async fn open(dir: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let app = App::open(&config(dir)).await?;
    let open_us = t0.elapsed().as_micros() as u64;
    println!(
        "{}",
        serde_json::json!({
            "open_us": open_us,
            "ready_in_us": app.ready_in.as_micros() as u64,
            "loaded": app.loaded,
            "vm_hwm_kb": status_kb("VmHWM:"),
            "vm_rss_kb": status_kb("VmRSS:"),
        })
    );
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
struct Opened {
    open_us: u64,
    loaded: usize,
    vm_hwm_kb: u64,
    vm_rss_kb: u64,
}

fn child(args: &[&str]) -> anyhow::Result<(String, Duration)> {
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let wall = t0.elapsed();
    if !out.status.success() {
        anyhow::bail!("`restart {}` failed with {}", args.join(" "), out.status);
    }
    Ok((String::from_utf8(out.stdout)?, wall))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Series {
    label: &'static str,
    open_ms: Vec<f64>,
    wall_ms: Vec<f64>,
    hwm_mib: Vec<f64>,
    rss_mib: Vec<f64>,
}

impl Series {
    fn new(label: &'static str) -> Series {
        Series {
            label,
            open_ms: vec![],
            wall_ms: vec![],
            hwm_mib: vec![],
            rss_mib: vec![],
        }
    }

    fn run(&mut self, dir: &str, expect: usize) -> anyhow::Result<()> {
        let (out, wall) = child(&["open", dir])?;
        let o: Opened = serde_json::from_str(out.trim())
            .map_err(|e| anyhow::anyhow!("unexpected output {out:?}: {e}"))?;
        if o.loaded != expect {
            anyhow::bail!(
                "{} run loaded {} plugins, expected {expect}",
                self.label,
                o.loaded
            );
        }
        let ms = o.open_us as f64 / 1000.0;
        eprintln!(
            "  {} run {}: App::open {ms:.1} ms, process {:.1} ms, VmHWM {:.1} MiB",
            self.label,
            self.open_ms.len() + 1,
            wall.as_secs_f64() * 1000.0,
            o.vm_hwm_kb as f64 / 1024.0
        );
        self.open_ms.push(ms);
        self.wall_ms.push(wall.as_secs_f64() * 1000.0);
        self.hwm_mib.push(o.vm_hwm_kb as f64 / 1024.0);
        self.rss_mib.push(o.vm_rss_kb as f64 / 1024.0);
        Ok(())
    }

    fn row(&self) -> String {
        let min = self.open_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.open_ms.iter().copied().fold(0.0, f64::max);
        let med = median(self.open_ms.clone());
        format!(
            "| {} | {} | {med:.1} ms | {min:.1} / {max:.1} ms | {:.1} ms | {:.1} MiB | {:.1} MiB | {:.2}x |",
            self.label,
            self.open_ms.len(),
            median(self.wall_ms.clone()),
            median(self.hwm_mib.clone()),
            median(self.rss_mib.clone()),
            med / 1000.0,
        )
    }
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn driver(args: &[String]) -> anyhow::Result<()> {
    let n: usize = arg(args, "--plugins").map_or(Ok(100), |v| v.parse())?;
    let runs: usize = arg(args, "--runs").map_or(Ok(7), |v| v.parse())?;
    let cold_runs: usize = arg(args, "--cold-runs").map_or(Ok(2), |v| v.parse())?;
    for (name, _) in EXAMPLES {
        plugin_bytes(name)?;
    }
    let tmp;
    let dir = match arg(args, "--dir") {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let dir_s = dir.to_string_lossy().into_owned();
    eprintln!("setup: {n} plugins in {dir_s}");
    child(&["setup", &dir_s, &n.to_string()])?;
    let artifacts = dir.join("blobs").join("artifacts");
    if !artifacts.is_dir() {
        anyhow::bail!("no artifact cache at {}", artifacts.display());
    }

    let mut warm = Series::new("warm (artifact cache)");
    for _ in 0..runs {
        warm.run(&dir_s, n)?;
    }
    let mut cold = Series::new("cold (no artifact cache)");
    for _ in 0..cold_runs {
        std::fs::remove_dir_all(&artifacts)?;
        cold.run(&dir_s, n)?;
    }

    println!("\nRestart with {n} active plugins (target: ready in <= 1 s)\n");
    println!("| Restart | Runs | Median App::open | Min / max | Median process wall | Median peak RSS (VmHWM) | Median RSS after open | Median / target |");
    println!("|---|---|---|---|---|---|---|---|");
    println!("{}", warm.row());
    if cold_runs > 0 {
        println!("{}", cold.row());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("setup") => {
            let dir = args
                .get(1)
                .ok_or_else(|| anyhow::anyhow!("usage: restart setup DIR N"))?;
            let n = args.get(2).map_or(Ok(100), |v| v.parse())?;
            rt.block_on(setup(Path::new(dir), n))
        }
        Some("open") => {
            let dir = args
                .get(1)
                .ok_or_else(|| anyhow::anyhow!("usage: restart open DIR"))?;
            rt.block_on(open(Path::new(dir)))
        }
        _ => driver(&args),
    }
}
