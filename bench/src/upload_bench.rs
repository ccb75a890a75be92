//! upload-bench: what the worst uploads within tufa-server's limits cost the server, and what
//! they do to other clients' reads. It starts a tufa-server, publishes one real repository and
//! stops it; then each worst case (the most targets, delegations, paths, signatures, root keys, and
//! 32 MiB of nesting the limits allow; correctly signed where signing matters, so the expensive
//! checks run) is sent to a server of its own started on a copy of that repository, so that no case
//! is measured against what another left. It prints, per request, the server's CPU time (from
//! /proc) and its peak memory growth (the high-water mark reset through /proc/PID/clear_refs before
//! each request), both from a send with no other client (the CPU is the whole process's), then the
//! CPU of the same send to another fresh server while a client reads `root.json`, and the GET
//! latency that client saw. It measures; it never asserts a speed.
//!
//! Each case's server first serves one unmeasured publish of another repository (10,000 targets),
//! as a running server has, so that what it keeps filled from then on (SQLite's page cache, the
//! blocking pool's thread and its allocator arena) is not counted as the case's memory.
//!
//! Usage: `upload-bench [--repeat N]`. Environment: `TUFA_SERVER_BIN` (default: the `tufa-server`
//! next to this binary; a wrapper script that `exec`s it, for example under a heap profiler, works
//! too), `UPLOAD_BENCH_CASE` (only the cases whose name contains this text), `UPLOAD_BENCH_COLD`
//! (set: no warm-up publish, each case is its server's first). Build both first: `cargo build --release -p tufa-server -p tufa-bench`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

#[path = "signed.rs"]
mod signed;
use signed::{Key, expires, first_root, meta, multipart, new_private, sign, timestamp_key};
use tufa_core::canonical::to_canonical;
use tufa_core::metadata::{Signature, envelope};
use tufa_core::update::Limits;

const GUN: &str = "bench.example/app";
const USAGE: &str = "usage: upload-bench [--repeat N]   (repeats after the first send measure the refusal of a version \
                     that is already stored; UPLOAD_BENCH_VERBOSE=1 prints each refusal)";

/// The repository the worst cases are uploaded to.
struct Repo {
    root_key: Key,
    targets: Key,
    snapshot: Key,
    root: Vec<u8>,
}

/// One worst case: its name and its multipart files, and the files of the publishes sent first,
/// in order, and not measured (what the case replaces), if any.
struct Case {
    name: String,
    files: Vec<(String, Vec<u8>)>,
    setup: Vec<Vec<(String, Vec<u8>)>>,
}

fn target_entry(prefix: &str, index: usize) -> (String, Value) {
    let content = index.to_le_bytes();
    (format!("{prefix}/v{index}"), meta(&content))
}

fn targets_body(version: i64, targets: Map<String, Value>, delegations: Value) -> Value {
    json!({"_type": "Targets", "delegations": delegations, "expires": expires(365), "targets": targets, "version": version})
}

