//! Black-box test harness for Tufa: real server processes on 127.0.0.1, driven by the real
//! `notary` CLI and plain HTTPS requests.
//!
//! - [`server::Server`] runs a server until dropped (and prints its log if the test failed);
//!   [`tufa::start`] starts the binary under test, [`go_notary::start`] the Go reference.
//! - [`notary::Notary`] is one CLI client with its own trust directory.
//! - [`audit`] reads what `tufa-server audit` prints and computes key IDs independently.
//! - [`load::PublishLoad`] runs concurrent publishers and a checking reader for fault tests.
//! - [`flows`] holds the end-to-end scenarios; [`flow_tests!`] turns each into a `#[test]`
//!   for one kind of server.
//!
//! Environment:
//! - `TUFA_SERVER_BIN`: the tufa-server binary (default: `<target>/debug/tufa-server`, built by
//!   `cargo build --workspace`).
//! - `DATABASE_URL`: superuser URL of a PostgreSQL cluster; each PostgreSQL test creates and
//!   drops its own database in it. Without it the PostgreSQL variants fail.
//! - `NOTARY_BIN`, `NOTARY_SERVER_BIN`: the Go binaries (default: `notary`, `notary-server`
//!   from `PATH`); `PG_BINDIR`: where `psql` is (default: `PATH`).
//! - `DOCKER_REGISTRY_BIN`: Docker distribution's registry (default: `docker-registry` from `PATH`);
//!   `DOCKER_BIN`: the Docker CLI for `docker trust` (default: `docker` from `PATH`; no daemon needed).
//! - `DOCKERD_BIN`: the Docker daemon the authorization plugin tests start (default: `dockerd`);
//!   `PODMAN_BIN`: podman for the HPC wrapper tests (default: `podman`); the Slurm daemons
//!   (`munged`, `slurmctld`, `slurmd`, `srun`, `sbatch`, `scontrol`) come from `PATH`.
//! - `TUFA_SIGNER_BIN`, `NOTARY_SIGNER_BIN`, `SOFTHSM2_CONF`: the signers (see [`signer`]).
//! - `TUFA_TEST_KEEP`: keep each server's temporary directory (data, TLS files, log).

pub mod audit;
pub mod docker;
pub mod dockerd;
pub mod flows;
pub mod go_notary;
pub mod images;
pub mod load;
pub mod notary;
pub mod pki;
pub use tufa_testkit::postgres;
pub mod pg_cluster;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod signer;
pub mod slurm;
pub mod tmpfs;
pub mod tufa;

/// Generates one `#[test]` per flow in [`flows`], each starting its own server with
/// `$start` (an expression evaluating to a [`server::Server`], or to something that
/// dereferences to one, such as a [`signer::Stack`]).
///
/// `flow_tests!(start_expr)` generates every flow; `flow_tests!(start_expr; a, b)` only the
/// named ones. `flow_tests!(start_expr, then check)` and `flow_tests!(start_expr, then check;
/// a, b)` also call `check(&server)` after each flow (e.g. [`signer::Stack::check_after_flow`]).
#[macro_export]
macro_rules! flow_tests {
    ($start:expr) => {
        $crate::flow_tests!($start, then |_| {});
    };
    ($start:expr; $($flow:ident),+ $(,)?) => {
        $crate::flow_tests!($start, then |_| {}; $($flow),+);
    };
    ($start:expr, then $check:expr) => {
        $crate::flow_tests!(
            $start, then $check;
            publish_list_remove,
            delegation_publish_and_witness,
            server_managed_key_rotation,
            client_key_rotation_and_stale_reader,
            delete_remote,
            rejects_tampered_and_foreign_updates,
            server_managed_snapshot_from_start,
        );
    };
    ($start:expr, then $check:expr; $($flow:ident),+ $(,)?) => {
        $(
            #[test]
            fn $flow() {
                let server = $start;
                $crate::flows::$flow(&server);
                let check = $check;
                check(&server);
            }
        )+
    };
}
