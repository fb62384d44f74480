//! The `weft` command line: `serve`, `demo`, `tenant create`, and `plugin
//! new|run|upload|activate|rollback`. Flags fall back to `WEFT_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::kind::PluginKind;

/// Weft: a sandboxed WebAssembly extension runtime for customer-engagement platforms.
#[derive(Debug, Parser)]
#[command(name = "weft", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server on the embedded sled store.
    Serve(ServeArgs),
    /// Build the example plugins, serve with them installed for a demo tenant, and show
    /// what a first journey did.
    Demo(DemoArgs),
    /// Manage tenants on a running server.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Create, run and upload plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

/// Server options.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Listen address.
    #[arg(long, env = "WEFT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (sled database, blobs, compiled artifacts).
    #[arg(long, env = "WEFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, env = "WEFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Admin token; stored hashed. When absent on first start, one is generated and printed.
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// Demo options.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Listen address.
    #[arg(long, env = "WEFT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Demo data directory; wiped at start.
    #[arg(long, default_value = "./data/demo")]
    pub data_dir: PathBuf,
    /// Exit after the demo instead of serving.
    #[arg(long)]
    pub exit: bool,
    /// Skip building plugins; use the `.wasm` files already in this folder.
    #[arg(long)]
    pub plugins_dir: Option<PathBuf>,
}

/// Tenant commands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its id and keys.
    Create {
        /// Display name.
        #[arg(long, default_value = "unnamed")]
        name: String,
        /// Server URL.
        #[arg(long, env = "WEFT_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Admin token.
        #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
}

/// Plugin commands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a plugin crate that builds as it is.
    New {
        /// Plugin kind.
        kind: PluginKind,
        /// Crate name (lower-case, dashes).
        name: String,
        /// Parent directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path of the weft-guest SDK crate (defaults to this checkout's guest-sdk).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Run one invocation locally under the production limits.
    Run {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Plugin kind (default: the kind of each fixture's call).
        #[arg(long)]
        kind: Option<PluginKind>,
        /// Fixture JSON: `{"call": "...", "input": ..., "settings"?: ..., "profiles"?: [...], "http"?: [...], "expect"?: ...}` (exit 9 when the output differs from `expect`; `http`: provider answers instead of the network), or a directory: every `*.json` in it.
        #[arg(long)]
        input: PathBuf,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
        /// TOML configuration whose `[runtime]` limits to use instead of the defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Let `outbound-http` reach loopback and private addresses (a fake provider on
        /// 127.0.0.1); a server refuses them unless its operator allows them.
        #[arg(long)]
        allow_private_networks: bool,
    },
    /// Upload a version to a running server.
    Upload {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Plugin name.
        #[arg(long)]
        name: String,
        /// Version.
        #[arg(long)]
        version: String,
        /// Plugin kind.
        #[arg(long)]
        kind: PluginKind,
        /// Activate it after upload.
        #[arg(long)]
        activate: bool,
        /// Server URL.
        #[arg(long, env = "WEFT_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Tenant secret key.
        #[arg(long, env = "WEFT_KEY", hide_env_values = true)]
        key: String,
    },
    /// Activate a version on a running server.
    Activate {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
        /// Server URL.
        #[arg(long, env = "WEFT_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Tenant secret key.
        #[arg(long, env = "WEFT_KEY", hide_env_values = true)]
        key: String,
    },
    /// Roll back to the previously active version on a running server.
    Rollback {
        /// Plugin name.
        name: String,
        /// Server URL.
        #[arg(long, env = "WEFT_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Tenant secret key.
        #[arg(long, env = "WEFT_KEY", hide_env_values = true)]
        key: String,
    },
}

/// Loads the configuration: file, then flags/environment on top.
pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading config {}: {e}", p.display()))?;
            Config::from_toml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?
        }
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    Ok(config)
}

/// Runs the server until ctrl-c.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let app = crate::app::App::open(&config).await?;
    announce_admin(&app, args.admin_token.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.listen))?;
    println!("weft listening on http://{}", listener.local_addr()?);
    crate::api::serve(listener, app.state).await?;
    Ok(())
}

/// Stores the admin token and prints a generated one once.
pub async fn announce_admin(app: &crate::app::App, configured: Option<&str>) -> anyhow::Result<()> {
    match crate::tenants::ensure_admin_token(&app.state.db, configured).await? {
        crate::tenants::AdminToken::Generated(t) => {
            println!("admin token (shown once; set WEFT_ADMIN_TOKEN to choose your own): {t}")
        }
        crate::tenants::AdminToken::Configured => println!("admin token: from WEFT_ADMIN_TOKEN"),
        crate::tenants::AdminToken::Existing => {
            println!(
                "admin token: stored from an earlier start (set WEFT_ADMIN_TOKEN to replace it)"
            )
        }
    }
    Ok(())
}

