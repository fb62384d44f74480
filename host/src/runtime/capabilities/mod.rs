//! Host capabilities, one module each. [`add_weft`] and [`add_wasi_subset`] are the only
//! places that link anything into a plugin's world.
//!
//! Every host function has two result layers: the outer `wasmtime::Result` is a trap (the
//! invocation's deadline passed during the call, a host bug), the inner `result` is a typed
//! `capability-error` the guest handles (not allowed, a limit, a bad argument).

mod clock;
mod config;
pub(crate) use config::settings_key;
pub(crate) use state::installation_state_key;
mod crypto;
mod log;
pub(crate) mod outbound_http;
mod profile_store;
mod state;
mod waits;
pub use waits::NO_WAITING;

use wasmtime::component::{HasData, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings as wasi;
use wasmtime_wasi::random::WasiRandom;

use super::bindings::caps::weft::plugin as weft;
use super::bindings::types::CapabilityError;
use super::host::HostState;
use crate::kind::PluginKind;

/// Links the `weft:plugin` interfaces granted to `kind`.
pub fn add_weft(linker: &mut Linker<HostState>, kind: PluginKind) -> anyhow::Result<()> {
    let l = linker;
    fn g(t: &mut HostState) -> &mut HostState {
        t
    }
    weft::profile_store::add_to_linker::<HostState, HasSelf<HostState>>(l, g).map_err(wt)?;
    weft::state::add_to_linker::<HostState, HasSelf<HostState>>(l, g).map_err(wt)?;
    weft::config::add_to_linker::<HostState, HasSelf<HostState>>(l, g).map_err(wt)?;
    weft::clock::add_to_linker::<HostState, HasSelf<HostState>>(l, g).map_err(wt)?;
    weft::log::add_to_linker::<HostState, HasSelf<HostState>>(l, g).map_err(wt)?;
    if kind.has_network() {
        weft::crypto::add_to_linker::<HostState, HasSelf<HostState>>(l, g).map_err(wt)?;
        weft::outbound_http::add_to_linker::<HostState, HasSelf<HostState>>(l, g).map_err(wt)?;
    }
    Ok(())
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links the WASI subset every kind gets: io, cli stdio/environment/exit, clocks, random.
/// Filesystem, sockets and HTTP are deliberately absent.
pub fn add_wasi_subset(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    let l = linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<HostState, HasIo>(l, |t| {
        &mut t.table
    })
    .map_err(wt)?;
    wasi::sync::io::poll::add_to_linker::<HostState, HasIo>(l, |t| &mut t.table).map_err(wt)?;
    wasi::sync::io::streams::add_to_linker::<HostState, HasIo>(l, |t| &mut t.table).map_err(wt)?;
    waits::add_to_linker(l)?;
    wasi::clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)
        .map_err(wt)?;
    wasi::clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)
        .map_err(wt)?;
    wasi::random::random::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi().random())
        .map_err(wt)?;
    wasi::random::insecure::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi().random())
        .map_err(wt)?;
    wasi::random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi().random())
        .map_err(wt)?;
    wasi::cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli).map_err(wt)?;
    wasi::cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli).map_err(wt)?;
    wasi::cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli).map_err(wt)?;
    wasi::cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli).map_err(wt)?;
    wasi::cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli).map_err(wt)?;
    wasi::cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)
        .map_err(wt)?;
    wasi::cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)
        .map_err(wt)?;
    wasi::cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)
        .map_err(wt)?;
    wasi::cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)
        .map_err(wt)?;
    wasi::cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)
        .map_err(wt)?;
    Ok(())
}

/// Converts a wasmtime error into anyhow for plumbing.
pub(crate) fn wt(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// A `limit-exceeded` capability error.
pub(crate) fn limit(msg: impl Into<String>) -> CapabilityError {
    CapabilityError::LimitExceeded(msg.into())
}

/// An `invalid` capability error.
pub(crate) fn invalid(msg: impl Into<String>) -> CapabilityError {
    CapabilityError::Invalid(msg.into())
}

/// An `unavailable` capability error; the detail is logged, not shown to the guest.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> CapabilityError {
    tracing::warn!(error = %e, "capability backend failed");
    CapabilityError::Unavailable("storage temporarily unavailable".into())
}

impl HostState {
    /// Counts a host call; traps once the invocation's deadline has passed, so a guest
    /// spinning on host calls stops even between epoch checks.
    pub(crate) fn enter(&mut self) -> wasmtime::Result<()> {
        self.hostcalls += 1;
        if std::time::Instant::now() > self.deadline {
            return Err(wasmtime::Error::new(wasmtime::Trap::Interrupt));
        }
        Ok(())
    }
}

impl weft::types::Host for HostState {}

/// Truncates a guest-provided string for records (1,000 bytes).
pub(crate) fn truncate_for_record(s: String) -> String {
    log::truncate(s, crate::runtime::host::MAX_LOG_MESSAGE)
}
