//! Test plugin (journey-rule): `step` spins forever without calling the host.

use std::hint::black_box;

use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};

struct SpinLoop;

impl Guest for SpinLoop {
    fn describe() -> Manifest {
        Manifest {
            name: "test-spin-loop".into(),
            entry_events: vec!["Test Started".into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(_input: StepInput) -> Result<Vec<Command>, PluginError> {
        // `black_box` keeps the optimiser from proving the loop has no effect.
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
}

weft_guest::export_journey_rule!(SpinLoop);