/// Builds every worst case for `repo` under `limits` and `max_body` bytes.
fn cases(repo: &Repo, limits: &Limits, max_body: usize) -> Result<Vec<Case>, String> {
    let no_delegations = json!({"keys": {}, "roles": []});
    let mut out = Vec::new();
    // Each signed case is one version newer than the one before, so each can be accepted in turn.
    let with_snapshot = |name: &str, version: i64, targets: Vec<u8>| -> Result<Case, String> {
        let snapshot = sign(
            &json!({"_type": "Snapshot", "expires": expires(365), "version": version,
                "meta": {"root": meta(&repo.root), "targets": meta(&targets)}}),
            &[&repo.snapshot],
        )?;
        Ok(Case {
            name: name.into(),
            files: vec![("targets".into(), targets), ("snapshot".into(), snapshot)],
            setup: Vec::new(),
        })
    };
    // An empty targets file at `version`: published, unmeasured, before a case, so that the case
    // replaces a file with nothing in it rather than whatever the case before it left.
    let emptied = |version: i64| -> Result<Vec<(String, Vec<u8>)>, String> {
        let targets = sign(&targets_body(version, Map::new(), no_delegations.clone()), &[&repo.targets])?;
        Ok(with_snapshot("", version, targets)?.files)
    };
    // The most targets one file may list, named `prefix/v<index>`.
    let most_targets = |prefix: &str| {
        let mut targets = Map::new();
        let mut index = 0;
        while targets.len() < limits.max_targets {
            let (name, entry) = target_entry(prefix, index);
            targets.insert(name, entry);
            index += 1;
            if targets.len().is_multiple_of(1000) && targets.len() * 120 > max_body * 9 / 10 {
                break;
            }
        }
        targets
    };

    // The most targets one file may list, signed: every entry is parsed and checked.
    let targets = most_targets("release");
    let count = targets.len();
    let body = sign(&targets_body(3, targets, no_delegations.clone()), &[&repo.targets])?;
    out.push(with_snapshot(&format!("{count} targets, signed"), 3, body)?);

    // The same number of other targets replacing them: every old one is removed and every new
    // one added, so the record reads the stored file too and writes twice the history rows.
    let setup =
        with_snapshot("", 4, sign(&targets_body(4, most_targets("old"), no_delegations.clone()), &[&repo.targets])?)?;
    let body = sign(&targets_body(5, most_targets("new"), no_delegations.clone()), &[&repo.targets])?;
    let mut replacing = with_snapshot(&format!("{count} targets replacing {count} others, signed"), 5, body)?;
    replacing.setup = vec![setup.files];
    out.push(replacing);

    // The most delegations, each with the most paths that fit, signed: the path checks run.
    let delegate = Key::ecdsa()?;
    let mut keys = Map::new();
    keys.insert(delegate.id(), delegate.public.to_json());
    let per_path = 24;
    let budget = max_body * 8 / 10;
    let delegations = limits.max_delegations;
    let paths_each = (budget / delegations / per_path).clamp(1, limits.max_delegation_paths);
    let roles: Vec<Value> = (0..delegations)
        .map(|role| {
            let paths: Vec<String> = (0..paths_each).map(|path| format!("team{role}/p{path}/")).collect();
            json!({"name": format!("targets/d{role}"), "keyids": [delegate.id()], "threshold": 1, "paths": paths})
        })
        .collect();
    let body = sign(&targets_body(7, Map::new(), json!({"keys": keys, "roles": roles})), &[&repo.targets])?;
    let mut most_delegations =
        with_snapshot(&format!("{delegations} delegations x {paths_each} paths, signed"), 7, body)?;
    most_delegations.setup = vec![emptied(6)?];
    out.push(most_delegations);

    // One delegation with the most paths, and targets that must each be matched against them.
    let paths: Vec<String> = (0..limits.max_delegation_paths).map(|path| format!("zone{path}/")).collect();
    let role = json!({"name": "targets/wide", "keyids": [delegate.id()], "threshold": 1, "paths": paths});
    let mut keys = Map::new();
    keys.insert(delegate.id(), delegate.public.to_json());
    let parent = sign(&targets_body(9, Map::new(), json!({"keys": keys, "roles": [role]})), &[&repo.targets])?;
    let mut child_targets = Map::new();
    let fit = (max_body / 2 / 130).min(limits.max_targets);
    for index in 0..fit {
        child_targets
            .insert(format!("zone{}/file{index}", index % limits.max_delegation_paths), meta(&index.to_le_bytes()));
    }
    let child = sign(&targets_body(1, child_targets, json!({"keys": {}, "roles": []})), &[&delegate])?;
    let snapshot = sign(
        &json!({"_type": "Snapshot", "expires": expires(365), "version": 9,
            "meta": {"root": meta(&repo.root), "targets": meta(&parent), "targets/wide": meta(&child)}}),
        &[&repo.snapshot],
    )?;
    out.push(Case {
        name: format!("{} paths x {fit} delegated targets, signed", limits.max_delegation_paths),
        files: vec![("targets".into(), parent), ("targets/wide".into(), child), ("snapshot".into(), snapshot)],
        setup: vec![emptied(8)?],
    });

    // Delegated files of the most targets each in one upload: as many as the per-upload limit
    // allows (accepted), then one more (refused when the files are counted, before anything is
    // verified). Then the same files published one at a time and emptied by one small upload:
    // what the record reads and removes is what the stored files hold, not what the upload
    // carries (accepted at the limit; one more file is refused before the record reads them).
    // A small update of a repository that holds a large delegated file it does not replace: the
    // update reads its own files and their parents, not the repository's other files.
    let mut keys = Map::new();
    keys.insert(delegate.id(), delegate.public.to_json());
    let role = json!({"name": "targets/big", "keyids": [delegate.id()], "threshold": 1, "paths": ["big/"]});
    let delegations = json!({"keys": keys, "roles": [role]});
    let parent = sign(&targets_body(11, Map::new(), delegations.clone()), &[&repo.targets])?;
    let big_targets: Map<String, Value> = (0..limits.max_targets).map(|index| target_entry("big", index)).collect();
    let big = sign(&targets_body(1, big_targets, no_delegations.clone()), &[&delegate])?;
    let listing = |version: i64, parent: &[u8]| {
        let body = json!({"_type": "Snapshot", "expires": expires(365), "version": version,
            "meta": {"root": meta(&repo.root), "targets": meta(parent), "targets/big": meta(&big)}});
        sign(&body, &[&repo.snapshot])
    };
    let setup = vec![
        ("targets".to_owned(), parent.clone()),
        ("targets/big".to_owned(), big.clone()),
        ("snapshot".to_owned(), listing(11, &parent)?),
    ];
    let mut small = Map::new();
    small.insert("v1".into(), meta(b"v1"));
    let newer = sign(&targets_body(12, small, delegations), &[&repo.targets])?;
    let snapshot = listing(12, &newer)?;
    out.push(Case {
        name: format!("1 target beside a stored delegated file of {} targets", limits.max_targets),
        files: vec![("targets".into(), newer.clone()), ("snapshot".into(), snapshot)],
        setup: vec![setup.clone()],
    });
    // The same, with a snapshot whose entry for the stored file is wrong (refused): judged by the
    // stored snapshot's entry, not by reading the file.
    let mut wrong = meta(&big);
    if let Some(length) = wrong.get_mut("length") {
        *length = json!(big.len() + 1);
    }
    let body = json!({"_type": "Snapshot", "expires": expires(365), "version": 12,
        "meta": {"root": meta(&repo.root), "targets": meta(&newer), "targets/big": wrong}});
    out.push(Case {
        name: format!("a wrong snapshot entry for a stored delegated file of {} targets", limits.max_targets),
        files: vec![("targets".into(), newer), ("snapshot".into(), sign(&body, &[&repo.snapshot])?)],
        setup: vec![setup],
    });

    let fit = (limits.max_upload_targets / limits.max_targets).max(1);
    for spread in [fit, fit + 1] {
        out.extend(spread_cases(repo, limits, max_body, &delegate, spread)?);
    }

    // The most signatures, all by unknown keys: each is looked at, none verifies.
    let canonical = to_canonical(&targets_body(10, Map::new(), no_delegations.clone())).map_err(|e| e.to_string())?;
    let signatures: Vec<Signature> = (0..limits.max_signatures)
        .map(|index| Signature { keyid: format!("{index:064x}"), method: "ecdsa".into(), sig: vec![7; 64] })
        .collect();
    out.push(Case {
        name: format!("{} signatures by unknown keys", limits.max_signatures),
        files: vec![("targets".into(), envelope(&canonical, &signatures))],
        setup: Vec::new(),
    });

    // A root with the most keys (certificates), signed by the real root key.
    let mut key_map = Map::new();
    for key in [&repo.root_key, &repo.targets, &repo.snapshot] {
        key_map.insert(key.id(), key.public.to_json());
    }
    while key_map.len() < limits.max_root_keys {
        let extra = Key::root_for(&new_private()?, GUN)?;
        key_map.insert(extra.id(), extra.public.to_json());
    }
    let body = json!({"_type": "Root", "consistent_snapshot": false, "expires": expires(3650), "version": 2,
    "keys": key_map,
    "roles": {
        "root": {"keyids": [repo.root_key.id()], "threshold": 1},
        "targets": {"keyids": [repo.targets.id()], "threshold": 1},
        "snapshot": {"keyids": [repo.snapshot.id()], "threshold": 1},
        "timestamp": {"keyids": [repo.targets.id()], "threshold": 1},
    }});
    out.push(Case {
        name: format!("root with {} certificate keys", limits.max_root_keys),
        files: vec![("root".into(), sign(&body, &[&repo.root_key])?)],
        setup: Vec::new(),
    });

    // The largest body of empty arrays, and of deep nesting: refused by the parser.
    let arrays = format!("{{\"signed\":{{\"x\":[{}[]]}},\"signatures\":[]}}", "[],".repeat((max_body - 1024) / 3));
    out.push(Case {
        name: format!("{} MiB of empty arrays", max_body >> 20),
        files: vec![("targets".into(), arrays.into_bytes())],
        setup: Vec::new(),
    });
    let nested = format!("{}{}", "[".repeat(max_body / 2 - 1024), "]".repeat(max_body / 2 - 1024));
    out.push(Case {
        name: format!("{} MiB of nesting", max_body >> 20),
        files: vec![("targets".into(), nested.into_bytes())],
        setup: Vec::new(),
    });
    Ok(out)
}

