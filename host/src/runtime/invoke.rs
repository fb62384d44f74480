//! One invocation: a fresh `Store` and instance from the cached `InstancePre`, the kind's
//! limits, the call, and a report of what it cost. Nothing survives the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::{Instance, InstancePre, ResourceTable};
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::bindings::exports::{adapter, flow, journey, personalize};
use super::bindings::{channel_adapter, chatbot_flow, journey_rule, personalization, types};
use super::exports::Exports;
use super::host::{
    HostState, Installation, Limiter, LogLine, MemoryLimitExceeded, Services, STDIO_CAPTURE_BYTES,
};
use crate::config::KindLimits;
use crate::kind::PluginKind;

/// A compiled, linked plugin, ready to instantiate: the generated bindings' pre for its
/// kind's world, and its export functions found once.
#[derive(Clone)]
pub struct KindPre {
    /// The generated bindings' pre.
    pub bindings: Bindings,
    exports: Arc<Exports>,
}

/// The generated bindings' pre of each kind's world.
#[derive(Clone)]
pub enum Bindings {
    /// A journey rule.
    JourneyRule(journey_rule::JourneyRulePre<HostState>),
    /// A personalizer.
    Personalization(personalization::PersonalizationPre<HostState>),
    /// A channel adapter.
    ChannelAdapter(channel_adapter::ChannelAdapterPre<HostState>),
    /// A chatbot flow.
    ChatbotFlow(chatbot_flow::ChatbotFlowPre<HostState>),
}

impl KindPre {
    /// Wraps a generated pre, finding the kind's export functions in its component.
    pub fn new(bindings: Bindings) -> wasmtime::Result<KindPre> {
        let exports = Exports::new(bindings.instance_pre(), bindings.kind())?;
        Ok(KindPre {
            bindings,
            exports: Arc::new(exports),
        })
    }

    /// The kind this pre was checked against.
    pub fn kind(&self) -> PluginKind {
        self.bindings.kind()
    }

    /// Type-checks every export on the first instance of this pre (see [`Exports`]);
    /// later instances skip it.
    fn check_once(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<()> {
        if !self.exports.checked() {
            self.bindings.check_exports(store, instance)?;
            self.exports.mark_checked();
        }
        Ok(())
    }

    /// Whether an instance of this pre has type-checked every export, so that later
    /// invocations call theirs by index (see [`Exports`]).
    pub fn exports_checked(&self) -> bool {
        self.exports.checked()
    }

    /// The engine the component was compiled for.
    pub fn engine(&self) -> &wasmtime::Engine {
        self.bindings.instance_pre().engine()
    }
}

impl Bindings {
    /// The kind of the world.
    pub fn kind(&self) -> PluginKind {
        match self {
            Bindings::JourneyRule(_) => PluginKind::JourneyRule,
            Bindings::Personalization(_) => PluginKind::Personalization,
            Bindings::ChannelAdapter(_) => PluginKind::ChannelAdapter,
            Bindings::ChatbotFlow(_) => PluginKind::ChatbotFlow,
        }
    }

