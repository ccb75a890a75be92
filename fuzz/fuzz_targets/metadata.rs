//! Fuzz target: the metadata parsers. Any bytes go through the strict JSON scanner, the envelope
//! parser and every typed view; they may be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tufa_core::json;
use tufa_core::metadata::{Root, Signed, Snapshot, Targets, Timestamp};
use tufa_core::names::{BaseRole, RoleName};

fuzz_target!(|data: &[u8]| {
    let _ = json::scan(data);
    if let Ok(signed) = Signed::parse(data) {
        let _ = Root::from_signed(&signed);
        let _ = Targets::from_signed(&signed, &RoleName::base(BaseRole::Targets));
        if let Ok(role) = RoleName::parse("targets/a") {
            let _ = Targets::from_signed(&signed, &role);
        }
        let _ = Snapshot::from_signed(&signed);
        let _ = Timestamp::from_signed(&signed);
    }
});
