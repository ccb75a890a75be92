//! `audit-bench publish`: publish latency of two tufa-server binaries side by side. Both run at
//! once on the same machine, each with its own data directory (and database); the client drives
//! the same sequence of publishes against each, alternating which server goes first, so drift in
//! the machine's load falls on both alike.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tufa_core::keys::PublicKey;

use super::signed::{Key, expires, first_root, meta, multipart, new_private, sign, timestamp_key};
use super::{Summary, describe_machine, load_average, ms, pg};

const GUN: &str = "bench.example/audited-app";

/// Tags in the delegated role's file.
const RELEASE_TAGS: usize = 10;

/// What to compare and how much.
pub(crate) struct Options {
    /// The server without the record.
    pub(crate) base: PathBuf,
    /// The server with the record.
    pub(crate) head: PathBuf,
    /// How the report names `base`.
    pub(crate) base_label: String,
    /// How the report names `head`.
    pub(crate) head_label: String,
    /// Timed publishes per server.
    pub(crate) publishes: usize,
    /// Untimed publishes per server before the timed ones.
    pub(crate) warmup: usize,
    /// Targets in the top-level targets file.
    pub(crate) targets: usize,
}

/// The metadata of `count` tags named `prefix{index}` plus `{prefix}latest` at `version`: tag
/// `version % count` and `latest` get new content in each version, the others keep theirs.
fn tags(prefix: &str, count: usize, version: i64) -> Map<String, Value> {
    let count_i64 = i64::try_from(count).unwrap_or(i64::MAX);
    let mut map = Map::new();
    for index in 0..count {
        let index_i64 = i64::try_from(index).unwrap_or(i64::MAX);
        // The last version at or before `version` in which this tag changed.
        let generation = version - (version - index_i64).rem_euclid(count_i64);
        let content = format!("{prefix}{index} build {generation}").repeat(1 + index % 7);
        map.insert(format!("{prefix}{index}"), meta(content.as_bytes()));
    }
    map.insert(format!("{prefix}latest"), meta(format!("{prefix}latest build {version}").as_bytes()));
    map
}

/// One repository on one server: its keys and its root.
struct Repo {
    targets: Key,
    snapshot: Key,
    delegate: Key,
    root: Vec<u8>,
}

impl Repo {
    fn new(timestamp: &PublicKey) -> Result<Repo, String> {
        let (root_key, targets, snapshot, delegate) =
            (Key::root_for(&new_private()?, GUN)?, Key::ecdsa()?, Key::ecdsa()?, Key::ecdsa()?);
        let root = first_root(&root_key, &targets.public, &snapshot.public, timestamp)?;
        Ok(Repo { targets, snapshot, delegate, root })
    }

    /// The multipart files of version `version`: targets (with `count` tags and one delegation),
    /// `targets/releases`, snapshot, and the root when `version` is 1. The server adds the
    /// timestamp.
    fn files(&self, version: i64, count: usize) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut keys = Map::new();
        keys.insert(self.delegate.id(), self.delegate.public.to_json());
        let role = json!({"name": "targets/releases", "keyids": [self.delegate.id()], "threshold": 1,
            "paths": ["releases/"]});
        let targets = sign(
            &json!({"_type": "Targets", "expires": expires(365), "version": version,
                "targets": tags("app/v", count, version), "delegations": {"keys": keys, "roles": [role]}}),
            &[&self.targets],
        )?;
        let releases = sign(
            &json!({"_type": "Targets", "expires": expires(365), "version": version,
                "targets": tags("releases/r", RELEASE_TAGS, version), "delegations": {"keys": {}, "roles": []}}),
            &[&self.delegate],
        )?;
        let snapshot = sign(
            &json!({"_type": "Snapshot", "expires": expires(365), "version": version, "meta": {
                "root": meta(&self.root), "targets": meta(&targets), "targets/releases": meta(&releases)}}),
            &[&self.snapshot],
        )?;
        let mut files = Vec::new();
        if version == 1 {
            files.push(("root".to_owned(), self.root.clone()));
        }
        files.push(("targets".to_owned(), targets));
        files.push(("targets/releases".to_owned(), releases));
        files.push(("snapshot".to_owned(), snapshot));
        Ok(files)
    }
}

