//! The local runner behind `weft plugin run`: one invocation of a `.wasm` file under the
//! production limits, with no server, in a throwaway data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::SystemClock;
use crate::config::RuntimeConfig;
use crate::kind::PluginKind;
use crate::profiles::{self, IdentityRecord};
use crate::runtime::host::{Installation, Services, Settings};
use crate::runtime::{
    Call, CannedAnswer, CannedHttp, InvokeError, Output, Report, Runtime, SeenRequest,
};
use crate::store::{self, Space};

/// A fixture file: the call, plus optional settings and profiles to seed.
#[derive(Debug, Deserialize)]
pub struct Fixture {
    /// The call (`{"call": "...", "input": ...}` flattened into the fixture).
    #[serde(flatten)]
    pub call: Call,
    /// Settings of the installation (config, secrets, allowlist).
    #[serde(default)]
    pub settings: Option<Settings>,
    /// Profiles to create before the call.
    #[serde(default)]
    pub profiles: Vec<FixtureProfile>,
    /// Provider answers for the plugin's `outbound-http` requests, used instead of the
    /// network; each answers one request (see [`CannedAnswer`]). Without them a request
    /// goes to the network, as on a server.
    #[serde(default)]
    pub http: Option<Vec<CannedAnswer>>,
    /// A part of what the run prints (`{"call": ..., "output": ...}`, and `"requests": [...]`
    /// when the fixture has `http`) that the output must match: an object the keys it
    /// names, a list each item in order (as many as given), anything else exactly.
    /// `weft plugin run` exits 9 when the output differs.
    #[serde(default)]
    pub expect: Option<serde_json::Value>,
}

/// How the output compared with the fixture's `expect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectCheck {
    /// Whether the output matched.
    pub met: bool,
    /// The first difference, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<String>,
}

impl ExpectCheck {
    /// Compares `output` (what the run printed; `None` when the plugin failed) with
    /// `expect`.
    pub fn compare(expect: &serde_json::Value, output: Option<&serde_json::Value>) -> Self {
        let difference = match output {
            Some(actual) => first_difference(expect, actual, "output"),
            None => Some("the plugin failed, so there is no output to compare".into()),
        };
        ExpectCheck {
            met: difference.is_none(),
            difference,
        }
    }
}

/// The first place where `actual` does not match `expected` (see [`Fixture::expect`]),
/// named by its path from `at`.
fn first_difference(
    expected: &serde_json::Value,
    actual: &serde_json::Value,
    at: &str,
) -> Option<String> {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => want.iter().find_map(|(k, w)| {
            let here = format!("{at}.{k}");
            match got.get(k) {
                Some(g) => first_difference(w, g, &here),
                None => Some(format!("`{here}` is missing; expected {w}")),
            }
        }),
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => want
            .iter()
            .zip(got)
            .enumerate()
            .find_map(|(i, (w, g))| first_difference(w, g, &format!("{at}[{i}]"))),
        (Value::Array(want), Value::Array(got)) => Some(format!(
            "`{at}` has {} items; expected {}",
            got.len(),
            want.len()
        )),
        _ if expected == actual => None,
        _ => Some(format!("`{at}` is {actual}; expected {expected}")),
    }
}

/// A profile to seed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureProfile {
    /// Its identities.
    pub identities: Vec<IdentityRecord>,
    /// Its traits.
    #[serde(default)]
    pub traits: serde_json::Map<String, serde_json::Value>,
}

/// What a run printed.
#[derive(Debug, Serialize)]
pub struct RunOutcome {
    /// Whether the plugin returned.
    pub ok: bool,
    /// The output, if it returned (printed as [`printed`] shows it).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_printed"
    )]
    pub output: Option<Output>,
    /// The failure, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<InvokeError>,
    /// Time to validate and compile the component, in microseconds.
    pub compile_us: u64,
    /// Cost of the invocation.
    pub report: Report,
    /// The `outbound-http` requests the plugin made, when the fixture answers them (`http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<SeenRequest>>,
    /// The output against the fixture's `expect`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<ExpectCheck>,
}

