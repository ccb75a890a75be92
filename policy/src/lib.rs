//! The trust policy of Tufa's enforcement points (verify API, admission webhooks, Docker authorization plugin, HPC
//! checks): image references parsed as Docker does, the policy file (the Mirantis Container Runtime
//! `content-trust` block as-is plus Tufa's additions) validated with errors that name the line, the decisions it
//! makes as pure functions ([`Policy::decide`], [`RoleRequirement::check`], the run-option checks), and a handle
//! that reloads the file when it changes. No network; the only IO is reading the policy file.
mod image;
mod locate;
mod pattern;
mod policy;
mod roles;
pub mod run_options;
mod watch;

pub use image::{DEFAULT_REGISTRY, DEFAULT_TAG, ImageRef, ImageRefError, MAX_NAME_LEN, MAX_TAG_LEN, check_digest};
pub use pattern::Pattern;
pub use policy::{
    CacheSettings, Credentials, Decision, MAX_POLICY_BYTES, Mode, OFFICIAL_LIBRARY_PATTERN, OFFICIAL_LIBRARY_ROOT_KEYS,
    Origin, Policy, PolicyError, RootPin, TrustServer,
};
pub use roles::{RoleRequirement, check_role_name};
pub use run_options::{
    Denial, RunOptions, check_container_create, check_exec_create, check_service_spec, check_volume_create,
};
pub use watch::{PolicyHandle, ReloadOutcome, Reloader};