/// CPU time (user + system) of a process, from /proc/PID/stat (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|error| error.to_string())?;
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("odd /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|value| value.parse::<u64>().ok()).ok_or("odd /proc stat");
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// A running tufa-server with its own data directory, and a client for it.
struct Server {
    label: String,
    child: Child,
    url: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(binary: &Path, label: &str, database_url: Option<&str>) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let port = tufa_testkit::process::free_port()?;
        let log = std::fs::File::create(dir.path().join("server.log")).map_err(|error| error.to_string())?;
        let mut command = Command::new(binary);
        command
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log-level", "warn", "--data-dir"])
            .arg(dir.path().join("data"));
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let mut server = Server {
            label: label.to_owned(),
            child,
            url: format!("https://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            dir,
        };
        server.client = server.connect().await?;
        Ok(server)
    }

    /// A client trusting the server's generated CA, once the server answers its health check.
    async fn connect(&mut self) -> Result<reqwest::Client, String> {
        let ca = self.dir.path().join("data/tls/ca.crt");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited with {status}: {}", self.label, self.log_tail()));
            }
            if let Ok(pem) = std::fs::read(&ca) {
                let certificate = reqwest::Certificate::from_pem(&pem).map_err(|error| error.to_string())?;
                let client = reqwest::Client::builder()
                    .add_root_certificate(certificate)
                    .timeout(Duration::from_secs(60))
                    .build()
                    .map_err(|error| error.to_string())?;
                if let Ok(response) = client.get(format!("{}/_notary_server/health", self.url)).send().await
                    && response.status().is_success()
                {
                    return Ok(client);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("{} did not become healthy: {}", self.label, self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    async fn timestamp_key(&self) -> Result<PublicKey, String> {
        timestamp_key(&self.client, &self.url, GUN).await
    }

    /// Posts one prepared publish; returns how long the server took to answer 200.
    async fn publish(&self, content_type: &str, body: &[u8]) -> Result<Duration, String> {
        let request = self
            .client
            .post(format!("{}/v2/{GUN}/_trust/tuf/", self.url))
            .header("content-type", content_type)
            .body(body.to_vec());
        let started = Instant::now();
        let response = request.send().await.map_err(|error| format!("{}: {error}", self.label))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let elapsed = started.elapsed();
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "{}: publish got HTTP {status}: {}",
                self.label,
                text.chars().take(300).collect::<String>()
            ));
        }
        Ok(elapsed)
    }
}

/// A server with its prepared publishes and the latencies measured so far.
struct Side {
    server: Server,
    bodies: Vec<(String, Vec<u8>)>,
    latencies: Vec<Duration>,
}

impl Side {
    async fn prepare(server: Server, total: usize, targets: usize) -> Result<Side, String> {
        let repo = Repo::new(&server.timestamp_key().await?)?;
        let mut bodies = Vec::with_capacity(total);
        for version in 1..=total {
            let version = i64::try_from(version).map_err(|error| error.to_string())?;
            bodies.push(multipart(&repo.files(version, targets)?));
        }
        Ok(Side { server, bodies, latencies: Vec::with_capacity(total) })
    }

    async fn step(&mut self, index: usize) -> Result<(), String> {
        let (content_type, body) = self.bodies.get(index).ok_or("no such publish")?;
        let latency = self.server.publish(content_type, body).await?;
        self.latencies.push(latency);
        Ok(())
    }
}

/// The relative change from `base` to `head`, in percent.
fn overhead(base: Duration, head: Duration) -> f64 {
    if base.is_zero() {
        return 0.0;
    }
    (head.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0
}

/// One database's comparison: both servers started, the same publishes driven in alternation.
async fn compare(options: &Options, backend: &str, urls: Option<(&str, &str)>) -> Result<(), String> {
    let total = options.warmup + options.publishes + 1;
    let base = Server::start(&options.base, &options.base_label, urls.map(|(base, _)| base)).await?;
    let head = Server::start(&options.head, &options.head_label, urls.map(|(_, head)| head)).await?;
    let (base_pid, head_pid) = (base.child.id(), head.child.id());
    eprintln!("audit-bench: {backend}: preparing {total} signed publishes per server");
    let mut base = Side::prepare(base, total, options.targets).await?;
    let mut head = Side::prepare(head, total, options.targets).await?;
    let load_before = load_average();
    // Publish 0 creates the repository; it and the warm-up are not reported.
    let mut cpu_start = (Duration::ZERO, Duration::ZERO);
    let mut wall = Duration::ZERO;
    let mut started = Instant::now();
    for index in 0..total {
        if index == options.warmup + 1 {
            base.latencies.clear();
            head.latencies.clear();
            cpu_start = (cpu_time(base_pid)?, cpu_time(head_pid)?);
            started = Instant::now();
        }
        // Alternate which server goes first, so neither always follows the other's commit.
        if index % 2 == 0 {
            base.step(index).await?;
            head.step(index).await?;
        } else {
            head.step(index).await?;
            base.step(index).await?;
        }
        wall = started.elapsed();
    }
    let cpu = (cpu_time(base_pid)?.saturating_sub(cpu_start.0), cpu_time(head_pid)?.saturating_sub(cpu_start.1));
    let (base_summary, head_summary) = (Summary::of(&base.latencies), Summary::of(&head.latencies));
    // The per-pair difference (head minus base of the same publish index), robust to slow phases
    // of the machine that hit both members of a pair.
    let mut differences: Vec<f64> = base
        .latencies
        .iter()
        .zip(&head.latencies)
        .map(|(base, head)| head.as_secs_f64() - base.as_secs_f64())
        .collect();
    differences.sort_by(f64::total_cmp);
    let median_difference = differences.get(differences.len() / 2).copied().unwrap_or_default();
    let publishes = u32::try_from(options.publishes).unwrap_or(u32::MAX).max(1);

    println!();
    println!("## {backend}");
    println!(
        "{} timed publishes per server after {} warm-up publishes; {:.1} s wall; load average {load_before} before, {} after",
        options.publishes,
        options.warmup,
        wall.as_secs_f64(),
        load_average()
    );
    println!();
    println!("| server                    | p50 ms | p90 ms | p99 ms | max ms | mean ms | server CPU ms/publish |");
    println!("| ------------------------- | -----: | -----: | -----: | -----: | ------: | --------------------: |");
    for (label, summary, cpu) in
        [(&options.base_label, base_summary, cpu.0), (&options.head_label, head_summary, cpu.1)]
    {
        println!(
            "| {label:<25} | {:>6} | {:>6} | {:>6} | {:>6} | {:>7} | {:>21} |",
            ms(summary.p50),
            ms(summary.p90),
            ms(summary.p99),
            ms(summary.max),
            ms(summary.mean),
            ms(cpu / publishes)
        );
    }
    println!();
    println!(
        "overhead of the record: p50 {:+.1}%, p99 {:+.1}%, mean {:+.1}%, median paired difference {:+.3} ms ({:+.1}% of \
         the base p50), server CPU {:+.1}%",
        overhead(base_summary.p50, head_summary.p50),
        overhead(base_summary.p99, head_summary.p99),
        overhead(base_summary.mean, head_summary.mean),
        median_difference * 1000.0,
        if base_summary.p50.is_zero() { 0.0 } else { median_difference / base_summary.p50.as_secs_f64() * 100.0 },
        overhead(cpu.0, cpu.1)
    );
    drop(base);
    drop(head);
    Ok(())
}

/// Runs the comparison on SQLite, then on PostgreSQL when `database_url` is set.
pub(crate) async fn run(options: &Options, database_url: Option<&str>) -> Result<(), String> {
    println!("audit-bench publish, {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
    println!("{}", describe_machine());
    println!("base (without the record): {} = {}", options.base_label, options.base.display());
    println!("head (with the record):    {} = {}", options.head_label, options.head.display());
    println!(
        "workload: one repository per server; each publish uploads targets ({} tags + latest, one delegation \
         `targets/releases` with paths [releases/]), targets/releases ({RELEASE_TAGS} tags + latest) and snapshot, \
         signed by the client; the server signs the timestamp. Each publish changes 2 tags in each targets file. \
         Both servers run at once; publishes alternate between them (base first, then head first), one at a time, \
         over HTTPS with kept-alive connections. Latency: from sending the request to reading the whole 200 answer.",
        options.targets
    );
    compare(options, "SQLite (each server's data directory, default settings)", None).await?;
    if let Some(admin_url) = database_url {
        let settings = pg::settings(admin_url).await;
        let base_db = pg::Scratch::create(admin_url, "base").await?;
        let head_db = pg::Scratch::create(admin_url, "head").await?;
        let result = compare(options, &format!("PostgreSQL ({settings})"), Some((&base_db.url, &head_db.url))).await;
        let dropped = (base_db.drop_now().await, head_db.drop_now().await);
        result?;
        dropped.0?;
        dropped.1?;
    }
    Ok(())
}