/// Why a run could not start (as opposed to a plugin failure).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The component file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The fixture is not valid.
    #[error("invalid fixture {path}: {message}")]
    Fixture {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The component was refused.
    #[error("component refused: {0}")]
    Validation(#[from] crate::runtime::ValidationError),
    /// Host setup failed.
    #[error("{0:#}")]
    Setup(anyhow::Error),
}

/// Runs one invocation of `wasm` as `kind` with the fixture at `input`.
pub async fn run(
    wasm: &Path,
    kind: PluginKind,
    input: &Path,
    runtime_config: RuntimeConfig,
) -> Result<RunOutcome, RunError> {
    LocalPlugin::compile(wasm, runtime_config)
        .await?
        .run(Some(kind), input)
        .await
}

/// A component compiled once for local runs. Each [`run`](Self::run) gets its own
/// throwaway data directory and runtime, so fixtures never see each other's profiles or
/// state, and reuses the compiled code: a directory of fixtures compiles once.
pub struct LocalPlugin {
    /// The compiled component, serialized by a runtime with `config` in this process.
    artifact: Vec<u8>,
    compile_us: u64,
    config: RuntimeConfig,
}

impl std::fmt::Debug for LocalPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPlugin")
            .field("artifact_bytes", &self.artifact.len())
            .field("compile_us", &self.compile_us)
            .finish_non_exhaustive()
    }
}

impl LocalPlugin {
    /// Reads and compiles `wasm` (size, magic bytes, compilation; the kind's checks come
    /// with each run).
    pub async fn compile(wasm: &Path, config: RuntimeConfig) -> Result<LocalPlugin, RunError> {
        let bytes = std::fs::read(wasm).map_err(|source| RunError::Read {
            path: wasm.into(),
            source,
        })?;
        let (artifact, compile_us) = with_runtime(config.clone(), None, move |rt| {
            let t0 = std::time::Instant::now();
            let component = rt.compile_component(&bytes)?;
            let compile_us = t0.elapsed().as_micros() as u64;
            let artifact = component
                .serialize()
                .map_err(|e| RunError::Setup(anyhow::anyhow!("serializing the component: {e}")))?;
            Ok((artifact, compile_us))
        })
        .await?;
        Ok(LocalPlugin {
            artifact,
            compile_us,
            config,
        })
    }

    /// Runs the fixture at `input` as `kind` (default: the kind of the fixture's call).
    pub async fn run(
        &self,
        kind: Option<PluginKind>,
        input: &Path,
    ) -> Result<RunOutcome, RunError> {
        let fixture = read_fixture(input, kind, &self.config)?;
        let kind = kind.unwrap_or(fixture.call.kind());
        let (artifact, compile_us) = (self.artifact.clone(), self.compile_us);
        let canned = fixture.http.clone();
        with_runtime(self.config.clone(), canned, move |rt| {
            for p in &fixture.profiles {
                profiles::upsert(
                    rt.services().backend.as_ref(),
                    &Space::tenant(LOCAL_TENANT),
                    &p.identities,
                    &p.traits,
                    rt.services().clock.now_ms(),
                )
                .map_err(|e| RunError::Setup(e.into()))?;
            }
            let component = rt.load_artifact(&artifact).map_err(RunError::Setup)?;
            rt.check_world(&component, kind)?;
            let pre = rt.prepare(&component, kind)?;
            let installation = Arc::new(Installation::new(
                LOCAL_TENANT,
                "local-plugin",
                "local",
                fixture.settings.unwrap_or_default(),
            ));
            let inv = rt.invoke(&pre, &installation, fixture.call);
            let (output, error) = match inv.result {
                Ok(o) => (Some(o), None),
                Err(e) => (None, Some(e)),
            };
            let requests = rt.services().canned_http.as_ref().map(|c| c.seen());
            let expect = match &fixture.expect {
                Some(want) => {
                    let printed = output
                        .as_ref()
                        .map(|o| as_printed(o, requests.as_deref()))
                        .transpose();
                    let printed = printed.map_err(|e| RunError::Setup(e.into()))?;
                    Some(ExpectCheck::compare(want, printed.as_ref()))
                }
                None => None,
            };
            Ok(RunOutcome {
                ok: error.is_none(),
                output,
                error,
                compile_us,
                report: inv.report,
                requests,
                expect,
            })
        })
        .await
    }
}

/// What a fixture's `expect` is compared with: `output` as the run prints it (`call` and
/// `output`), plus the `requests` the plugin made when the fixture answers them. Read back
/// from its text, so a score of `f32` 1.9 compares as the `1.9` the run shows, not as the
/// `f64` 1.899999976158142 a direct conversion gives.
fn as_printed(
    output: &Output,
    requests: Option<&[SeenRequest]>,
) -> serde_json::Result<serde_json::Value> {
    let mut printed = printed(output)?;
    if let (Some(o), Some(r)) = (printed.as_object_mut(), requests) {
        o.insert("requests".into(), serde_json::to_value(r)?);
    }
    Ok(printed)
}

