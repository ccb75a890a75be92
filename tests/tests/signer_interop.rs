//! The notary CLI flows against a trust server that signs through a separate signer, in every
//! pairing with the Go reference: Go notary-server with tufa-signer (software keys and SoftHSM),
//! tufa-server with Go notary-signer, and tufa-server with tufa-signer (software and SoftHSM on
//! SQLite; software with both on PostgreSQL, which needs `DATABASE_URL`).
//!
//! After each flow: tufa-server never created a key-encryption key (it held no private key),
//! and tufa-signer's audit trail lists the signatures, each made for the client certificate
//! with CN tufa-server. The SoftHSM variants need `SOFTHSM2_CONF` (scripts/test.sh exports a
//! throwaway one) and fail without it.

use tufa_tests::signer::{KeyBackend, Signer, Stack};

mod go_server_tufa_signer_software {
    use super::*;
    tufa_tests::flow_tests!(Stack::go_server(Signer::tufa(KeyBackend::Software)), then Stack::check_after_flow);
}

mod go_server_tufa_signer_softhsm {
    use super::*;
    tufa_tests::flow_tests!(Stack::go_server(Signer::tufa(KeyBackend::SoftHsm)), then Stack::check_after_flow);
}

mod tufa_server_go_signer {
    use super::*;
    tufa_tests::flow_tests!(Stack::tufa_server(Signer::go_notary()), then Stack::check_after_flow);
}

mod tufa_server_tufa_signer_software {
    use super::*;
    tufa_tests::flow_tests!(Stack::tufa_server(Signer::tufa(KeyBackend::Software)), then Stack::check_after_flow);
}

mod tufa_server_tufa_signer_softhsm {
    use super::*;
    tufa_tests::flow_tests!(Stack::tufa_server(Signer::tufa(KeyBackend::SoftHsm)), then Stack::check_after_flow);
}

/// Both on PostgreSQL (needs `DATABASE_URL`): tufa-server's metadata and tufa-signer's keys and
/// audit trail each in their own database.
mod tufa_server_tufa_signer_postgres {
    use super::*;
    tufa_tests::flow_tests!(
        Stack::tufa_server_on_postgres(Signer::tufa_on_postgres(KeyBackend::Software)), then Stack::check_after_flow;
        publish_list_remove,
        delegation_publish_and_witness,
        server_managed_key_rotation,
        client_key_rotation_and_stale_reader,
    );
}
