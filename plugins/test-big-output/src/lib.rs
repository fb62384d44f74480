//! Test plugin (journey-rule): `step` returns one `set-traits` command whose JSON is
//! about 2 MiB.

use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};

struct BigOutput;

/// Length of the `blob` string: 2 MiB of ASCII.
const BLOB_LEN: usize = 2 * 1024 * 1024;

impl Guest for BigOutput {
    fn describe() -> Manifest {
        Manifest {
            name: "test-big-output".into(),
            entry_events: vec!["Test Started".into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(_input: StepInput) -> Result<Vec<Command>, PluginError> {
        let mut traits = String::with_capacity(BLOB_LEN + 16);
        traits.push_str(r#"{"blob":""#);
        traits.extend(std::iter::repeat_n('x', BLOB_LEN));
        traits.push_str(r#""}"#);
        Ok(vec![
            Command::SetTraits(traits),
            Command::Exit("big".into()),
        ])
    }
}

weft_guest::export_journey_rule!(BigOutput);
