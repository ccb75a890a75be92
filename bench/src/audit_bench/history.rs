//! `audit-bench history`: "who signed tag T" on a store holding a million audit entries. It
//! fills a fresh store (SQLite, and PostgreSQL when `DATABASE_URL` is set) through the public
//! [`Store`] API: publishes with their grants and target history through [`Store::update`], then
//! the rest of the entries through [`Store::append_audit_batch`]; then times
//! [`Store::target_history`] (and the audit log's filtered pages) for random tags.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tufa_audit::NewEntry;
use tufa_audit::entry::kinds;
use tufa_store::{AuditFilter, CurrentEntry, GrantKey, NewFile, NewGrant, NewTargetEvent, Record, Store, Update};

use super::{Summary, describe_machine, load_average, ms, pg};

/// How big a store to build and how many questions to time.
#[derive(Clone)]
pub(crate) struct Options {
    /// Audit entries in the end (publishes included).
    pub(crate) entries: u64,
    /// Repositories.
    pub(crate) repos: usize,
    /// Publishes per repository through [`Store::update`].
    pub(crate) publishes: usize,
    /// Tags each publish re-signs (one target event each).
    pub(crate) tags: usize,
    /// Timed `target_history` calls.
    pub(crate) queries: usize,
    /// Entries per `append_audit_batch` transaction.
    pub(crate) batch: usize,
    /// A tufa-server binary, to time the `audit history` command too.
    pub(crate) server: Option<PathBuf>,
    /// Whether to measure SQLite (PostgreSQL is measured when a URL is given).
    pub(crate) sqlite: bool,
}

/// Concurrent writers during the publish phase (each on its own repositories).
const WRITERS: usize = 4;

/// A small deterministic generator (xorshift64*), so runs pick the same tags.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A stable fake SHA-256 (hex) standing for `what`.
fn digest(what: &str) -> String {
    hex(&tufa_core::keys::sha256(what.as_bytes()))
}

fn gun(repo: usize) -> String {
    format!("registry.example.com/team{}/service-{repo}", repo % 37)
}

fn tag(index: usize) -> String {
    format!("v1.{index}.0")
}

/// The key IDs a repository's files are signed with: targets, snapshot, timestamp, delegate.
fn repo_keys(repo: usize) -> [String; 4] {
    ["targets", "snapshot", "timestamp", "releases"].map(|role| digest(&format!("{role} key of repo {repo}")))
}

fn principal(repo: usize, publish: usize) -> String {
    format!("ci-team{}-{}", repo % 37, publish % 3)
}