/// Two cases for `spread` delegated files (`targets/part<n>`, each under `part<n>/`) of the most
/// targets each: all of them in one upload, and all of them, published one at a time beforehand,
/// emptied by one upload.
fn spread_cases(
    repo: &Repo,
    limits: &Limits,
    max_body: usize,
    delegate: &Key,
    spread: usize,
) -> Result<Vec<Case>, String> {
    let no_delegations = json!({"keys": {}, "roles": []});
    let parts: Vec<String> = (0..spread).map(|part| format!("targets/part{part}")).collect();
    let roles: Vec<Value> = parts
        .iter()
        .enumerate()
        .map(|(part, name)| json!({"name": name, "keyids": [delegate.id()], "threshold": 1, "paths": [format!("part{part}/")]}))
        .collect();
    let mut keys = Map::new();
    keys.insert(delegate.id(), delegate.public.to_json());
    let parent = sign(&targets_body(11, Map::new(), json!({"keys": keys, "roles": roles})), &[&repo.targets])?;
    let per_file = limits.max_targets.min((max_body - 64 * 1024) / spread / 100);
    let full: Vec<Vec<u8>> = (0..spread)
        .map(|part| {
            let targets: Map<String, Value> =
                (0..per_file).map(|index| target_entry(&format!("part{part}"), index)).collect();
            sign(&targets_body(1, targets, no_delegations.clone()), &[delegate])
        })
        .collect::<Result<_, _>>()?;
    let snapshot_of = |version: usize, files: &[(&str, &[u8])]| {
        let mut listed = Map::new();
        listed.insert("root".into(), meta(&repo.root));
        listed.insert("targets".into(), meta(&parent));
        for (role, bytes) in files {
            listed.insert((*role).to_owned(), meta(bytes));
        }
        let body = json!({"_type": "Snapshot", "expires": expires(365), "version": version, "meta": listed});
        sign(&body, &[&repo.snapshot])
    };
    let mut out = Vec::new();
    let mut files = vec![("targets".to_owned(), parent.clone())];
    files.extend(parts.iter().cloned().zip(full.iter().cloned()));
    let listed: Vec<(&str, &[u8])> = parts.iter().map(String::as_str).zip(full.iter().map(Vec::as_slice)).collect();
    files.push(("snapshot".into(), snapshot_of(11, &listed)?));
    out.push(Case {
        name: format!("{spread} delegated files x {per_file} targets in one upload"),
        files,
        setup: Vec::new(),
    });

    let mut setup = Vec::new();
    for (part, (name, bytes)) in parts.iter().zip(&full).enumerate() {
        let mut publish = if part == 0 { vec![("targets".to_owned(), parent.clone())] } else { Vec::new() };
        publish.push((name.clone(), bytes.clone()));
        let so_far: Vec<(&str, &[u8])> = listed.iter().take(part + 1).copied().collect();
        publish.push(("snapshot".into(), snapshot_of(11 + part, &so_far)?));
        setup.push(publish);
    }
    let empty = sign(&targets_body(2, Map::new(), no_delegations), &[delegate])?;
    let mut files: Vec<(String, Vec<u8>)> = parts.iter().map(|part| (part.clone(), empty.clone())).collect();
    let listed: Vec<(&str, &[u8])> = parts.iter().map(|part| (part.as_str(), empty.as_slice())).collect();
    files.push(("snapshot".into(), snapshot_of(11 + spread, &listed)?));
    out.push(Case {
        name: format!("{spread} stored delegated files x {per_file} targets emptied in one upload"),
        files,
        setup,
    });
    Ok(out)
}

