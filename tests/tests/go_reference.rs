//! The flows against Debian's Go notary-server (memory storage, local keys): proof that the
//! harness and the flows describe real Notary behaviour.

tufa_tests::flow_tests!(tufa_tests::go_notary::start(&tufa_tests::go_notary::GoServerConfig::default()));
