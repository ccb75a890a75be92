//! Code both binaries share: the flag > environment > file > default layering of settings with
//! their origins ([`layer`]), the settings both binaries have ([`settings`]), log set-up
//! ([`logging`]) and owner-only files and directories ([`files`]).
//!
//! Neither `tufa-server` nor `tufa-signer` depends on the other; both depend on this crate, so a
//! rule written here (a bad configuration exits with status 2, a group-readable secret file is
//! refused, a log filter must name real levels) holds for both.

pub mod files;
pub mod layer;
pub mod logging;
pub mod settings;

/// Exit status of either binary when its configuration is unusable (clap uses 2 for usage errors too).
pub const EXIT_CONFIG: u8 = 2;