/// `output` as a run prints it: its JSON, with a webhook answer's body as text when it is
/// UTF-8 (a fixture's webhook `body` may be text too).
pub fn printed(output: &Output) -> serde_json::Result<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(output)?)?;
    if let Output::AdapterHandleWebhook(Ok(r)) = output {
        if let (Ok(text), Some(body)) = (
            std::str::from_utf8(&r.response.body),
            v.pointer_mut("/output/Ok/response/body"),
        ) {
            *body = serde_json::Value::String(text.to_owned());
        }
    }
    Ok(v)
}

fn serialize_printed<S: serde::Serializer>(
    output: &Option<Output>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    output
        .as_ref()
        .map(printed)
        .transpose()
        .map_err(S::Error::custom)?
        .serialize(serializer)
}

/// The tenant a local run's installation and seeded profiles belong to.
const LOCAL_TENANT: &str = "local";

/// Parses a fixture file's text. A webhook call's `body` may be written as text.
pub fn parse_fixture(text: &[u8]) -> serde_json::Result<Fixture> {
    let mut value: serde_json::Value = serde_json::from_slice(text)?;
    if value["call"] == "adapter-handle-webhook" {
        if let Some(body) = value.pointer_mut("/input/body") {
            if let Some(text) = body.as_str() {
                *body = serde_json::Value::from(text.as_bytes().to_vec());
            }
        }
    }
    serde_json::from_value(value)
}

/// Reads the fixture at `input` and checks it against the input limit and `kind`.
fn read_fixture(
    input: &Path,
    kind: Option<PluginKind>,
    config: &RuntimeConfig,
) -> Result<Fixture, RunError> {
    let invalid = |message: String| RunError::Fixture {
        path: input.into(),
        message,
    };
    let text = std::fs::read(input).map_err(|source| RunError::Read {
        path: input.into(),
        source,
    })?;
    let limit = |k: PluginKind| config.limits(k).max_input_bytes;
    let too_large = |max: usize, of: Option<PluginKind>| {
        invalid(format!(
            "{} bytes exceeds the {max}-byte input limit{}",
            text.len(),
            of.map(|k| format!(" of {k} plugins")).unwrap_or_default()
        ))
    };
    // Before parsing: the given kind's limit, or the largest of any kind.
    let max = kind.map_or_else(
        || PluginKind::ALL.map(limit).into_iter().max().unwrap_or(0),
        limit,
    );
    if text.len() > max {
        return Err(too_large(max, kind));
    }
    let fixture = parse_fixture(&text).map_err(|e| invalid(e.to_string()))?;
    let call_kind = fixture.call.kind();
    if let Some(k) = kind.filter(|k| *k != call_kind) {
        return Err(invalid(format!(
            "`{}` is a {call_kind} call; this plugin is run as {k}",
            fixture.call.name(),
        )));
    }
    if text.len() > limit(call_kind) {
        return Err(too_large(limit(call_kind), Some(call_kind)));
    }
    Ok(fixture)
}

