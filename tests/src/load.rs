//! A publish load for fault tests: several notary CLI clients, each publishing targets to its own
//! repository in a loop, and a reader that checks every state the server serves meanwhile.
//!
//! Publisher `k` publishes targets `t1`, `t2`, ... (after `t0` from [`PublishLoad::prepare`]) with
//! `notary add -p`. A failed `add -p` leaves its change staged in the client's change list, so the
//! next successful publish carries it too: at any time the targets a repository holds are exactly
//! `t0..=tk` for some `k`, at least the last acknowledged one and at most the last attempted one.
//! The reader checks exactly that on every state it reads, the way the notary client reads it
//! (`timestamp.json`, then the snapshot and the targets file by the checksums the timestamp and
//! the snapshot give), and that every checksum and length matches the bytes served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

use crate::flows::{self, path_arg};
use crate::notary::{ListedTarget, Notary};
use crate::process::run_with_timeout;
use crate::server::https_client;

/// How long the reader sleeps between rounds over every repository.
const READ_PAUSE: Duration = Duration::from_millis(50);

/// One `notary add -p` of the load.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The target's index: `t<index>`.
    pub index: u64,
    /// When the command started.
    pub started: Instant,
    /// When it ended.
    pub finished: Instant,
    /// `None` when the client acknowledged the publish (exit status 0), else its output.
    pub failure: Option<String>,
}

/// What one publisher has done so far.
#[derive(Debug, Default)]
struct Progress {
    /// The highest index whose publish was started.
    attempted: u64,
    /// The highest index acknowledged: every target up to it was published.
    acknowledged: u64,
    attempts: Vec<Attempt>,
}

/// One repository and the client that publishes to it.
struct Publisher {
    gun: String,
    owner: Notary,
    progress: Mutex<Progress>,
}

impl Publisher {
    /// The file published as target `t<index>`; its contents name the repository and index.
    fn target_file(&self, index: u64) -> PathBuf {
        self.owner.write_file(&format!("t{index}.bin"), format!("target {index} of {}\n", self.gun).as_bytes())
    }

    /// `notary add -p <gun> t<index>`: records the attempt and returns whether it was acknowledged.
    fn publish(&self, index: u64) -> bool {
        let file = self.target_file(index);
        self.progress.lock().expect("progress").attempted = index;
        let started = Instant::now();
        let output = self.owner.run(&["add", "-p", &self.gun, &format!("t{index}"), path_arg(&file)]);
        let finished = Instant::now();
        assert!(
            output.status.is_some(),
            "`notary add -p` of {} did not finish within its deadline:\n{output}",
            self.gun
        );
        let acknowledged = output.success();
        let mut progress = self.progress.lock().expect("progress");
        if acknowledged {
            progress.acknowledged = index;
        }
        progress.attempts.push(Attempt {
            index,
            started,
            finished,
            failure: (!acknowledged).then(|| output.to_string()),
        });
        acknowledged
    }

    /// The rows a fresh client's `notary list` must show when `t0..=t<last>` are published.
    fn expected_rows(&self, last: u64) -> Vec<ListedTarget> {
        let rows: Vec<ListedTarget> =
            (0..=last).map(|index| flows::listed(&format!("t{index}"), &self.target_file(index), "targets")).collect();
        flows::sorted(&rows)
    }
}

/// How the reader treats failed reads while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Every read must succeed (the fault does not touch what reads need), and after each round
    /// a fresh client runs `notary list` on one repository (the next one each round).
    AlwaysServed,
    /// A read may fail with 503 `UNAVAILABLE` (the fault takes the database away); a read that
    /// succeeds must still be a consistent, acknowledged state. No `notary list` during the load.
    MayBeUnavailable,
}

/// Repositories with a server-held snapshot key, ready for [`PublishLoad::run`].
pub struct PublishLoad {
    url: String,
    ca_cert: PathBuf,
    publishers: Vec<Publisher>,
}

/// What the closure given to [`PublishLoad::run`] can ask about the running load.
pub struct LoadHandle<'a> {
    load: &'a PublishLoad,
}

