//! Test support written once for every test crate and the benchmark: throwaway PostgreSQL
//! databases ([`postgres`]), child processes with deadlines and logs ([`process`]), and where
//! the SoftHSM2 module and the scratch token directory are ([`softhsm`]).
//!
//! The functions return errors instead of panicking, so the benchmark (which reports failures)
//! and the tests (which turn them into panics) share them. The one exception is
//! [`postgres::PgDatabase::create`], which fails the calling test with instructions when
//! `DATABASE_URL` is missing.

pub mod postgres;
pub mod process;
pub mod softhsm;