/// The record the server would write for publish `publish` (0-based) of `repo`, re-signing
/// `tags` tags: the entry, one target event per tag, and on the first publish the delegation
/// grant of the targets file (later versions leave it unchanged, so it stays in force).
fn publish_record(repo: usize, publish: usize, tags: usize) -> Record {
    let [targets_key, snapshot_key, timestamp_key, releases_key] = repo_keys(repo);
    let version = i64::try_from(publish + 2).unwrap_or(i64::MAX);
    let change = if publish == 0 { "added" } else { "changed" };
    let events: Vec<NewTargetEvent> = (0..tags)
        .map(|index| NewTargetEvent {
            name: tag(index),
            role: "targets".into(),
            version,
            change: change.into(),
            sha256: Some(digest(&format!("{repo}/{index}/{publish}"))),
            length: Some(i64::try_from(1500 + index * 7 + publish).unwrap_or_default()),
            signer_keys: vec![targets_key.clone()].into(),
            signer_canonical_ids: vec![targets_key.clone()].into(),
        })
        .collect();
    let targets: Vec<Value> = events
        .iter()
        .map(|event| {
            json!({"role": event.role, "name": event.name, "change": event.change, "sha256": event.sha256,
                "length": event.length})
        })
        .collect();
    let details = json!({
        "roles": {"snapshot": version, "targets": version, "timestamp": version},
        "signers": {"snapshot": [snapshot_key], "targets": [targets_key]},
        "online_signatures": [{"role": "timestamp", "key_id": timestamp_key,
            "payload_sha256": digest(&format!("timestamp {repo} {publish}"))}],
        "targets": targets,
    });
    let entry =
        NewEntry::new(kinds::PUBLISH, details).gun(&gun(repo)).by(Some(&principal(repo, publish))).from_request(
            Some(&format!("10.{}.{}.{}:4{:04}", repo % 200, publish % 250, repo % 251, publish)),
            Some(&digest(&format!("request {repo} {publish}"))[..24]),
        );
    let grant = NewGrant {
        delegating_role: "targets".into(),
        delegated_role: "targets/releases".into(),
        version,
        threshold: 1,
        paths: Some(r#"["releases/"]"#.to_owned()),
        keys: vec![GrantKey {
            key_id: releases_key.clone(),
            canonical_id: releases_key,
            subject: Some(format!("CN=release-bot-{}", repo % 37)),
        }],
    };
    Record {
        entry,
        keys: vec![targets_key, snapshot_key, timestamp_key],
        superseded: Vec::new(),
        grants: if publish == 0 { vec![grant] } else { Vec::new() },
        history: events,
        streamed: None,
    }
}

/// The update that stores publish `publish` of `repo`: a small targets file standing for the
/// real one (the figures are about the audit tables, not file bytes), and its record.
fn publish_update(repo: usize, publish: usize, tags: usize) -> Update {
    let version = i64::try_from(publish + 2).unwrap_or(i64::MAX);
    let data = format!(
        "{{\"signed\":{{\"_type\":\"Targets\",\"gun\":\"{}\",\"version\":{version}}},\"signatures\":[]}}",
        gun(repo)
    )
    .into_bytes();
    let sha256 = hex(&tufa_core::keys::sha256(&data));
    Update {
        gun: gun(repo),
        files: vec![NewFile { role: "targets".into(), version, sha256: sha256.clone(), data, expires: None }],
        current: vec![CurrentEntry { role: "targets".into(), sha256 }],
        expected_timestamp_version: None,
        record: publish_record(repo, publish, tags),
    }
}

/// One of the other entries a busy server writes between publishes: mostly publishes of one to
/// three tags (with their signer keys indexed), some key creations and account changes.
fn filler_record(random: &mut Random, repos: usize, serial: u64) -> Record {
    let repo = random.below(repos);
    let choice = random.below(100);
    if choice < 90 {
        let changed = 1 + random.below(3);
        let mut record = publish_record(repo, 1000 + random.below(100_000), changed);
        record.grants.clear();
        record.history.clear();
        record
    } else if choice < 95 {
        let key_id = digest(&format!("online key {serial}"));
        let details = json!({"role": "timestamp", "key_id": key_id, "rotation": random.below(2) == 1});
        let mut record = Record::new(
            NewEntry::new(kinds::KEY_CREATE, details)
                .gun(&gun(repo))
                .by(Some(&principal(repo, 0)))
                .from_request(Some("10.0.0.7:51234"), Some(&digest(&format!("request {serial}"))[..24])),
        );
        record.keys = vec![key_id];
        record
    } else {
        let details = json!({"principal": principal(repo, serial as usize), "role": "writer",
            "pattern": format!("registry.example.com/team{}/*", repo % 37)});
        Record::new(NewEntry::new(kinds::ROLE_GRANT, details).by(Some("admin")))
    }
}

/// Fills `store`; returns (publish phase, batch phase) durations.
async fn fill(store: &Arc<dyn Store>, options: &Options) -> Result<(Duration, Duration), String> {
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(store);
        let (repos, publishes, tags) = (options.repos, options.publishes, options.tags);
        writers.push(tokio::spawn(async move {
            for publish in 0..publishes {
                for repo in (writer..repos).step_by(WRITERS) {
                    store
                        .update(publish_update(repo, publish, tags))
                        .await
                        .map_err(|error| format!("publish {publish} of repo {repo}: {error}"))?;
                }
                if writer == 0 && (publish + 1) % 5 == 0 {
                    eprintln!("audit-bench: {} of {publishes} publishes per repository stored", publish + 1);
                }
            }
            Ok::<(), String>(())
        }));
    }
    for writer in writers {
        writer.await.map_err(|error| error.to_string())??;
    }
    let publish_phase = started.elapsed();

    let started = Instant::now();
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let mut size = store.audit_size().await.map_err(|error| error.to_string())?;
    let mut next_report = size / 100_000 * 100_000 + 100_000;
    while size < options.entries {
        let count = (options.entries - size).min(u64::try_from(options.batch).unwrap_or(1));
        let records: Vec<Record> =
            (0..count).map(|offset| filler_record(&mut random, options.repos, size + offset)).collect();
        store.append_audit_batch(records).await.map_err(|error| format!("append at {size}: {error}"))?;
        size += count;
        if size >= next_report {
            eprintln!("audit-bench: {size} audit entries ({:.0} s)", started.elapsed().as_secs_f64());
            next_report += 100_000;
        }
    }
    Ok((publish_phase, started.elapsed()))
}