/// What the reader saw.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// States read and checked in full.
    pub consistent_reads: u64,
    /// Reads answered with 503 `UNAVAILABLE` (only with [`Reads::MayBeUnavailable`]).
    pub unavailable_reads: u64,
    /// Fresh clients' `notary list` runs that succeeded.
    pub listings: u64,
}

/// Everything the load did.
#[derive(Debug)]
pub struct LoadReport {
    /// Every attempt per repository, in order.
    pub attempts: BTreeMap<String, Vec<Attempt>>,
    /// The reader's counts.
    pub reads: ReadReport,
}

impl LoadReport {
    /// The failed attempts of every repository that started at or after `since`.
    pub fn failures_since(&self, since: Instant) -> Vec<&Attempt> {
        self.attempts
            .values()
            .flatten()
            .filter(|attempt| attempt.failure.is_some() && attempt.started >= since)
            .collect()
    }

    /// All acknowledged attempts.
    pub fn acknowledged(&self) -> usize {
        self.attempts.values().flatten().filter(|attempt| attempt.failure.is_none()).count()
    }
}

impl PublishLoad {
    /// For each of `guns`: a client of the server at `url` (trusting `ca_cert`) runs `notary init`,
    /// hands the snapshot key to the server (`notary key rotate <gun> snapshot -r`), and publishes
    /// `t0`. Every later publish then needs the server's signatures for snapshot and timestamp.
    pub fn prepare(url: &str, ca_cert: &Path, guns: &[&str]) -> PublishLoad {
        let publishers = guns
            .iter()
            .enumerate()
            .map(|(number, gun)| {
                let owner = Notary::for_url(url, ca_cert, &format!("publisher{number}"));
                flows::init_with_server_snapshot(&owner, gun);
                let publisher = Publisher { gun: (*gun).to_owned(), owner, progress: Mutex::new(Progress::default()) };
                assert!(publisher.publish(0), "the first publish of {gun} failed: {:?}", publisher.progress);
                publisher.progress.lock().expect("progress").attempts.clear();
                publisher
            })
            .collect();
        PublishLoad { url: url.to_owned(), ca_cert: ca_cert.to_path_buf(), publishers }
    }

