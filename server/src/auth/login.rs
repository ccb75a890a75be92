//! Password logins without a CPU or guessing hole: memory-hard hashes run on the blocking pool, at
//! most one per two cores at a time, and failed logins are counted per user name and address, per user name
//! and per client address within a window; past the limit further attempts are refused without hashing until it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Failed logins for one user name from one client address within the window before that pair is
/// refused until the window ends.
pub const MAX_FAILURES_PER_USER_AND_ADDRESS: u32 = 10;
/// Failed logins for one user name from all addresses within the window before the name is refused:
/// bounds guessing from many addresses (an attacker can then lock the name out for the window; its
/// API tokens keep working).
pub const MAX_FAILURES_PER_USER: u32 = 100;
/// Failed logins from one client address within the window before it is refused.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 100;
/// Longest wait for a hashing slot before the login is answered "busy".
pub const HASH_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most distinct names and addresses tracked; beyond it, expired entries are dropped first and
/// then the oldest.
const MAX_TRACKED: usize = 100_000;

/// Why a login was not even tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures: retry after this long.
    Limited(Duration),
    /// Every hashing slot stayed busy.
    Busy,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// Hashing slots and failure counters, shared by every request of one process.
pub struct LoginGuard {
    hashing: Semaphore,
    failures: Mutex<HashMap<String, Failures>>,
}

impl LoginGuard {
    /// A guard with one hashing slot per two cores (at least one), so logins can never take more
    /// than half the CPU, nor more than one hash's memory (19 MiB) per slot.
    pub fn new() -> Self {
        let slots = std::thread::available_parallelism().map_or(1, |cores| (usize::from(cores) / 2).max(1));
        Self { hashing: Semaphore::new(slots), failures: Mutex::new(HashMap::new()) }
    }

    fn keys(user: &str, address: Option<IpAddr>) -> [(Option<String>, u32); 3] {
        let from = address.map_or_else(|| "-".to_owned(), |address| address.to_string());
        [
            (Some(format!("pair:{user}@{from}")), MAX_FAILURES_PER_USER_AND_ADDRESS),
            (Some(format!("user:{user}")), MAX_FAILURES_PER_USER),
            (address.map(|address| format!("address:{address}")), MAX_FAILURES_PER_ADDRESS),
        ]
    }

    /// Starts a login attempt: refuses it when the user name or the address is over its limit, and
    /// otherwise counts it as a failure until [`LoginGuard::succeeded`] says otherwise. Counting
    /// before the check runs means concurrent attempts cannot all slip under the limit.
    pub fn begin(&self, user: &str, address: Option<IpAddr>) -> Result<(), Refusal> {
        let Ok(mut failures) = self.failures.lock() else { return Err(Refusal::Busy) };
        let keys = Self::keys(user, address);
        for (key, limit) in &keys {
            let (Some(key), limit) = (key, *limit) else { continue };
            if let Some(entry) = failures.get(key) {
                let elapsed = entry.since.elapsed();
                if elapsed < FAILURE_WINDOW && entry.count >= limit {
                    return Err(Refusal::Limited(FAILURE_WINDOW - elapsed));
                }
            }
        }
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, entry| entry.since.elapsed() < FAILURE_WINDOW);
            if failures.len() >= MAX_TRACKED
                && let Some(oldest) = failures.iter().min_by_key(|(_, entry)| entry.since).map(|(key, _)| key.clone())
            {
                failures.remove(&oldest);
            }
        }
        for key in keys.into_iter().filter_map(|(key, _)| key) {
            let entry = failures.entry(key).or_insert(Failures { count: 0, since: Instant::now() });
            if entry.since.elapsed() >= FAILURE_WINDOW {
                *entry = Failures { count: 0, since: Instant::now() };
            }
            entry.count = entry.count.saturating_add(1);
        }
        Ok(())
    }

    /// Ends a login attempt that succeeded: the failures of the name from this address are
    /// forgotten, and the attempt no longer counts against the name or the address.
    pub fn succeeded(&self, user: &str, address: Option<IpAddr>) {
        let Ok(mut failures) = self.failures.lock() else { return };
        let [(pair, _), rest @ ..] = Self::keys(user, address);
        if let Some(pair) = pair {
            failures.remove(&pair);
        }
        for key in rest.into_iter().filter_map(|(key, _)| key) {
            if let Some(entry) = failures.get_mut(&key) {
                entry.count = entry.count.saturating_sub(1);
            }
        }
    }

    /// Checks `password` against `hash` on the blocking pool, waiting at most
    /// [`HASH_QUEUE_TIMEOUT`] for a slot. Without a hash (no such user, or no password) the same
    /// work is done and the answer is false, so timing does not tell which names exist.
    pub async fn verify(&self, password: Zeroizing<String>, hash: Option<String>) -> Result<bool, Refusal> {
        let permit = tokio::time::timeout(HASH_QUEUE_TIMEOUT, self.hashing.acquire())
            .await
            .map_err(|_| Refusal::Busy)?
            .map_err(|_| Refusal::Busy)?;
        let matched = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => tufa_auth::password::verify_password(&password, &hash),
            None => tufa_auth::password::verify_without_hash(&password),
        })
        .await
        .unwrap_or(false);
        drop(permit);
        Ok(matched)
    }
}

impl Default for LoginGuard {
    fn default() -> Self {
        Self::new()
    }
}
