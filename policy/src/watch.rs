//! The current policy, shared and cheap to read ([`PolicyHandle`]), and a reloader that polls the policy file and
//! swaps in a new policy when its contents change; a policy that fails to load leaves the previous one in place,
//! logs why and is kept as the handle's last error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::policy::{Policy, PolicyError};

#[derive(Debug)]
struct State {
    policy: Arc<Policy>,
    last_error: Option<PolicyError>,
    generation: u64,
}

/// The policy in force, shared by every request. Reading takes a brief read lock and clones an `Arc`.
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    state: Arc<RwLock<State>>,
}

impl PolicyHandle {
    /// A handle holding `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { state: Arc::new(RwLock::new(State { policy: Arc::new(policy), last_error: None, generation: 0 })) }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        Arc::clone(&self.state.read().unwrap_or_else(PoisonError::into_inner).policy)
    }

    /// Why the last reload failed, if it did (cleared by the next successful one).
    pub fn last_error(&self) -> Option<PolicyError> {
        self.state.read().unwrap_or_else(PoisonError::into_inner).last_error.clone()
    }

    /// How many times a new policy was swapped in since the handle was made.
    pub fn generation(&self) -> u64 {
        self.state.read().unwrap_or_else(PoisonError::into_inner).generation
    }

    /// Puts `policy` in force and clears the last error.
    pub fn replace(&self, policy: Policy) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.policy = Arc::new(policy);
        state.last_error = None;
        state.generation += 1;
    }

    fn reject(&self, error: PolicyError) {
        self.state.write().unwrap_or_else(PoisonError::into_inner).last_error = Some(error);
    }
}

/// What one poll of the policy file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file is as it was at the last poll.
    Unchanged,
    /// The file changed and the new policy is in force.
    Reloaded,
    /// The file changed (or cannot be read) and the new content was refused; the previous policy stays.
    Rejected(PolicyError),
}

/// Polls one policy file and reloads it into a [`PolicyHandle`] when its contents change.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    handle: PolicyHandle,
    last_seen: Option<Vec<u8>>,
}

impl Reloader {
    /// Loads `path` and returns a handle holding it, with the reloader that keeps it current.
    ///
    /// # Errors
    /// The [`PolicyError`] when the file cannot be used at start-up (there is no previous policy to keep).
    pub fn start(path: &Path) -> Result<(PolicyHandle, Self), PolicyError> {
        let seen = std::fs::read(path).ok();
        let policy = Policy::load(path)?;
        let handle = PolicyHandle::new(policy);
        Ok((handle.clone(), Self { path: path.to_path_buf(), handle, last_seen: seen }))
    }

    /// Checks the file once: reloads when its bytes differ from those last seen.
    pub fn check_once(&mut self) -> ReloadOutcome {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                let failure = PolicyError {
                    file: Some(self.path.clone()),
                    line: None,
                    column: None,
                    message: format!("cannot read the policy: {error}"),
                };
                return self.refuse(failure, None);
            }
        };
        if self.last_seen.as_deref() == Some(bytes.as_slice()) {
            return ReloadOutcome::Unchanged;
        }
        match Policy::load(&self.path) {
            Ok(policy) => {
                self.handle.replace(policy);
                self.last_seen = Some(bytes);
                tracing::info!(path = %self.path.display(), "policy reloaded");
                ReloadOutcome::Reloaded
            }
            Err(error) => self.refuse(error, Some(bytes)),
        }
    }

    fn refuse(&mut self, error: PolicyError, bytes: Option<Vec<u8>>) -> ReloadOutcome {
        // Log a refusal once per content, not on every poll.
        let repeated = self.handle.last_error().as_ref() == Some(&error);
        if !repeated {
            tracing::warn!(path = %self.path.display(), error = %error, "policy reload refused; keeping the previous policy");
        }
        self.handle.reject(error.clone());
        if bytes.is_some() {
            self.last_seen = bytes;
        }
        ReloadOutcome::Rejected(error)
    }

    /// Polls every `interval` until the returned task is aborted (file reads run on the blocking pool).
    pub fn spawn(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut reloader = self;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match tokio::task::spawn_blocking(move || {
                    reloader.check_once();
                    reloader
                })
                .await
                {
                    Ok(back) => reloader = back,
                    Err(error) => {
                        tracing::warn!(error = %error, "policy reloader stopped");
                        return;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageRef;
    use crate::policy::Mode;

    const GOOD: &str = "[content-trust]\nmode = \"enforced\"\n";
    const OTHER: &str = "[content-trust]\nmode = \"permissive\"\n";
    const BAD: &str = "[content-trust]\nmode = \"enforcd\"\n";

    fn mode(handle: &PolicyHandle) -> Mode {
        handle.current().decide(&ImageRef::parse("app").unwrap()).mode
    }

    #[test]
    fn reloads_good_and_keeps_previous_on_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, GOOD).unwrap();
        let (handle, mut reloader) = Reloader::start(&path).unwrap();
        assert_eq!(mode(&handle), Mode::Enforced);
        assert_eq!(reloader.check_once(), ReloadOutcome::Unchanged);

        std::fs::write(&path, OTHER).unwrap();
        assert_eq!(reloader.check_once(), ReloadOutcome::Reloaded);
        assert_eq!(mode(&handle), Mode::Permissive);
        assert_eq!(handle.generation(), 1);

        std::fs::write(&path, BAD).unwrap();
        let expected = PolicyError {
            file: Some(path.clone()),
            line: Some(2),
            column: Some(8),
            message: "unknown variant `enforcd`, expected one of `disabled`, `permissive`, `enforced`".to_owned(),
        };
        assert_eq!(reloader.check_once(), ReloadOutcome::Rejected(expected.clone()));
        assert_eq!(mode(&handle), Mode::Permissive);
        assert_eq!(handle.last_error(), Some(expected.clone()));
        // The same bad content is not reloaded again.
        assert_eq!(reloader.check_once(), ReloadOutcome::Unchanged);

        std::fs::remove_file(&path).unwrap();
        match reloader.check_once() {
            ReloadOutcome::Rejected(error) => assert!(error.message.starts_with("cannot read the policy: "), "{error}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(mode(&handle), Mode::Permissive);

        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(reloader.check_once(), ReloadOutcome::Reloaded);
        assert_eq!(mode(&handle), Mode::Enforced);
        assert_eq!(handle.last_error(), None);
        assert_eq!(handle.generation(), 2);
    }

    #[test]
    fn start_refuses_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, BAD).unwrap();
        let error = Reloader::start(&path).unwrap_err();
        assert_eq!(error.line, Some(2));
    }

    #[tokio::test]
    async fn spawned_reloader_picks_up_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, GOOD).unwrap();
        let (handle, reloader) = Reloader::start(&path).unwrap();
        let task = reloader.spawn(Duration::from_millis(20));
        std::fs::write(&path, BAD).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while handle.last_error().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(handle.last_error().map(|error| error.line), Some(Some(2)));
        assert_eq!(mode(&handle), Mode::Enforced);
        std::fs::write(&path, OTHER).unwrap();
        while mode(&handle) != Mode::Permissive && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(mode(&handle), Mode::Permissive);
        assert_eq!(handle.last_error(), None);
        task.abort();
    }
}
