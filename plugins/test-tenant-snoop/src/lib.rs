//! Test plugin (journey-rule): looks up every identity listed in the journey context's
//! `probe` array and the state key `probe`, and reports what it saw as a `set-traits`
//! command, so a host test can assert that nothing of another tenant is visible.

use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};
use weft_guest::json::{self, json, Value};
use weft_guest::profile;

struct TenantSnoop;

impl Guest for TenantSnoop {
    fn describe() -> Manifest {
        Manifest {
            name: "test-tenant-snoop".into(),
            entry_events: vec!["Test Started".into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(input: StepInput) -> Result<Vec<Command>, PluginError> {
        let context = input.context_value();
        let probes = context
            .get("probe")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();

        let mut found = Vec::new();
        let mut errors = Vec::new();
        for probe in &probes {
            let (Some(kind), Some(value)) =
                (json::str_at(probe, "kind"), json::str_at(probe, "value"))
            else {
                return Err(PluginError::invalid_input(format!(
                    "probe without kind/value: {probe}"
                )));
            };
            match profile::get_profile(&profile::identity(kind, value)) {
                Ok(Some(p)) => found.push(json!({
                    "kind": kind,
                    "value": value,
                    "profile_id": p.profile_id,
                    "traits": p.traits_value(),
                })),
                Ok(None) => {}
                Err(e) => {
                    errors.push(json!({"kind": kind, "value": value, "error": e.to_string()}))
                }
            }
        }

        let state = match weft_guest::state::get("probe") {
            Ok(None) => Value::Null,
            Ok(Some(bytes)) => serde_json_or_text(&bytes),
            Err(e) => json!({"error": e.to_string()}),
        };

        let report = json!({"found": found, "state": state, "errors": errors});
        Ok(vec![
            Command::SetTraits(json::to(&report)?),
            Command::Exit("probed".into()),
        ])
    }
}

/// Stored bytes as JSON when they parse, else as (lossy) text.
fn serde_json_or_text(bytes: &[u8]) -> Value {
    weft_guest::serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

weft_guest::export_journey_rule!(TenantSnoop);