    /// Type-checks every export of the kind's interface in `instance` against the
    /// generated bindings' signatures (their `Indices::load`).
    pub fn check_exports(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<()> {
        match self {
            Bindings::JourneyRule(p) => {
                journey_rule::JourneyRuleIndices::new(p.instance_pre())?.load(store, instance)?;
            }
            Bindings::Personalization(p) => {
                personalization::PersonalizationIndices::new(p.instance_pre())?
                    .load(store, instance)?;
            }
            Bindings::ChannelAdapter(p) => {
                channel_adapter::ChannelAdapterIndices::new(p.instance_pre())?
                    .load(store, instance)?;
            }
            Bindings::ChatbotFlow(p) => {
                chatbot_flow::ChatbotFlowIndices::new(p.instance_pre())?.load(store, instance)?;
            }
        }
        Ok(())
    }

    /// The linked component, without the generated bindings.
    pub fn instance_pre(&self) -> &InstancePre<HostState> {
        match self {
            Bindings::JourneyRule(p) => p.instance_pre(),
            Bindings::Personalization(p) => p.instance_pre(),
            Bindings::ChannelAdapter(p) => p.instance_pre(),
            Bindings::ChatbotFlow(p) => p.instance_pre(),
        }
    }
}

/// A call into a plugin. As JSON: `{"call": "<name>", "input": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", content = "input", rename_all = "kebab-case")]
pub enum Call {
    /// `journey.describe`.
    JourneyDescribe,
    /// `journey.step`.
    JourneyStep(journey::StepInput),
    /// `personalize.decide`.
    PersonalizeDecide {
        /// The page view.
        req: personalize::Request,
        /// The tenant's catalog, shared: the host prepares it once per settings change.
        /// In JSON, `candidates`: a list of `{id, score, category, tags}`.
        #[serde(rename = "candidates", with = "super::catalog::as_candidates")]
        catalog: Arc<super::catalog::Catalog>,
    },
    /// `adapter.capabilities`.
    AdapterCapabilities,
    /// `adapter.send`.
    AdapterSend(adapter::OutboundMessage),
    /// `adapter.handle-webhook`.
    AdapterHandleWebhook(adapter::HttpRequest),
    /// `adapter.refresh-credentials`.
    AdapterRefreshCredentials,
    /// `flow.describe`.
    FlowDescribe,
    /// `flow.turn`.
    FlowTurn {
        /// The session.
        session: flow::Session,
        /// Why the turn runs.
        trigger: flow::TurnTrigger,
    },
}

impl Call {
    /// The kind that exports this call.
    pub fn kind(&self) -> PluginKind {
        match self {
            Call::JourneyDescribe | Call::JourneyStep(_) => PluginKind::JourneyRule,
            Call::PersonalizeDecide { .. } => PluginKind::Personalization,
            Call::AdapterCapabilities
            | Call::AdapterSend(_)
            | Call::AdapterHandleWebhook(_)
            | Call::AdapterRefreshCredentials => PluginKind::ChannelAdapter,
            Call::FlowDescribe | Call::FlowTurn { .. } => PluginKind::ChatbotFlow,
        }
    }

    /// The WIT function name.
    pub fn name(&self) -> &'static str {
        match self {
            Call::JourneyDescribe => "describe",
            Call::JourneyStep(_) => "step",
            Call::PersonalizeDecide { .. } => "decide",
            Call::AdapterCapabilities => "capabilities",
            Call::AdapterSend(_) => "send",
            Call::AdapterHandleWebhook(_) => "handle-webhook",
            Call::AdapterRefreshCredentials => "refresh-credentials",
            Call::FlowDescribe => "describe",
            Call::FlowTurn { .. } => "turn",
        }
    }

