//! Test plugin (journey-rule): `step` panics with a fixed message.

use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};

struct Panic;

impl Guest for Panic {
    fn describe() -> Manifest {
        Manifest {
            name: "test-panic".into(),
            entry_events: vec!["Test Started".into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(_input: StepInput) -> Result<Vec<Command>, PluginError> {
        panic!("test-panic: deliberate panic");
    }
}

weft_guest::export_journey_rule!(Panic);