/// `weft plugin run`.
pub async fn plugin_run(
    file: &Path,
    kind: Option<PluginKind>,
    input: &Path,
    json: bool,
    config: Option<&Path>,
    allow_private_networks: bool,
) -> anyhow::Result<i32> {
    let mut runtime = match config {
        Some(p) => Config::from_toml(&std::fs::read_to_string(p)?)?.runtime,
        None => Config::default().runtime,
    };
    runtime.allow_private_networks |= allow_private_networks;
    let plugin = match crate::runner::LocalPlugin::compile(file, runtime).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    if input.is_dir() {
        return run_fixture_dir(&plugin, kind, input, json).await;
    }
    let outcome = match plugin.run(kind, input).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        if let Some(out) = &outcome.output {
            let shown = crate::runner::printed(out)?;
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        for l in &outcome.report.logs {
            eprintln!("[plugin {}] {}", l.level, l.message);
        }
        for r in outcome.requests.iter().flatten() {
            eprintln!("[request] {} {} {}", r.method, r.url, r.body);
        }
        if !outcome.report.stderr.is_empty() {
            eprintln!("[plugin stderr] {}", outcome.report.stderr.trim_end());
        }
        eprintln!(
            "duration: {} µs, instructions: {}, peak memory: {} bytes, host calls: {}",
            outcome.report.duration_us,
            outcome.report.instructions,
            outcome.report.peak_memory_bytes,
            outcome.report.hostcalls
        );
    }
    if let Some(check) = &outcome.expect {
        match &check.difference {
            None => eprintln!("expect: met"),
            Some(d) => eprintln!("expect: not met: {d}"),
        }
    }
    if let Some(e) = &outcome.error {
        eprintln!("error: {e}");
    }
    Ok(outcome_code(&outcome))
}

/// The exit code of one run: the failed limit's, else 9 for a missed `expect`, else 0.
fn outcome_code(o: &crate::runner::RunOutcome) -> i32 {
    match (&o.error, &o.expect) {
        (Some(e), _) => crate::runner::exit_code(e),
        (None, Some(check)) if !check.met => crate::runner::EXPECT_NOT_MET,
        (None, _) => 0,
    }
}

/// `weft plugin run` on a directory: every `*.json` fixture in it, in name order, a line
/// each and a count, the component compiled once; the exit code is the first failed
/// fixture's (0 when all pass).
async fn run_fixture_dir(
    plugin: &crate::runner::LocalPlugin,
    kind: Option<PluginKind>,
    dir: &Path,
    json: bool,
) -> anyhow::Result<i32> {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    fixtures.sort();
    if fixtures.is_empty() {
        eprintln!("error: {} holds no *.json fixture", dir.display());
        return Ok(2);
    }
    let (mut first_code, mut failed, mut results) = (0, 0, Vec::new());
    for path in &fixtures {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (code, line, outcome) = match plugin.run(kind, path).await {
            Ok(o) => {
                let code = outcome_code(&o);
                let cost = format!(
                    "{} µs, {} instructions",
                    o.report.duration_us, o.report.instructions
                );
                let line = match (&o.error, &o.expect) {
                    (Some(e), _) => format!("FAILED (exit {code}): {e}"),
                    (None, Some(c)) if !c.met => format!(
                        "FAILED (exit {code}): expect not met: {}",
                        c.difference.as_deref().unwrap_or_default()
                    ),
                    (None, Some(_)) => format!("ok, expect met ({cost})"),
                    (None, None) => format!("ok, no expect ({cost})"),
                };
                (code, line, Some(o))
            }
            Err(e) => (2, format!("FAILED (exit 2): {e}"), None),
        };
        if code != 0 {
            failed += 1;
            if first_code == 0 {
                first_code = code;
            }
        }
        if json {
            results.push(serde_json::json!({"fixture": name, "exit": code, "outcome": outcome, "message": line}));
        } else {
            println!("{name}: {line}");
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    eprintln!(
        "{} fixtures: {} passed, {failed} failed",
        fixtures.len(),
        fixtures.len() - failed
    );
    Ok(first_code)
}

/// The repository root this binary was built from (for the demo and the scaffolder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The process's open-files limit (soft, hard); `None` if the system will not say.
#[cfg(target_os = "linux")]
fn open_files_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit)
}

