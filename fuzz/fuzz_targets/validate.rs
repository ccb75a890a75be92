//! Fuzz target: the update verifier. The first byte picks the uploaded role and the stored
//! state (a real notary 0.7 repository, or none); the rest is the uploaded file. The verifier
//! may refuse it, never panic.
#![no_main]

use std::collections::BTreeMap;

use chrono::{TimeZone as _, Utc};
use libfuzzer_sys::fuzz_target;
use tufa_core::names::{Gun, RoleName};
use tufa_core::update::{Limits, RepoState, validate};

const ROOT: &[u8] = include_bytes!("../../core/tests/data/notary-0.7/root.json");
const TARGETS: &[u8] = include_bytes!("../../core/tests/data/notary-0.7/targets.json");
const SNAPSHOT: &[u8] = include_bytes!("../../core/tests/data/notary-0.7/snapshot.json");
const ROLES: [&str; 4] = ["root", "targets", "targets/a", "snapshot"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let (Ok(gun), Ok(role)) = (Gun::parse("example.com/app"), RoleName::parse(ROLES[usize::from(selector) % 4])) else {
        return;
    };
    let state = if selector & 0x80 == 0 {
        RepoState::new([
            ("root".to_owned(), ROOT.to_vec()),
            ("targets".to_owned(), TARGETS.to_vec()),
            ("snapshot".to_owned(), SNAPSHOT.to_vec()),
        ])
    } else {
        RepoState::default()
    };
    // The fixtures' own time, so that the stored root is valid and validation goes deep.
    let Some(now) = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).single() else {
        return;
    };
    let uploads = BTreeMap::from([(role, file.to_vec())]);
    let _ = validate(&gun, &state, uploads, now, &Limits::default());
});