    /// Whether this is the kind's main call (the long deadline), not an auxiliary one.
    pub fn is_main(&self) -> bool {
        matches!(
            self,
            Call::JourneyStep(_)
                | Call::PersonalizeDecide { .. }
                | Call::AdapterSend(_)
                | Call::FlowTurn { .. }
        )
    }
}

/// What a plugin returned. As JSON: `{"call": "<name>", "output": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", content = "output", rename_all = "kebab-case")]
pub enum Output {
    /// `journey.describe`.
    JourneyDescribe(journey::Manifest),
    /// `journey.step`.
    JourneyStep(Result<Vec<journey::Command>, types::PluginError>),
    /// `personalize.decide`.
    PersonalizeDecide(Result<Vec<personalize::Decision>, types::PluginError>),
    /// `adapter.capabilities`.
    AdapterCapabilities(adapter::ChannelCapabilities),
    /// `adapter.send`.
    AdapterSend(Result<adapter::SendOk, adapter::SendError>),
    /// `adapter.handle-webhook`.
    AdapterHandleWebhook(Result<adapter::WebhookResult, adapter::WebhookError>),
    /// `adapter.refresh-credentials`.
    AdapterRefreshCredentials(Result<(), types::PluginError>),
    /// `flow.describe`.
    FlowDescribe(flow::FlowManifest),
    /// `flow.turn`.
    FlowTurn(Result<flow::TurnResult, types::PluginError>),
}

/// Why an invocation failed. Each case names the limit or fault.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq)]
/// As JSON the `code` field carries [`InvokeError::code`], e.g. `{"code": "deadline_exceeded", ...}`.
#[serde(tag = "code", rename_all = "snake_case")]
pub enum InvokeError {
    /// The wall-clock deadline passed.
    #[serde(rename = "deadline_exceeded")]
    #[error("deadline exceeded: the {deadline_ms} ms deadline passed after {elapsed_us} µs")]
    Deadline {
        /// The deadline.
        deadline_ms: u64,
        /// Time actually spent.
        elapsed_us: u64,
    },
    /// The guest grew memory past the kind's cap.
    #[serde(rename = "memory_limit_exceeded")]
    #[error(
        "memory limit exceeded: the plugin asked for {requested} bytes; the cap is {cap} bytes"
    )]
    MemoryLimit {
        /// Bytes requested.
        requested: usize,
        /// The cap.
        cap: usize,
    },
    /// The instruction budget ran out.
    #[error("instruction budget exhausted: the budget is {budget} instructions")]
    FuelExhausted {
        /// The budget.
        budget: u64,
    },
    /// The guest overflowed its stack (for example unbounded recursion).
    #[error("stack overflow: the plugin recursed too deeply")]
    StackOverflow,
    /// The guest panicked.
    #[error("plugin panicked: {message}")]
    Panic {
        /// The panic message from the guest's stderr.
        message: String,
    },
    /// Any other trap.
    #[error("plugin trapped: {message}")]
    Trap {
        /// The trap description.
        message: String,
    },
    /// The output is larger than the kind allows.
    #[error("output too large: {size} bytes exceeds the {max}-byte limit")]
    OutputTooLarge {
        /// Output size in bytes of JSON.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The input is larger than the kind allows.
    #[error("input too large: {size} bytes exceeds the {max}-byte limit")]
    InputTooLarge {
        /// Input size in bytes of JSON.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The call does not belong to the plugin's kind.
    #[error("`{call}` is not a function of {kind} plugins")]
    WrongKind {
        /// The call.
        call: String,
        /// The plugin's kind.
        kind: PluginKind,
    },
    /// Every pooled instance slot is busy.
    #[error("all instance slots are busy; retry shortly")]
    PoolExhausted,
}

impl InvokeError {
    /// A short stable code for records and APIs.
    pub fn code(&self) -> &'static str {
        match self {
            InvokeError::Deadline { .. } => "deadline_exceeded",
            InvokeError::MemoryLimit { .. } => "memory_limit_exceeded",
            InvokeError::FuelExhausted { .. } => "fuel_exhausted",
            InvokeError::StackOverflow => "stack_overflow",
            InvokeError::Panic { .. } => "panic",
            InvokeError::Trap { .. } => "trap",
            InvokeError::OutputTooLarge { .. } => "output_too_large",
            InvokeError::InputTooLarge { .. } => "input_too_large",
            InvokeError::WrongKind { .. } => "wrong_kind",
            InvokeError::PoolExhausted => "pool_exhausted",
        }
    }
}