/// Timed calls of `question` for `count` random (repository, tag) pairs, after 100 untimed
/// ones; also checks each answer's size.
async fn time_history(store: &Arc<dyn Store>, options: &Options, count: usize) -> Result<Summary, String> {
    let mut random = Random(0xD1B5_4A32_D192_ED03);
    let mut latencies = Vec::with_capacity(count);
    for round in 0..count + 100 {
        let (repo, index) = (random.below(options.repos), random.below(options.tags));
        let started = Instant::now();
        let events = store.target_history(&gun(repo), &tag(index)).await.map_err(|error| error.to_string())?;
        let elapsed = started.elapsed();
        if events.len() != options.publishes {
            return Err(format!(
                "target_history({}, {}) returned {} events, expected {}",
                gun(repo),
                tag(index),
                events.len(),
                options.publishes
            ));
        }
        if round >= 100 {
            latencies.push(elapsed);
        }
    }
    Ok(Summary::of(&latencies))
}

/// Timed first pages (100 entries) of the audit log filtered by repository or by key.
async fn time_log_pages(store: &Arc<dyn Store>, options: &Options, by_key: bool) -> Result<Summary, String> {
    let mut random = Random(0x94D0_49BB_1331_11EB);
    let mut latencies = Vec::new();
    for round in 0..300 {
        let repo = random.below(options.repos);
        let mut filter = AuditFilter { limit: 100, ..AuditFilter::default() };
        if by_key {
            let [targets_key, ..] = repo_keys(repo);
            filter.key = Some(targets_key);
        } else {
            filter.gun = Some(gun(repo));
        }
        let started = Instant::now();
        let page = store.audit_entries(&filter).await.map_err(|error| error.to_string())?;
        let elapsed = started.elapsed();
        if page.is_empty() {
            return Err(format!("the audit log has no entry for repository {}", gun(repo)));
        }
        if round >= 50 {
            latencies.push(elapsed);
        }
    }
    Ok(Summary::of(&latencies))
}

