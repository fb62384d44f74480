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
use crate::runtime::{Call, InvokeError, Output, Report, Runtime};
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
    /// A part of what the run prints (`{"call": ..., "output": ...}`) that the output must
    /// match: an object the keys it names, a list each item in order (as many as given),
    /// anything else exactly. `weft plugin run` exits 9 when the output differs.
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
    /// The output, if it returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// The failure, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<InvokeError>,
    /// Time to validate and compile the component, in microseconds.
    pub compile_us: u64,
    /// Cost of the invocation.
    pub report: Report,
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
    let bytes = std::fs::read(wasm).map_err(|source| RunError::Read {
        path: wasm.into(),
        source,
    })?;
    let text = std::fs::read(input).map_err(|source| RunError::Read {
        path: input.into(),
        source,
    })?;
    let max = runtime_config.limits(kind).max_input_bytes;
    if text.len() > max {
        return Err(RunError::Fixture {
            path: input.into(),
            message: format!(
                "{} bytes exceeds the {max}-byte input limit of {kind} plugins",
                text.len()
            ),
        });
    }
    let fixture: Fixture = serde_json::from_slice(&text).map_err(|e| RunError::Fixture {
        path: input.into(),
        message: e.to_string(),
    })?;
    if fixture.call.kind() != kind {
        return Err(RunError::Fixture {
            path: input.into(),
            message: format!(
                "`{}` is a {} call; this plugin is run as {kind}",
                fixture.call.name(),
                fixture.call.kind()
            ),
        });
    }
    let dir = std::env::temp_dir().join(format!(
        "weft-run-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = run_in(&dir, &bytes, kind, fixture, runtime_config).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    dir: &Path,
    bytes: &[u8],
    kind: PluginKind,
    fixture: Fixture,
    runtime_config: RuntimeConfig,
) -> Result<RunOutcome, RunError> {
    let (db, _blobs) = store::open(dir).map_err(|e| RunError::Setup(e.into()))?;
    let services = Services::new(
        db.backend().clone(),
        Arc::new(SystemClock),
        runtime_config.allow_private_networks,
    )
    .map_err(RunError::Setup)?;
    let runtime =
        Arc::new(Runtime::new(runtime_config, services.clone()).map_err(RunError::Setup)?);
    let tenant = "local";
    for p in &fixture.profiles {
        profiles::upsert(
            db.backend().as_ref(),
            &Space::tenant(tenant),
            &p.identities,
            &p.traits,
            services.clock.now_ms(),
        )
        .map_err(|e| RunError::Setup(e.into()))?;
    }
    let rt = runtime.clone();
    let bytes = bytes.to_vec();
    let installation = Arc::new(Installation::new(
        tenant,
        "local-plugin",
        "local",
        fixture.settings.unwrap_or_default(),
    ));
    tokio::task::spawn_blocking(move || {
        let t0 = std::time::Instant::now();
        let component = rt.compile(&bytes, kind)?;
        let pre = rt.prepare(&component, kind)?;
        let compile_us = t0.elapsed().as_micros() as u64;
        let inv = rt.invoke(&pre, &installation, fixture.call);
        let (output, error) = match inv.result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        let expect = match &fixture.expect {
            Some(want) => {
                let printed = output.as_ref().map(serde_json::to_value).transpose();
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
            expect,
        })
    })
    .await
    .map_err(|e| RunError::Setup(e.into()))?
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