/// What one invocation cost and printed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Wall time of instantiate + call, in microseconds.
    pub duration_us: u64,
    /// Instructions (fuel units) used. A lower bound for a call stopped at its deadline:
    /// compiled code keeps a running loop's count in a register and stores it only at
    /// calls and returns, which an epoch interrupt does not reach (a guest spinning for
    /// 100 ms reports a few thousand).
    pub instructions: u64,
    /// Peak linear memory, in bytes.
    pub peak_memory_bytes: usize,
    /// Host calls made.
    pub hostcalls: u32,
    /// Lines logged through `weft:plugin/log`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub logs: Vec<LogLine>,
    /// Log lines dropped past the per-invocation cap.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub logs_dropped: u32,
    /// Captured stdout (at most 4 KiB).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub stdout: String,
    /// Captured stderr (at most 4 KiB).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub stderr: String,
    /// Outbound HTTP requests made through `outbound-http` (the first
    /// [`MAX_RECORDED_HTTP_CALLS`]), refused ones included.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub http_calls: Vec<HttpCall>,
}

/// Outbound requests recorded per invocation: an adapter send makes one to three.
pub const MAX_RECORDED_HTTP_CALLS: usize = 16;

/// One outbound HTTP request as the invocation record shows it. The query string is left out:
/// providers such as the Graph API carry access tokens there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpCall {
    /// Method.
    pub method: String,
    /// Scheme, host, port and path.
    pub url: String,
    /// The response status, if one came.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    /// Why there was no response (refused by the host, timeout, transport).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Wall time, microseconds.
    pub duration_us: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The result of an invocation plus its report.
#[derive(Debug)]
pub struct Invocation {
    /// The plugin's output, or why there is none.
    pub result: Result<Output, InvokeError>,
    /// Cost and captured output.
    pub report: Report,
}

/// Fuel given when the kind has no budget: effectively unlimited, still metered.
const UNMETERED_FUEL: u64 = i64::MAX as u64;

/// Runs one call on a fresh instance. Blocking: call it from a blocking thread.
pub fn invoke(
    services: &Arc<Services>,
    pre: &KindPre,
    installation: &Arc<Installation>,
    limits: &KindLimits,
    call: Call,
) -> Invocation {
    invoke_with(services, pre, installation, limits, call, true)
}

/// [`invoke`], where `may_wait` false makes a WASI wait that is not ready at once trap
/// instead of blocking the thread: for an invocation on an async runtime thread.
///
/// A channel adapter runs on a fiber (its `outbound-http.send` is async), driven to the
/// end on this thread by [`block_on`]; [`invoke_async`] is the same call as a future.
pub fn invoke_with(
    services: &Arc<Services>,
    pre: &KindPre,
    installation: &Arc<Installation>,
    limits: &KindLimits,
    call: Call,
    may_wait: bool,
) -> Invocation {
    if let Some(refused) = wrong_kind(pre, &call) {
        return refused;
    }
    let mut started = Started::new(services, pre, installation, limits, &call);
    started.store.data_mut().may_wait = may_wait;
    let raw = if pre.kind() == PluginKind::ChannelAdapter {
        // The adapter's HTTP client runs on the server's runtime: entering it lets the
        // fiber's requests register with its reactor while this thread waits.
        let _runtime = services.rt.enter();
        block_on(call_adapter(&mut started.store, pre, call))
    } else {
        call_plugin(&mut started.store, pre, call)
    };
    started.finish(raw, installation, limits)
}

/// [`invoke`] of a channel adapter call as a future: the guest runs on a fiber, and while
/// it waits for a provider (`outbound-http.send`) the future is pending and holds no
/// thread. Poll it on a thread that may block briefly (its other host calls read the
/// store) inside the server's runtime context. A call of another kind runs to the end
/// within its first poll.
pub async fn invoke_async(
    services: &Arc<Services>,
    pre: &KindPre,
    installation: &Arc<Installation>,
    limits: &KindLimits,
    call: Call,
) -> Invocation {
    if let Some(refused) = wrong_kind(pre, &call) {
        return refused;
    }
    let mut started = Started::new(services, pre, installation, limits, &call);
    let raw = if pre.kind() == PluginKind::ChannelAdapter {
        call_adapter(&mut started.store, pre, call).await
    } else {
        call_plugin(&mut started.store, pre, call)
    };
    started.finish(raw, installation, limits)
}

