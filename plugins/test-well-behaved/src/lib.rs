//! Test plugin (journey-rule): counts its runs in state, logs one line and exits.

use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};

struct WellBehaved;

impl Guest for WellBehaved {
    fn describe() -> Manifest {
        Manifest {
            name: "test-well-behaved".into(),
            entry_events: vec!["Test Started".into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(input: StepInput) -> Result<Vec<Command>, PluginError> {
        let runs = weft_guest::state::increment("runs", 1)?;
        weft_guest::log::info!("test-well-behaved: step {} run {runs}", input.step_id);
        Ok(vec![Command::Exit("ok".into())])
    }
}

weft_guest::export_journey_rule!(WellBehaved);
