//! WASI's waiting functions, replaced so that no guest holds a thread past its deadline and
//! an invocation can run on an async runtime thread.
//!
//! wasmtime-wasi's synchronous bindings run `wasi:io/poll` (`poll`, `pollable.block`,
//! `pollable.ready`) and `wasi:io/streams` (`blocking-*`, and the streams' destructors)
//! by blocking on tokio. That has two problems:
//!
//! - Epoch interruption only stops a guest running wasm code; a guest waiting in a host
//!   call (`std::thread::sleep` is a monotonic-clock pollable and a `block`) would hold
//!   its thread and pool slot for as long as it asked.
//! - Blocking on tokio panics on a runtime thread, so an invocation could not run on the
//!   request's own thread, even though the waits it meets in practice (a panic message or a
//!   print to the captured stdio pipes) are ready at once.
//!
//! So every such function first polls its future once: ready (stdio pipes always are)
//! means no blocking at all. Otherwise an invocation that may wait (the default: it runs
//! on a blocking thread, or on a send thread, which first hands its other tasks on) waits
//! on tokio until its deadline, past which the call traps as
//! an interrupt (`deadline_exceeded`); one that may not ([`HostState::may_wait`] is false
//! for invocations run on a request thread) traps at once with [`NO_WAITING`].

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::bindings::sync::io::streams::{self, InputStream, OutputStream};
use wasmtime_wasi::p2::StreamResult;
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};
use wasmtime_wasi_io::poll::DynPollable;

use super::wt;
use crate::runtime::host::HostState;

/// The `wasi:io/poll` instance as the WASI bindings name it (guests importing any 0.2.x
/// match it).
const WASI_POLL: &str = "wasi:io/poll@0.2.12";
/// The `wasi:io/streams` instance, likewise.
const WASI_STREAMS: &str = "wasi:io/streams@0.2.12";

/// Why a wait trapped on a thread that may not block.
pub const NO_WAITING: &str =
    "this plugin runs on the request's thread and may not wait (sleep, poll or block on I/O)";

/// What a wait may do: the invocation's rules, borrowed beside its resource table.
struct Waits<'a> {
    may_wait: bool,
    deadline: Instant,
    rt: &'a tokio::runtime::Handle,
}

/// The resource table and the wait rules of `state`, borrowed apart.
fn split(state: &mut HostState) -> (&mut ResourceTable, Waits<'_>) {
    let waits = Waits {
        may_wait: state.may_wait,
        deadline: state.deadline,
        rt: &state.services.rt,
    };
    (&mut state.table, waits)
}

/// Runs `fut` to completion within the invocation's rules (see the module).
fn settle<F: Future>(w: Waits<'_>, fut: F) -> wasmtime::Result<F::Output> {
    let mut fut = std::pin::pin!(fut);
    // In the runtime's context: a WASI future may touch tokio's timer or reactor, and the
    // calling thread (a plain thread of an embedder, say) need not be in it already.
    let entered = w.rt.enter();
    if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return Ok(out);
    }
    drop(entered);
    if !w.may_wait {
        return Err(wasmtime::Error::msg(NO_WAITING));
    }
    let left = w.deadline.saturating_duration_since(Instant::now());
    let wait = || w.rt.block_on(tokio::time::timeout(left, fut));
    // On a worker of a multi-threaded runtime (the send threads) blocking on tokio is
    // allowed only once the worker has handed its other tasks to another thread; anywhere
    // else (a blocking-pool thread, a plain thread) it is allowed as it is.
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let waited = if on_worker {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    };
    match waited {
        Ok(out) => Ok(out),
        Err(_) => Err(wasmtime::Trap::Interrupt.into()),
    }
}

/// A stream operation's result as the guest sees it: a stream error becomes the WIT
/// `stream-error` (an `error` resource for a failed operation); a trap stays a trap.
fn to_guest<T>(
    table: &mut ResourceTable,
    r: StreamResult<T>,
) -> wasmtime::Result<(Result<T, streams::StreamError>,)> {
    Ok((match r {
        Ok(v) => Ok(v),
        Err(e) => Err(streams::Host::convert_stream_error(table, e)?),
    },))
}

/// Settles a stream future that borrows the table, then converts its result.
macro_rules! stream_call {
    ($store:ident, |$table:ident| $fut:expr) => {{
        let ($table, waits) = split($store.data_mut());
        let r = settle(waits, $fut)?;
        to_guest(&mut $store.data_mut().table, r)
    }};
}

/// Shadows WASI's waiting functions with the versions above; call after linking WASI.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL).map_err(wt)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, HostState>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let (table, waits) = split(store.data_mut());
            settle(waits, table.poll(pollables))?.map(|r| (r,))
        },
    )
    .map_err(wt)?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let (table, waits) = split(store.data_mut());
            settle(waits, table.block(pollable))?
        },
    )
    .map_err(wt)?;
    poll.func_wrap(
        "[method]pollable.ready",
        |mut store: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let (table, waits) = split(store.data_mut());
            settle(waits, table.ready(pollable))?.map(|r| (r,))
        },
    )
    .map_err(wt)?;

    let mut s = linker.instance(WASI_STREAMS).map_err(wt)?;
    s.resource(
        "output-stream",
        ResourceType::host::<OutputStream>(),
        |mut store, rep| {
            let (table, waits) = split(store.data_mut());
            settle(waits, AsyncOutput::drop(table, Resource::new_own(rep)))?
        },
    )
    .map_err(wt)?;
    s.resource(
        "input-stream",
        ResourceType::host::<InputStream>(),
        |mut store, rep| {
            let (table, waits) = split(store.data_mut());
            settle(waits, AsyncInput::drop(table, Resource::new_own(rep)))?
        },
    )
    .map_err(wt)?;
    s.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, bytes): (Resource<OutputStream>, Vec<u8>)| {
            stream_call!(store, |t| AsyncOutput::blocking_write_and_flush(
                t, stream, bytes
            ))
        },
    )
    .map_err(wt)?;
    s.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, len): (Resource<OutputStream>, u64)| {
            stream_call!(store, |t| AsyncOutput::blocking_write_zeroes_and_flush(
                t, stream, len
            ))
        },
    )
    .map_err(wt)?;
    s.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, HostState>, (stream,): (Resource<OutputStream>,)| {
            stream_call!(store, |t| AsyncOutput::blocking_flush(t, stream))
        },
    )
    .map_err(wt)?;
    s.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, HostState>,
         (dst, src, len): (Resource<OutputStream>, Resource<InputStream>, u64)| {
            stream_call!(store, |t| AsyncOutput::blocking_splice(t, dst, src, len))
        },
    )
    .map_err(wt)?;
    s.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, HostState>, (stream, len): (Resource<InputStream>, u64)| {
            stream_call!(store, |t| AsyncInput::blocking_read(t, stream, len))
        },
    )
    .map_err(wt)?;
    s.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: StoreContextMut<'_, HostState>, (stream, len): (Resource<InputStream>, u64)| {
            stream_call!(store, |t| AsyncInput::blocking_skip(t, stream, len))
        },
    )
    .map_err(wt)?;
    linker.allow_shadowing(false);
    Ok(())
}