/// An invocation under way: its store, and what its report needs.
struct Started {
    store: Store<HostState>,
    start: Instant,
    deadline: Duration,
    budget: u64,
}

/// The refusal of a call made to a plugin of another kind.
fn wrong_kind(pre: &KindPre, call: &Call) -> Option<Invocation> {
    (call.kind() != pre.kind()).then(|| Invocation {
        result: Err(InvokeError::WrongKind {
            call: call.name().to_string(),
            kind: pre.kind(),
        }),
        report: Report::default(),
    })
}

impl Started {
    /// The store for `call`, its deadline starting now.
    fn new(
        services: &Arc<Services>,
        pre: &KindPre,
        installation: &Arc<Installation>,
        limits: &KindLimits,
        call: &Call,
    ) -> Started {
        let start = Instant::now();
        let deadline = Duration::from_millis(if call.is_main() {
            limits.deadline_ms
        } else {
            limits.aux_deadline_ms
        });
        Started {
            store: new_store(services, pre, installation, limits, start, deadline),
            start,
            deadline,
            budget: limits.fuel.unwrap_or(UNMETERED_FUEL),
        }
    }

    /// The report of the finished call, and its checked output or classified error.
    fn finish(
        mut self,
        raw: wasmtime::Result<Output>,
        installation: &Installation,
        limits: &KindLimits,
    ) -> Invocation {
        let elapsed = self.start.elapsed();
        let fuel_left = self.store.get_fuel().unwrap_or(0);
        let data = self.store.data_mut();
        let mut report = Report {
            duration_us: elapsed.as_micros() as u64,
            instructions: self.budget.saturating_sub(fuel_left),
            peak_memory_bytes: data.limiter.peak_memory,
            hostcalls: data.hostcalls,
            logs: std::mem::take(&mut data.logs),
            logs_dropped: data.logs_dropped,
            http_calls: std::mem::take(&mut data.http_calls),
            stdout: String::new(),
            stderr: String::new(),
        };
        report.stdout = String::from_utf8_lossy(&data.stdout.contents()).into_owned();
        report.stderr = String::from_utf8_lossy(&data.stderr.contents()).into_owned();
        if !report.stdout.is_empty() || !report.stderr.is_empty() {
            let (tenant, plugin) = (&installation.tenant, &installation.plugin);
            tracing::info!(target: "weft::plugin", %tenant, %plugin, stdout = %report.stdout.trim_end(), stderr = %report.stderr.trim_end(), "plugin output");
        }
        let result = match raw {
            Ok(out) => check_output(out, limits.max_output_bytes),
            Err(e) => Err(classify(e, &report, self.deadline, elapsed, self.budget)),
        };
        Invocation { result, report }
    }
}

/// Polls `fut` to the end on this thread, parking between wake-ups. For futures whose
/// I/O another thread drives (the server's runtime): a channel adapter's invocation, or
/// a delivery pass's sends.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    /// Wakes the parked thread.
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake-up that came before the park returns at once; a spurious one re-polls.
        std::thread::park();
    }
}

