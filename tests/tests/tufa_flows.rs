//! The flows against tufa-server, once per metadata store. The PostgreSQL variants need
//! `DATABASE_URL` (a superuser URL of a throwaway cluster) and fail without it.

mod sqlite {
    tufa_tests::flow_tests!(tufa_tests::tufa::start(tufa_tests::tufa::Backend::Sqlite));
}

mod postgres {
    tufa_tests::flow_tests!(tufa_tests::tufa::start(tufa_tests::tufa::Backend::Postgres));
}