    /// Runs the publishers and the reader until `during` returns, then stops them, finishes every
    /// repository with `notary publish` if its last attempt failed, and checks that a fresh client
    /// lists exactly the targets attempted (so every acknowledged one) in every repository.
    pub fn run<R>(&self, reads: Reads, during: impl FnOnce(&LoadHandle<'_>) -> R) -> (R, LoadReport) {
        let stop = AtomicBool::new(false);
        let (result, read_report) = std::thread::scope(|scope| {
            let mut workers = Vec::new();
            for publisher in &self.publishers {
                let stop = &stop;
                workers.push(scope.spawn(move || {
                    let mut index = 0;
                    while !stop.load(Ordering::SeqCst) {
                        index += 1;
                        publisher.publish(index);
                    }
                }));
            }
            let reader = scope.spawn(|| self.read_until(&stop, reads));
            // Whatever happens in `during`, the threads must stop, or the scope never ends.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| during(&LoadHandle { load: self })));
            stop.store(true, Ordering::SeqCst);
            let worker_results: Vec<_> = workers.into_iter().map(|worker| worker.join()).collect();
            let read_report = reader.join();
            let result = result.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for worker in worker_results {
                worker.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            }
            (result, read_report.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        });
        self.finish();
        let attempts = self
            .publishers
            .iter()
            .map(|publisher| {
                let attempts = publisher.progress.lock().expect("progress").attempts.clone();
                (publisher.gun.clone(), attempts)
            })
            .collect();
        (result, LoadReport { attempts, reads: read_report })
    }

    /// Publishes what a failed last attempt left staged, then compares a fresh client's list.
    fn finish(&self) {
        let http = https_client(&self.ca_cert).unwrap_or_else(|error| panic!("{error}"));
        for publisher in &self.publishers {
            let (attempted, acknowledged) = {
                let progress = publisher.progress.lock().expect("progress");
                (progress.attempted, progress.acknowledged)
            };
            if acknowledged < attempted {
                publisher.owner.ok(&["publish", &publisher.gun]);
            }
            let reader = Notary::for_url(&self.url, &self.ca_cert, "final-reader");
            assert_eq!(
                reader.list(&publisher.gun, None),
                publisher.expected_rows(attempted),
                "{} must hold exactly t0..=t{attempted} after the load (t{acknowledged} was the last acknowledged)",
                publisher.gun
            );
            self.check_state(&http, publisher, Reads::AlwaysServed);
        }
    }

    /// The reader: rounds over every repository until `stop`.
    fn read_until(&self, stop: &AtomicBool, reads: Reads) -> ReadReport {
        let http = https_client(&self.ca_cert).unwrap_or_else(|error| panic!("{error}"));
        let mut report = ReadReport::default();
        let mut round = 0_usize;
        while !stop.load(Ordering::SeqCst) {
            for publisher in &self.publishers {
                match self.check_state(&http, publisher, reads) {
                    Some(()) => report.consistent_reads += 1,
                    None => report.unavailable_reads += 1,
                }
            }
            if reads == Reads::AlwaysServed
                && let Some(publisher) = self.publishers.get(round % self.publishers.len().max(1))
            {
                let floor = publisher.progress.lock().expect("progress").acknowledged;
                let reader = Notary::for_url(&self.url, &self.ca_cert, "reader");
                let listed = reader.list(&publisher.gun, None);
                let ceiling = publisher.progress.lock().expect("progress").attempted;
                let names: Vec<String> = listed.iter().map(|row| row.name.clone()).collect();
                let last = published_prefix(&publisher.gun, &names, floor, ceiling);
                assert_eq!(listed, publisher.expected_rows(last), "a fresh client's list of {}", publisher.gun);
                report.listings += 1;
            }
            round += 1;
            std::thread::sleep(READ_PAUSE);
        }
        report
    }

    /// Reads `publisher`'s repository as the notary client does and checks it; `None` when a read
    /// was answered 503 `UNAVAILABLE` and `reads` allows that.
    fn check_state(&self, http: &Client, publisher: &Publisher, reads: Reads) -> Option<()> {
        let gun = &publisher.gun;
        let floor = publisher.progress.lock().expect("progress").acknowledged;
        let timestamp = self.fetch(http, gun, "timestamp.json", reads)?;
        let snapshot = self.fetch_referenced(http, gun, &timestamp, "timestamp", "snapshot", reads)?;
        let root = self.fetch_referenced(http, gun, &snapshot, "snapshot", "root", reads)?;
        let targets = self.fetch_referenced(http, gun, &snapshot, "snapshot", "targets", reads)?;
        let ceiling = publisher.progress.lock().expect("progress").attempted;
        let root: Value = parse(gun, "root", &root);
        for role in ["root", "targets", "snapshot", "timestamp"] {
            assert!(root["signed"]["roles"][role]["keyids"].is_array(), "{gun}: root lists no {role} keys: {root}");
        }
        let targets: Value = parse(gun, "targets", &targets);
        let names: Vec<String> = targets["signed"]["targets"]
            .as_object()
            .unwrap_or_else(|| panic!("{gun}: targets.json has no targets object: {targets}"))
            .keys()
            .cloned()
            .collect();
        published_prefix(gun, &names, floor, ceiling);
        Some(())
    }

    /// `GET /v2/<gun>/_trust/tuf/<file>`: the body of a 200; `None` for a 503 `UNAVAILABLE` when
    /// `reads` allows it; anything else fails the test.
    fn fetch(&self, http: &Client, gun: &str, file: &str, reads: Reads) -> Option<Vec<u8>> {
        let url = format!("{}/v2/{gun}/_trust/tuf/{file}", self.url);
        let response = http.get(&url).send().unwrap_or_else(|error| panic!("GET {url} failed: {error:?}"));
        let status = response.status().as_u16();
        let body = response.bytes().unwrap_or_else(|error| panic!("GET {url}: body: {error:?}")).to_vec();
        if status == 200 {
            return Some(body);
        }
        let text = String::from_utf8_lossy(&body);
        if reads == Reads::MayBeUnavailable && status == 503 {
            let code: Option<Value> = serde_json::from_slice(&body).ok();
            let code = code.as_ref().and_then(|body| body["errors"][0]["code"].as_str().map(str::to_owned));
            assert_eq!(code.as_deref(), Some("UNAVAILABLE"), "GET {url}: HTTP 503 {text}");
            return None;
        }
        panic!("GET {url}: HTTP {status} {text}");
    }

    /// The file `role` that `referrer` (of role `by`) names, fetched by its SHA-256, with the
    /// length and SHA-256 `referrer` gives.
    fn fetch_referenced(
        &self,
        http: &Client,
        gun: &str,
        referrer: &[u8],
        by: &str,
        role: &str,
        reads: Reads,
    ) -> Option<Vec<u8>> {
        let referrer: Value = parse(gun, by, referrer);
        let meta = &referrer["signed"]["meta"][role];
        let sha256 = meta["hashes"]["sha256"]
            .as_str()
            .unwrap_or_else(|| panic!("{gun}: {by}.json names no sha256 of {role}.json: {referrer}"));
        let sha256 = hex(&base64_decode(sha256));
        let length = meta["length"].as_u64().unwrap_or_else(|| panic!("{gun}: {by}.json: no length of {role}"));
        let body = self.fetch(http, gun, &format!("{role}.{sha256}.json"), reads)?;
        assert_eq!(
            body.len() as u64,
            length,
            "{gun}: {role}.json served by checksum has another length than {by} says"
        );
        assert_eq!(sha256_hex(&body), sha256, "{gun}: {role}.{sha256}.json has other bytes than its checksum");
        Some(body)
    }
}

impl LoadHandle<'_> {
    /// Waits until every publisher has had an acknowledged publish that started at or after
    /// `since`; panics after `limit`. Returns how long after `since` the last of them finished.
    #[track_caller]
    pub fn wait_until_all_publish_since(&self, since: Instant, limit: Duration) -> Duration {
        let deadline = since + limit;
        loop {
            let mut latest = Some(since);
            for publisher in &self.load.publishers {
                let progress = publisher.progress.lock().expect("progress");
                let first = progress
                    .attempts
                    .iter()
                    .find(|attempt| attempt.started >= since && attempt.failure.is_none())
                    .map(|attempt| attempt.finished);
                latest = match (latest, first) {
                    (Some(latest), Some(first)) => Some(latest.max(first)),
                    _ => None,
                };
            }
            if let Some(latest) = latest {
                return latest - since;
            }
            if Instant::now() > deadline {
                let attempts: Vec<String> = self
                    .load
                    .publishers
                    .iter()
                    .map(|publisher| {
                        let progress = publisher.progress.lock().expect("progress");
                        let last = progress.attempts.iter().rev().find(|attempt| attempt.failure.is_some());
                        format!("{}: {:?}", publisher.gun, last.and_then(|attempt| attempt.failure.as_ref()))
                    })
                    .collect();
                panic!("not every publisher published within {limit:?}; last failures:\n{}", attempts.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Checks that `names` are exactly `t0..=tk` with `floor <= k <= ceiling` and returns `k`.
#[track_caller]
fn published_prefix(gun: &str, names: &[String], floor: u64, ceiling: u64) -> u64 {
    let mut indices: Vec<u64> = names
        .iter()
        .map(|name| {
            name.strip_prefix('t')
                .and_then(|index| index.parse().ok())
                .unwrap_or_else(|| panic!("{gun} holds a target no publisher added: {name:?}"))
        })
        .collect();
    indices.sort_unstable();
    let last = indices.len().checked_sub(1).unwrap_or_else(|| panic!("{gun} holds no target")) as u64;
    assert!(
        indices.iter().copied().eq(0..=last),
        "{gun} holds targets {indices:?}: not t0..=tk, so a publish was half applied or lost"
    );
    assert!(
        (floor..=ceiling).contains(&last),
        "{gun} serves t0..=t{last}, but t{floor} was acknowledged before the read and t{ceiling} was the last attempt \
         started before it ended"
    );
    last
}

fn parse(gun: &str, role: &str, bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|error| panic!("{gun}: {role}.json is not JSON ({error}): {}", String::from_utf8_lossy(bytes)))
}

/// Lower-case hex SHA-256 of `bytes`, from coreutils' `sha256sum`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let output = run_with_timeout(&mut Command::new("sha256sum"), bytes, Duration::from_secs(30));
    assert!(output.success(), "sha256sum failed:\n{output}");
    output.stdout.split_whitespace().next().unwrap_or_default().to_owned()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