/// The `Store` of one invocation, built exactly as [`invoke`] builds it: a fresh WASI
/// context with captured stdio, the kind's memory, table and resource limits, the fuel
/// budget, an epoch deadline of `deadline` from `start`, and the host-call byte budget.
/// Public so that benchmarks can time instantiation and calls without the rest of `invoke`.
pub fn new_store(
    services: &Arc<Services>,
    pre: &KindPre,
    installation: &Arc<Installation>,
    limits: &KindLimits,
    start: Instant,
    deadline: Duration,
) -> Store<HostState> {
    let stdout = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
    let stderr = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.max_resources);
    let state = HostState {
        wasi: None,
        table,
        limiter: Limiter {
            max_memory: limits.memory_bytes,
            max_table_elements: limits.max_table_elements,
            peak_memory: 0,
            memory_exceeded: None,
        },
        installation: installation.clone(),
        services: services.clone(),
        space: installation.space(),
        logs: Vec::new(),
        logs_dropped: 0,
        deadline: start + deadline,
        stdout,
        stderr,
        hostcalls: 0,
        http_calls: Vec::new(),
        may_wait: true,
    };
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|s| &mut s.limiter);
    let _ = store.set_fuel(limits.fuel.unwrap_or(UNMETERED_FUEL));
    // Compare the real deadline at every epoch tick instead of counting ticks: each tick
    // of the ticker thread oversleeps, and a deadline counted in ticks overshot by ~7% idle
    // and 10-20% on a loaded box. A guest now stops at the first tick past its deadline.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|s| {
        Ok(if Instant::now() >= s.data().deadline {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Continue(1)
        })
    });
    store.set_hostcall_fuel(limits.hostcall_bytes);
    store
}

/// Instantiates `pre` in `store` and makes `call`. The first instance of a pre has every
/// export type-checked by the generated bindings; every call then fetches only its own
/// function (see [`Exports`]).
fn call_plugin(
    store: &mut Store<HostState>,
    pre: &KindPre,
    call: Call,
) -> wasmtime::Result<Output> {
    let instance = pre.bindings.instance_pre().instantiate(&mut *store)?;
    pre.check_once(store, &instance)?;
    let e = &pre.exports;
    let name = call.name();
    let store = &mut *store;
    Ok(match call {
        Call::JourneyDescribe => {
            let (m,): (journey::Manifest,) = e.call(store, &instance, name, ())?;
            Output::JourneyDescribe(m)
        }
        Call::JourneyStep(input) => {
            let (r,): (Result<Vec<journey::Command>, types::PluginError>,) =
                e.call(store, &instance, name, (&input,))?;
            Output::JourneyStep(r)
        }
        Call::PersonalizeDecide { req, catalog } => {
            let (r,): (Result<Vec<personalize::Decision>, types::PluginError>,) =
                e.call(store, &instance, name, (&req, &*catalog))?;
            Output::PersonalizeDecide(r)
        }
        Call::AdapterCapabilities
        | Call::AdapterSend(_)
        | Call::AdapterHandleWebhook(_)
        | Call::AdapterRefreshCredentials => {
            return Err(wasmtime::format_err!(
                "a channel adapter call runs on a fiber (call_adapter)"
            ))
        }
        Call::FlowDescribe => {
            let (m,): (flow::FlowManifest,) = e.call(store, &instance, name, ())?;
            Output::FlowDescribe(m)
        }
        Call::FlowTurn { session, trigger } => {
            let (r,): (Result<flow::TurnResult, types::PluginError>,) =
                e.call(store, &instance, name, (&session, &trigger))?;
            Output::FlowTurn(r)
        }
    })
}

/// [`call_plugin`] for a channel adapter, on a fiber: its `outbound-http.send` suspends
/// the guest instead of blocking a thread. Every epoch tick before the deadline yields,
/// so guests sharing a thread take turns.
async fn call_adapter(
    store: &mut Store<HostState>,
    pre: &KindPre,
    call: Call,
) -> wasmtime::Result<Output> {
    store.epoch_deadline_callback(|s| {
        Ok(if Instant::now() >= s.data().deadline {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Yield(1)
        })
    });
    let instance = pre
        .bindings
        .instance_pre()
        .instantiate_async(&mut *store)
        .await?;
    pre.check_once(store, &instance)?;
    let e = &pre.exports;
    let name = call.name();
    let store = &mut *store;
    Ok(match call {
        Call::AdapterCapabilities => {
            let (c,): (adapter::ChannelCapabilities,) =
                e.call_async(store, &instance, name, ()).await?;
            Output::AdapterCapabilities(c)
        }
        Call::AdapterSend(m) => {
            let (r,): (Result<adapter::SendOk, adapter::SendError>,) =
                e.call_async(store, &instance, name, (&m,)).await?;
            Output::AdapterSend(r)
        }
        Call::AdapterHandleWebhook(req) => {
            let (r,): (Result<adapter::WebhookResult, adapter::WebhookError>,) =
                e.call_async(store, &instance, name, (&req,)).await?;
            Output::AdapterHandleWebhook(r)
        }
        Call::AdapterRefreshCredentials => {
            let (r,): (Result<(), types::PluginError>,) =
                e.call_async(store, &instance, name, ()).await?;
            Output::AdapterRefreshCredentials(r)
        }
        other => {
            return Err(wasmtime::format_err!(
                "`{}` is not a channel adapter call",
                other.name()
            ))
        }
    })
}