/// Runs `f` on a blocking thread with a runtime over a throwaway data directory, removed
/// afterwards.
async fn with_runtime<T: Send + 'static>(
    config: RuntimeConfig,
    canned: Option<Vec<CannedAnswer>>,
    f: impl FnOnce(&Runtime) -> Result<T, RunError> + Send + 'static,
) -> Result<T, RunError> {
    let dir = std::env::temp_dir().join(format!(
        "weft-run-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let in_dir = dir.clone();
    let result = tokio::task::spawn_blocking(move || {
        let (db, _blobs) = store::open(&in_dir).map_err(|e| RunError::Setup(e.into()))?;
        let (backend, clock) = (db.backend().clone(), Arc::new(SystemClock));
        let private = config.allow_private_networks;
        let services = match canned {
            Some(answers) => {
                let canned = Arc::new(CannedHttp::new(answers));
                Services::with_canned_http(backend, clock, private, canned)
            }
            None => Services::new(backend, clock, private),
        }
        .map_err(RunError::Setup)?;
        let rt = Runtime::new(config, services).map_err(RunError::Setup)?;
        f(&rt)
    })
    .await
    .map_err(|e| RunError::Setup(e.into()));
    let _ = std::fs::remove_dir_all(&dir);
    result?
}

/// The process exit code of a run whose output differs from its fixture's `expect`.
pub const EXPECT_NOT_MET: i32 = 9;

/// The process exit code for a failed invocation: distinct per limit so scripts can tell.
pub fn exit_code(e: &InvokeError) -> i32 {
    match e {
        InvokeError::Deadline { .. } => 3,
        InvokeError::MemoryLimit { .. } => 4,
        InvokeError::FuelExhausted { .. } => 5,
        InvokeError::StackOverflow | InvokeError::Panic { .. } | InvokeError::Trap { .. } => 6,
        InvokeError::OutputTooLarge { .. } | InvokeError::InputTooLarge { .. } => 7,
        InvokeError::WrongKind { .. } | InvokeError::PoolExhausted => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(expected: serde_json::Value, actual: serde_json::Value) -> Option<String> {
        ExpectCheck::compare(&expected, Some(&actual)).difference
    }

    #[test]
    fn a_score_is_compared_as_the_run_prints_it() {
        use crate::runtime::bindings::exports::personalize::{Decision, Item};
        let decision = Decision {
            placement_id: "hero".into(),
            variant_id: "v".into(),
            experiment_id: None,
            content: "{}".into(),
            items: vec![Item {
                id: "sku-1".into(),
                score: 1.9,
                payload: "{}".into(),
            }],
            ttl_ms: 0,
            reason: None,
        };
        // As `f64`, the `f32` 1.9 is 1.899999976158142; the run prints 1.9.
        let printed = as_printed(&Output::PersonalizeDecide(Ok(vec![decision])), None).unwrap();
        let want = json!({"output": {"Ok": [{"items": [{"score": 1.9}]}]}});
        assert_eq!(diff(want, printed), None);
    }

    #[test]
    fn a_webhook_body_is_written_and_printed_as_text() {
        let text = br#"{"call": "adapter-handle-webhook", "input": {"method": "POST",
            "path": "", "query": [], "headers": [], "body": "{\"id\":1}", "received_at": 0}}"#;
        let Call::AdapterHandleWebhook(req) = parse_fixture(text).unwrap().call else {
            panic!("a webhook call")
        };
        assert_eq!(req.body, br#"{"id":1}"#);
        use crate::runtime::bindings::exports::adapter::{HttpResponse, WebhookResult};
        let answer = |body: Vec<u8>| {
            Output::AdapterHandleWebhook(Ok(WebhookResult {
                response: HttpResponse {
                    status: 200,
                    headers: vec![],
                    body,
                },
                events: vec![],
            }))
        };
        let shown = printed(&answer(b"EVENT_RECEIVED".to_vec())).unwrap();
        assert_eq!(shown["output"]["Ok"]["response"]["body"], "EVENT_RECEIVED");
        // Not UTF-8: the bytes.
        let shown = printed(&answer(vec![0xff, 0x00])).unwrap();
        assert_eq!(shown["output"]["Ok"]["response"]["body"], json!([255, 0]));
    }

    #[test]
    fn an_expectation_names_only_what_must_match() {
        let out = json!({"call": "journey-step", "output": {"Ok": [{"Goto": "b"}, {"Exit": "x"}]}});
        assert_eq!(diff(json!({}), out.clone()), None);
        assert_eq!(
            diff(json!({"output": {"Ok": [{"Goto": "b"}, {}]}}), out.clone()),
            None
        );
        assert_eq!(diff(out.clone(), out), None);
    }

    #[test]
    fn a_missed_expectation_names_the_first_difference_by_its_path() {
        let out = json!({"call": "journey-step", "output": {"Ok": [{"Goto": "b"}]}});
        assert_eq!(
            diff(json!({"output": {"Ok": [{"Goto": "c"}]}}), out.clone()).unwrap(),
            "`output.output.Ok[0].Goto` is \"b\"; expected \"c\""
        );
        assert_eq!(
            diff(json!({"output": {"Err": {}}}), out.clone()).unwrap(),
            "`output.output.Err` is missing; expected {}"
        );
        assert_eq!(
            diff(json!({"output": {"Ok": []}}), out.clone()).unwrap(),
            "`output.output.Ok` has 1 items; expected 0"
        );
        assert_eq!(
            diff(json!({"call": 1}), out).unwrap(),
            "`output.call` is \"journey-step\"; expected 1"
        );
        let failed = ExpectCheck::compare(&json!({}), None);
        assert!(!failed.met && failed.difference.unwrap().contains("the plugin failed"));
    }
}
