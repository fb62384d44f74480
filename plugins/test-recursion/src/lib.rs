//! Test plugin (journey-rule): `step` recurses without bound until the stack overflows.

use std::hint::black_box;

use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};

struct Recursion;

/// Not a tail call: each frame keeps a 256-byte array alive across the recursive call and
/// uses the callee's result, so the optimiser can turn this into neither a loop nor a
/// constant. The exit condition can never hold but is opaque to the compiler.
#[inline(never)]
fn dive(depth: u64) -> u64 {
    let mut frame = [0u64; 32];
    frame[(depth % 32) as usize] = depth;
    let frame = black_box(frame);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    let below = dive(depth + 1);
    below.wrapping_add(frame[(below % 32) as usize])
}

impl Guest for Recursion {
    fn describe() -> Manifest {
        Manifest {
            name: "test-recursion".into(),
            entry_events: vec!["Test Started".into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(_input: StepInput) -> Result<Vec<Command>, PluginError> {
        let n = dive(black_box(0));
        Ok(vec![Command::Exit(format!("unreachable: {n}"))])
    }
}

weft_guest::export_journey_rule!(Recursion);