/// Times `tufa-server audit history GUN TAG` as a whole process (start, open, query, print).
fn time_cli(server: &Path, database_url: &str, options: &Options) -> Result<Summary, String> {
    let mut random = Random(0xBF58_476D_1CE4_E5B9);
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let (repo, index) = (random.below(options.repos), random.below(options.tags));
        let started = Instant::now();
        let output = Command::new(server)
            .args(["audit", "history", &gun(repo), &tag(index), "--database-url", database_url])
            .output()
            .map_err(|error| format!("cannot run {}: {error}", server.display()))?;
        latencies.push(started.elapsed());
        let lines = String::from_utf8_lossy(&output.stdout).lines().count();
        if !output.status.success() || lines != options.publishes {
            return Err(format!(
                "{} audit history: {}, {lines} lines: {}",
                server.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(Summary::of(&latencies))
}

fn print_row(question: &str, summary: &Summary) {
    println!(
        "| {question:<52} | {:>5} | {:>6} | {:>6} | {:>6} | {:>7} |",
        summary.count,
        ms(summary.p50),
        ms(summary.p99),
        ms(summary.max),
        ms(summary.mean)
    );
}

/// Fills one store and prints its figures. `size` reports the database's size in bytes.
async fn measure(backend: &str, store: Arc<dyn Store>, options: &Options, cli_url: Option<&str>) -> Result<(), String> {
    eprintln!("audit-bench: {backend}: filling");
    let (publish_phase, batch_phase) = fill(&store, options).await?;
    let size = store.audit_size().await.map_err(|error| error.to_string())?;
    // The fill leaves the index rows of its small entries pending, as a server does between two
    // moves; a server would have moved them as they came.
    let started = Instant::now();
    let moved = store.flush_audit_index().await.map_err(|error| error.to_string())?;
    let move_phase = started.elapsed();
    let history = time_history(&store, options, options.queries).await?;
    let by_gun = time_log_pages(&store, options, false).await?;
    let by_key = time_log_pages(&store, options, true).await?;
    let cli = match (&options.server, cli_url) {
        (Some(server), Some(url)) => Some(time_cli(server, url, options)?),
        _ => None,
    };
    println!();
    println!("## {backend}");
    println!(
        "moved the pending index rows of {moved} entries into their tables in {:.1} s before the questions",
        move_phase.as_secs_f64()
    );
    println!(
        "filled {size} audit entries: {} publishes through Store::update ({} target events, {} grants) in {:.1} s \
         ({WRITERS} writers), then {} entries through append_audit_batch ({} per transaction) in {:.1} s; load \
         average now {}",
        options.repos * options.publishes,
        options.repos * options.publishes * options.tags,
        options.repos * options.publishes,
        publish_phase.as_secs_f64(),
        size.saturating_sub(u64::try_from(options.repos * options.publishes).unwrap_or_default()),
        options.batch,
        batch_phase.as_secs_f64(),
        load_average()
    );
    println!();
    println!("| question                                             | calls | p50 ms | p99 ms | max ms | mean ms |");
    println!("| ---------------------------------------------------- | ----: | -----: | -----: | -----: | ------: |");
    print_row(&format!("Store::target_history (who signed tag T; {} events)", options.publishes), &history);
    print_row("Store::audit_entries, gun filter, first 100", &by_gun);
    print_row("Store::audit_entries, key filter, first 100", &by_key);
    if let Some(cli) = &cli {
        print_row("`tufa-server audit history` (whole process)", cli);
    }
    Ok(())
}

/// The size of the SQLite database at `path` with its write-ahead log, in bytes.
fn sqlite_size(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::fs::metadata(PathBuf::from(name)).map_or(0, |metadata| metadata.len())
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Runs the measurement on SQLite, then on PostgreSQL when `database_url` is set.
pub(crate) async fn run(options: &Options, database_url: Option<&str>) -> Result<(), String> {
    let mut options = options.clone();
    options.server = options.server.or_else(|| {
        let next_to_us = std::env::current_exe().ok()?.parent()?.join("tufa-server");
        next_to_us.exists().then_some(next_to_us)
    });
    println!("audit-bench history, {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
    println!("{}", describe_machine());
    println!(
        "store: {} audit entries; {} repositories x {} publishes, each re-signing {} tags (so each tag has {} \
         events); the other entries are publishes of 1-3 tags (90%), key creations (5%) and role grants (5%) \
         spread over the same repositories; {} random (repository, tag) questions after 100 untimed ones",
        options.entries, options.repos, options.publishes, options.tags, options.publishes, options.queries
    );

    if options.sqlite {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let path = dir.path().join("tufa.db");
        let store = tufa_store::open_sqlite(&path).await.map_err(|error| error.to_string())?;
        let url = format!("sqlite://{}", path.display());
        measure("SQLite", store, &options, Some(&url)).await?;
        println!("database size: {} (file and write-ahead log)", mib(sqlite_size(&path)));
        drop(dir);
    }

    if let Some(admin_url) = database_url {
        let settings = pg::settings(admin_url).await;
        let scratch = pg::Scratch::create(admin_url, "history").await?;
        let result = async {
            let url = tufa_store::DatabaseUrl::parse(&scratch.url).map_err(|error| error.to_string())?;
            let store = tufa_store::open(&url).await.map_err(|error| error.to_string())?;
            measure(&format!("PostgreSQL ({settings})"), store, &options, Some(&scratch.url)).await?;
            let size = scratch.size().await?;
            println!("database size: {}", mib(u64::try_from(size).unwrap_or_default()));
            Ok::<(), String>(())
        }
        .await;
        let dropped = scratch.drop_now().await;
        result?;
        dropped?;
    }
    Ok(())
}