/// A `Write` that only counts bytes, to size outputs without allocating.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Size of `v` as JSON, in bytes.
pub fn json_size<T: Serialize>(v: &T) -> usize {
    let mut c = Counter(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

fn check_output(out: Output, max: usize) -> Result<Output, InvokeError> {
    let size = json_size(&out);
    if size > max {
        return Err(InvokeError::OutputTooLarge { size, max });
    }
    Ok(out)
}

fn classify(
    e: wasmtime::Error,
    report: &Report,
    deadline: Duration,
    elapsed: Duration,
    budget: u64,
) -> InvokeError {
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return InvokeError::MemoryLimit {
            requested: m.requested,
            cap: m.cap,
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => InvokeError::Deadline {
                deadline_ms: deadline.as_millis() as u64,
                elapsed_us: elapsed.as_micros() as u64,
            },
            Trap::OutOfFuel => InvokeError::FuelExhausted { budget },
            Trap::StackOverflow => InvokeError::StackOverflow,
            Trap::UnreachableCodeReached if report.stderr.contains("panicked") => {
                InvokeError::Panic {
                    message: panic_message(&report.stderr),
                }
            }
            other => InvokeError::Trap {
                message: other.to_string(),
            },
        };
    }
    if e.is::<wasmtime::PoolConcurrencyLimitError>() {
        return InvokeError::PoolExhausted;
    }
    // A wait refused on a request thread: its own message, not the backtrace around it.
    if e.chain()
        .any(|c| c.to_string() == super::capabilities::NO_WAITING)
    {
        return InvokeError::Trap {
            message: super::capabilities::NO_WAITING.to_string(),
        };
    }
    // Host-side failures during a host call (a trap raised by a capability).
    let message = format!("{e}");
    InvokeError::Trap { message }
}

/// The guest's panic line from its stderr (`panicked at src/lib.rs:3:5:\n<message>`).
fn panic_message(stderr: &str) -> String {
    let s = stderr.trim();
    let s = s.split_once("panicked at ").map_or(s, |(_, rest)| rest);
    let one_line: String = s.lines().take(3).collect::<Vec<_>>().join(" ");
    super::capabilities::truncate_for_record(one_line)
}

#[cfg(test)]
mod tests {
    use super::InvokeError;

    #[test]
    fn error_json_code_matches_code() {
        let all = [
            InvokeError::Deadline {
                deadline_ms: 1,
                elapsed_us: 2,
            },
            InvokeError::MemoryLimit {
                requested: 1,
                cap: 2,
            },
            InvokeError::FuelExhausted { budget: 1 },
            InvokeError::StackOverflow,
            InvokeError::Panic {
                message: "m".into(),
            },
            InvokeError::Trap {
                message: "m".into(),
            },
            InvokeError::OutputTooLarge { size: 1, max: 2 },
            InvokeError::InputTooLarge { size: 1, max: 2 },
            InvokeError::PoolExhausted,
        ];
        for e in all {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["code"], e.code(), "{v}");
        }
    }
}