/// CPU time (user + system) of a process, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|error| error.to_string())?;
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("odd /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|value| value.parse::<u64>().ok()).ok_or("odd /proc stat");
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 10))
}

/// A memory figure from /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|error| error.to_string())?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field).and_then(|rest| rest.split_whitespace().next()?.parse().ok()))
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

fn reset_peak(pid: u32) -> Result<(), String> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").map_err(|error| format!("clear_refs: {error}"))
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    /// Starts `binary` on the data directory `data` (its log beside it); returns it with its URL.
    fn start(binary: &Path, data: &Path) -> Result<(ServerProcess, String), String> {
        let port = tufa_testkit::process::free_port()?;
        let log = std::fs::File::create(data.with_extension("log")).map_err(|error| error.to_string())?;
        let child = Command::new(binary)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log-level", "warn", "--data-dir"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        Ok((ServerProcess { child }, format!("https://127.0.0.1:{port}")))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server as an operator would (SIGTERM), so that its database is closed cleanly.
    fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().map_err(|error| error.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().map_err(|error| error.to_string())?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("tufa-server did not stop within 30 s of SIGTERM".into())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The server runs in a process group of its own, so a wrapper that does not `exec` it
        // (heaptrack, for one) takes the server down with it instead of leaving it running.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the directory `from` into `to` (which must not exist), files and subdirectories.
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|error| format!("{}: {error}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|error| format!("{}: {error}", from.display()))? {
        let entry = entry.map_err(|error| error.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|error| error.to_string())?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|error| format!("{}: {error}", target.display()))?;
        }
    }
    Ok(())
}

fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TUFA_SERVER_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("tufa-server")))
        .unwrap_or_else(|| PathBuf::from("tufa-server"))
}

async fn wait_healthy(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{url}/_notary_server/health")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("tufa-server did not become healthy".into())
}

async fn client_for(ca: &Path) -> Result<reqwest::Client, String> {
    for _ in 0..100 {
        if let Ok(pem) = std::fs::read(ca) {
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|error| error.to_string())?;
            return reqwest::Client::builder()
                .add_root_certificate(certificate)
                .timeout(Duration::from_secs(120))
                .build()
                .map_err(|error| error.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{} never appeared", ca.display()))
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    files: &[(String, Vec<u8>)],
) -> Result<(u16, usize, String), String> {
    post_to(client, url, GUN, files).await
}

/// [`post`] to repository `gun`.
async fn post_to(
    client: &reqwest::Client,
    url: &str,
    gun: &str,
    files: &[(String, Vec<u8>)],
) -> Result<(u16, usize, String), String> {
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())).collect();
    let (content_type, body) = multipart(&refs);
    let size = body.len();
    let response = client
        .post(format!("{url}/v2/{gun}/_trust/tuf/"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((status, size, text.chars().take(300).collect()))
}

/// Publishes the repository's first version; returns it.
async fn publish_first(client: &reqwest::Client, url: &str) -> Result<Repo, String> {
    publish_repository(client, url, GUN, Map::new()).await
}

/// Creates repository `gun` with a first targets file listing `targets`.
async fn publish_repository(
    client: &reqwest::Client,
    url: &str,
    gun: &str,
    targets: Map<String, Value>,
) -> Result<Repo, String> {
    let timestamp = timestamp_key(client, url, gun).await?;
    let (root_key, targets_key, snapshot) = (Key::root_for(&new_private()?, gun)?, Key::ecdsa()?, Key::ecdsa()?);
    let root = first_root(&root_key, &targets_key.public, &snapshot.public, &timestamp)?;
    let first_targets = sign(&targets_body(2, targets, json!({"keys": {}, "roles": []})), &[&targets_key])?;
    let first_snapshot = sign(
        &json!({"_type": "Snapshot", "expires": expires(365), "version": 2,
            "meta": {"root": meta(&root), "targets": meta(&first_targets)}}),
        &[&snapshot],
    )?;
    let files = vec![
        ("root".to_owned(), root.clone()),
        ("targets".to_owned(), first_targets),
        ("snapshot".to_owned(), first_snapshot),
    ];
    let (status, _, answer) = post_to(client, url, gun, &files).await?;
    if status != 200 {
        return Err(format!("the first publish of {gun} got HTTP {status}: {answer}"));
    }
    Ok(Repo { root_key, targets: targets_key, snapshot, root })
}

/// Brings a fresh server to the state of one that has served publishes before: one unmeasured
/// publish of another repository, of [`WARM_UP_TARGETS`] targets, fills what a running server
/// keeps filled (SQLite's page cache of the writing connection, the blocking pool's thread and
/// its allocator arena), so that a case's memory is its own and not that first fill.
async fn warm_up(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let targets: Map<String, Value> = (0..WARM_UP_TARGETS).map(|index| target_entry("warm", index)).collect();
    publish_repository(client, url, "bench.example/warm-up", targets).await.map(|_| ())
}

/// Targets of the warm-up publish: enough to write more pages than SQLite's default 2 MiB cache holds.
const WARM_UP_TARGETS: usize = 10_000;

/// GET latencies of `root.json` until `stop`.
async fn reader(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let ok =
            client.get(format!("{url}/v2/{GUN}/_trust/tuf/root.json")).send().await.is_ok_and(|r| r.status() == 200);
        if ok {
            latencies.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    latencies
}

/// One measured upload.
struct Measured {
    name: String,
    mib: f64,
    status: u16,
    cpu: Duration,
    peak_mib: f64,
    answer: String,
}

/// The repository every case starts from: a server's data directory holding its first version
/// (stopped, to be copied), the CA its clients trust, and the cases signed for it.
struct Template {
    dir: tempfile::TempDir,
    client: reqwest::Client,
    cases: Vec<Case>,
}

impl Template {
    async fn new(binary: &Path, only: Option<&str>) -> Result<Template, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let data = dir.path().join("data");
        let (server, url) = ServerProcess::start(binary, &data)?;
        let client = client_for(&data.join("tls/ca.crt")).await?;
        wait_healthy(&client, &url).await?;
        let repo = publish_first(&client, &url).await?;
        server.stop()?;
        eprintln!("upload-bench: building the worst cases under {} bytes", MAX_BODY);
        let mut cases = cases(&repo, &Limits::default(), MAX_BODY)?;
        if let Some(only) = only {
            cases.retain(|case| case.name.contains(only));
        }
        Ok(Template { dir, client, cases })
    }

    /// A server of its own on a copy of the repository, healthy; with the copy's directory.
    async fn server(&self, binary: &Path) -> Result<(ServerProcess, String, tempfile::TempDir), String> {
        let copy = tempfile::tempdir().map_err(|error| error.to_string())?;
        let data = copy.path().join("data");
        copy_dir(&self.dir.path().join("data"), &data)?;
        let (server, url) = ServerProcess::start(binary, &data)?;
        wait_healthy(&self.client, &url).await?;
        Ok((server, url, copy))
    }
}

const MAX_BODY: usize = 32 << 20;

/// Sends `case` (after its setup) `repeat` times to a fresh server on a copy of the template,
/// measuring each send. With `reading`, a client reads `root.json` meanwhile; its latencies are
/// returned too.
async fn measure(
    template: &Template,
    binary: &Path,
    case: &Case,
    repeat: usize,
    reading: bool,
    cold: bool,
) -> Result<(Vec<Measured>, Vec<Duration>), String> {
    let (server, url, _copy) = template.server(binary).await?;
    let client = &template.client;
    let pid = server.pid();
    if !cold {
        warm_up(client, &url).await?;
    }
    for setup in &case.setup {
        let (status, _, answer) = post(client, &url, setup).await?;
        if status != 200 {
            return Err(format!("the publish before \"{}\" got HTTP {status}: {answer}", case.name));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = reading.then(|| tokio::spawn(reader(client.clone(), url.clone(), stop.clone())));
    let mut measured = Vec::new();
    for _ in 0..repeat {
        reset_peak(pid)?;
        let rss = status_kib(pid, "VmRSS:")?;
        let cpu = cpu_time(pid)?;
        let (status, size, answer) = post(client, &url, &case.files).await?;
        let cpu = cpu_time(pid)?.saturating_sub(cpu);
        let peak = status_kib(pid, "VmHWM:")?.saturating_sub(rss);
        let mib = size as f64 / f64::from(1 << 20);
        measured.push(Measured { name: case.name.clone(), mib, status, cpu, peak_mib: peak as f64 / 1024.0, answer });
    }
    stop.store(true, Ordering::Relaxed);
    let latencies = match reads {
        Some(task) => task.await.map_err(|error| error.to_string())?,
        None => Vec::new(),
    };
    server.stop()?;
    Ok((measured, latencies))
}

/// Each case is sent to a server of its own, started on a copy of one repository, so that no case
/// is measured against what another left (a stored file it replaces, memory the allocator kept).
/// Each is sent twice over: alone, for the CPU time and memory that are its own (the server's
/// CPU is counted for the whole process, so a reader's GETs would be counted too), then while
/// another client reads, for the latency that client sees and the CPU spent on both.
async fn bench(repeat: usize, verbose: bool, only: Option<String>, cold: bool) -> Result<(), String> {
    let binary = server_binary();
    let template = Template::new(&binary, only.as_deref()).await?;
    let (idle_server, idle_url, _idle_copy) = template.server(&binary).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let idle_reads = tokio::spawn(reader(template.client.clone(), idle_url, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let idle = idle_reads.await.map_err(|error| error.to_string())?;
    idle_server.stop()?;

    println!("upload-bench: tufa-server {}, limits {:?}", binary.display(), Limits::default());
    println!(
        "{:<48} {:>9} {:>6} {:>10} {:>12} {:>8} {:>14}",
        "upload", "body MiB", "HTTP", "CPU ms", "peak +MiB", "x body", "CPU ms +GETs"
    );
    let mut loaded = Vec::new();
    for case in &template.cases {
        let (alone, _) = measure(&template, &binary, case, repeat, false, cold).await?;
        let (beside, latencies) = measure(&template, &binary, case, repeat, true, cold).await?;
        loaded.extend(latencies);
        for (index, upload) in alone.iter().enumerate() {
            let with_reads =
                beside.get(index).map_or_else(|| "-".to_owned(), |other| other.cpu.as_millis().to_string());
            println!(
                "{:<48} {:>9.2} {:>6} {:>10} {:>12.1} {:>8.2} {:>14}",
                upload.name,
                upload.mib,
                upload.status,
                upload.cpu.as_millis(),
                upload.peak_mib,
                upload.peak_mib / upload.mib.max(f64::EPSILON),
                with_reads
            );
            if verbose && upload.status != 200 {
                println!("    answer: {}", upload.answer);
            }
        }
    }
    loaded.sort();
    println!(
        "GET root.json meanwhile: p50 {:?} p99 {:?} ({} requests); idle: p50 {:?} p99 {:?} ({} requests)",
        percentile(&loaded, 0.5),
        percentile(&loaded, 0.99),
        loaded.len(),
        percentile(&idle, 0.5),
        percentile(&idle, 0.99),
        idle.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let repeat = match args.as_slice() {
        [] => 2,
        [flag, value] if flag == "--repeat" => match value.parse::<usize>() {
            Ok(repeat) if repeat > 0 => repeat,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(if args.iter().any(|arg| arg == "--help" || arg == "-h") { 0 } else { 2 });
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("upload-bench: WARNING: a debug build; build with --release for figures that mean something");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("upload-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let verbose = std::env::var_os("UPLOAD_BENCH_VERBOSE").is_some();
    let only = std::env::var("UPLOAD_BENCH_CASE").ok();
    let cold = std::env::var_os("UPLOAD_BENCH_COLD").is_some();
    match runtime.block_on(bench(repeat, verbose, only, cold)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upload-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