/// Sets the process's open-files limit.
#[cfg(target_os = "linux")]
fn set_open_files_limit(limit: &libc::rlimit) -> std::io::Result<()> {
    // SAFETY: setrlimit only reads the struct it is given.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises the open-files limit to the hard limit, as a server should: a shell's default
/// soft limit (often 1,024) is below `[chat] max_sockets` (10,000), and past it every
/// accepted socket, and the store's own files (its committer opens a directory each
/// round), fail with "too many open files". Best effort: a failure keeps the limit as it
/// is, with a warning.
fn raise_open_files_limit() {
    #[cfg(target_os = "linux")]
    {
        let Some(limit) = open_files_limit().filter(|l| l.rlim_cur < l.rlim_max) else {
            return;
        };
        // Raising the soft limit up to the hard one needs no privilege.
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if let Err(error) = set_open_files_limit(&raised) {
            tracing::warn!(
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                %error,
                "could not raise the open-files limit; sockets past it will be refused"
            );
        }
    }
}

/// Descriptors the table is grown to hold at start (or the open-files limit, if lower):
/// the chat benchmark's 5,000 sockets with room to spare, for 128 KiB of table.
const FD_TABLE_PRESIZE: u64 = 16_384;

/// Grows the process's file-descriptor table now, before the server has threads, to hold
/// [`FD_TABLE_PRESIZE`] descriptors. Linux doubles the table when a descriptor past its end
/// is opened, and in a process with several threads the opener then waits for an RCU
/// grace period: 5-18 ms here, in whichever thread it was. As 5,000 chat sockets opened,
/// that was the accept loop and, at the same moments, the store's committer listing its
/// directory, so every commit waited too (BENCHMARKS.md, session 24). The kernel never
/// shrinks the table, so this is paid once, when nothing waits. Best effort: on any
/// failure the table grows as it would have.
fn presize_fd_table() {
    #[cfg(target_os = "linux")]
    {
        let Some(limit) = open_files_limit() else {
            return;
        };
        let Ok(highest) = i32::try_from(limit.rlim_cur.min(FD_TABLE_PRESIZE).saturating_sub(1))
        else {
            return;
        };
        let Ok(null) = std::fs::File::open("/dev/null") else {
            return;
        };
        use std::os::fd::AsRawFd;
        // SAFETY: these calls touch only descriptor `highest`, and only if `fcntl` finds it
        // closed (descriptors are handed out lowest first, and the server has no other
        // thread yet to open one); dup2 makes it a copy of /dev/null, closed at once.
        #[allow(unsafe_code)]
        unsafe {
            if highest > null.as_raw_fd()
                && libc::fcntl(highest, libc::F_GETFD) == -1
                && libc::dup2(null.as_raw_fd(), highest) == highest
            {
                libc::close(highest);
            }
        }
    }
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo and the runner print their own story; keep their logs to warnings.
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Plugin(_));
    crate::telemetry::init(if quiet { "warn" } else { "info" });
    if matches!(cli.command, Command::Serve(_) | Command::Demo(_)) {
        raise_open_files_limit();
        presize_fd_table();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve(a).await.map(|_| 0),
            Command::Demo(a) => crate::demo::run(a).await.map(|_| 0),
            Command::Tenant(TenantCommand::Create { name, url, admin_token }) => {
                crate::client::create_tenant(&url, &admin_token, &name).await.map(|_| 0)
            }
            Command::Plugin(PluginCommand::New { kind, name, dir, sdk_path }) => {
                let sdk = sdk_path.unwrap_or_else(|| repo_root().join("guest-sdk"));
                let path = crate::scaffold::new_plugin(kind, &name, &dir, &sdk)?;
                println!("created {} ({kind}); build it and run it on its sample calls (fixtures/):\n  cd {}\n  cargo build --release --target wasm32-wasip2", path.display(), path.display());
                println!("  {}", crate::scaffold::run_all_command(&name));
                Ok(0)
            }
            Command::Plugin(PluginCommand::Run { file, kind, input, json, config, allow_private_networks }) => {
                plugin_run(&file, kind, &input, json, config.as_deref(), allow_private_networks).await
            }
            Command::Plugin(PluginCommand::Upload { file, name, version, kind, activate, url, key }) => {
                crate::client::upload(&url, &key, &file, &name, &version, kind, activate).await.map(|_| 0)
            }
            Command::Plugin(PluginCommand::Activate { name, version, url, key }) => {
                crate::client::post(&url, &key, &format!("/v1/plugins/{name}/versions/{version}/activate")).await.map(|_| 0)
            }
            Command::Plugin(PluginCommand::Rollback { name, url, key }) => {
                crate::client::post(&url, &key, &format!("/v1/plugins/{name}/rollback")).await.map(|_| 0)
            }
        }
    })?;
    std::process::exit(code)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The `FDSize:` line of /proc/self/status: how many descriptors the table holds.
    fn fd_table_size() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    /// Held by the tests that change or read the open-files limit, which is per process.
    static LIMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let _held = LIMIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let get = || open_files_limit().expect("getrlimit");
        let before = get();
        // Start from a shell-like soft limit, below the hard one.
        let low = libc::rlimit {
            rlim_cur: before.rlim_max.min(1024),
            rlim_max: before.rlim_max,
        };
        set_open_files_limit(&low).expect("setrlimit");
        raise_open_files_limit();
        let after = get();
        assert_eq!(after.rlim_cur, before.rlim_max);
        assert_eq!(after.rlim_max, before.rlim_max);
    }

    #[test]
    fn presizing_grows_the_fd_table_to_the_open_files_limit_at_most() {
        let _held = LIMIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let want = open_files_limit()
            .expect("getrlimit")
            .rlim_cur
            .min(FD_TABLE_PRESIZE);
        presize_fd_table();
        let size = fd_table_size();
        assert!(
            size >= want,
            "the table holds {size} descriptors, want {want}"
        );
        // A second call finds the table grown and the descriptor free: nothing changes.
        presize_fd_table();
        assert_eq!(fd_table_size(), size);
    }
}
