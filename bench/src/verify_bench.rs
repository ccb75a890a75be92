//! verify-bench: how fast `tufa-server verify-server` answers `POST /v1/verify`. It starts a
//! tufa-server, publishes signed trust data for a number of repositories straight over the
//! Notary API (no notary CLI), starts a verify-server against it with a policy pinning their
//! root key, and measures cold verifications (each repository's first request: the verifier
//! fetches and checks its trust data; latency and how many requests reached the trust server)
//! and cache hits from concurrent HTTPS keep-alive clients. It prints figures and never asserts
//! a speed.
//!
//! Usage: verify-bench [--server BIN] [--repos N] [--clients C] [--requests R]
//! (defaults: the tufa-server next to this binary, 64 repositories, 32 clients, 500 requests each).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "lean_http.rs"]
mod lean_http;
#[path = "process.rs"]
#[expect(dead_code, unused_imports, reason = "the shared module also serves the signer benchmark's needs")]
mod process;
#[path = "signed.rs"]
mod signed;
use process::Server;
use signed::{Key, expires, first_root, meta, multipart, new_private, sign, timestamp_key};
use tufa_core::keys::PublicKey;

const USAGE: &str = "usage: verify-bench [--server BIN] [--repos N] [--clients C] [--requests R]";

/// The repositories' common prefix; the policy pins `<PREFIX>*` to one root key.
const PREFIX: &str = "bench.example/verify/app";

/// What to run and how much.
struct Options {
    server: PathBuf,
    repos: usize,
    clients: usize,
    requests: usize,
}

/// The value after `flag` in `args`, parsed; `default` when the flag is absent.
fn flag<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> Result<T, String> {
    match args.iter().position(|arg| arg == flag) {
        None => Ok(default),
        Some(index) => {
            let value = args.get(index + 1).ok_or_else(|| format!("{flag} needs a value"))?;
            value.parse().map_err(|_| format!("{flag}: cannot read {value:?}"))
        }
    }
}

fn options() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        return Err(USAGE.to_owned());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("tufa-server")))
        .unwrap_or_else(|| PathBuf::from("tufa-server"));
    let options = Options {
        server: flag(&args, "--server", beside)?,
        repos: flag(&args, "--repos", 64)?,
        clients: flag(&args, "--clients", 32)?,
        requests: flag(&args, "--requests", 500)?,
    };
    if options.repos == 0 || options.clients == 0 || options.requests == 0 {
        return Err(format!("--repos, --clients and --requests must be at least 1\n{USAGE}"));
    }
    if !options.server.is_file() {
        return Err(format!("{} is not a file: pass --server BIN", options.server.display()));
    }
    Ok(options)
}

/// The first publish of a repository: root (signed by `root`), targets with tag `v1` whose
/// content is `content`, and snapshot. The server signs the timestamp with `timestamp`.
fn first_publish(root: &Key, timestamp: &PublicKey, content: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let (targets_key, snapshot_key) = (Key::ecdsa()?, Key::ecdsa()?);
    let root_file = first_root(root, &targets_key.public, &snapshot_key.public, timestamp)?;
    let targets = sign(
        &json!({"_type": "Targets", "expires": expires(365), "version": 1, "targets": {"v1": meta(content)},
            "delegations": {"keys": {}, "roles": []}}),
        &[&targets_key],
    )?;
    let snapshot = sign(
        &json!({"_type": "Snapshot", "expires": expires(365), "version": 1,
            "meta": {"root": meta(&root_file), "targets": meta(&targets)}}),
        &[&snapshot_key],
    )?;
    Ok(vec![("root".to_owned(), root_file), ("targets".to_owned(), targets), ("snapshot".to_owned(), snapshot)])
}

/// A keep-alive HTTPS client trusting `ca`, once `url` of `server` answers 200.
async fn ready(server: &mut Server, ca: &Path, url: &str) -> Result<reqwest::Client, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        server.check_running()?;
        if let Ok(client) = client(ca)
            && let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{url} did not answer within 60 s; the log ends with:\n{}", server.log_tail()))
}

/// An HTTPS client (HTTP/1.1 keep-alive) trusting only the CA in `ca`.
fn client(ca: &Path) -> Result<reqwest::Client, String> {
    let pem = std::fs::read(ca).map_err(|error| format!("{}: {error}", ca.display()))?;
    let certificate = reqwest::Certificate::from_pem(&pem).map_err(|error| error.to_string())?;
    reqwest::Client::builder()
        .tls_certs_only([certificate])
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|error| error.to_string())
}

/// The sum of `tufa_http_requests_total` on the trust server: every request it has answered.
async fn requests_served(http: &reqwest::Client, url: &str) -> Result<u64, String> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .map_err(|error| error.to_string())?
        .text()
        .await
        .map_err(|error| error.to_string())?;
    let mut total = 0;
    for line in text.lines().filter(|line| line.starts_with("tufa_http_requests_total{")) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        total += value.parse::<f64>().map_err(|_| format!("odd metrics line {line:?}"))? as u64;
    }
    Ok(total)
}

/// Sends the prepared `POST /v1/verify` `request` on `connection`; the latency, after checking that the
/// answer is trusted with `digest`.
async fn lean_verify(connection: &mut lean_http::Connection, request: &[u8], digest: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let (status, body) = connection.send(request).await?;
    let elapsed = started.elapsed();
    let answer: Value =
        serde_json::from_slice(&body).map_err(|error| format!("an answer that is not JSON: {error}"))?;
    if status != 200 || answer.get("trusted") != Some(&json!(true)) || answer.get("digest") != Some(&json!(digest)) {
        return Err(format!("expected trusted with {digest}, got HTTP {status}: {answer}"));
    }
    Ok(elapsed)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() as f64 * fraction).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

async fn run(options: Options) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let port = process::free_port()?;
    let trust_url = format!("https://127.0.0.1:{port}");
    let trust_data = dir.path().join("trust-data");
    let mut command = Command::new(&options.server);
    command.args(["--listen", &format!("127.0.0.1:{port}"), "--log-level", "warn", "--data-dir"]).arg(&trust_data);
    let mut trust = Server::start("tufa-server", command, &dir.path().join("tufa-server.log"))?;
    let trust_ca = trust_data.join("tls").join("ca.crt");
    let http = ready(&mut trust, &trust_ca, &format!("{trust_url}/_notary_server/health")).await?;

    // One root key for every repository (each with its own certificate, as notary makes them).
    let root_private = new_private()?;
    let mut images = Vec::with_capacity(options.repos);
    let mut root_key_id = String::new();
    eprintln!("verify-bench: publishing {} repositories", options.repos);
    for index in 0..options.repos {
        let gun = format!("{PREFIX}{index}");
        let root = Key::root_for(&root_private, &gun)?;
        root_key_id = root.public.canonical_id().map_err(|error| error.to_string())?;
        let timestamp = timestamp_key(&http, &trust_url, &gun).await?;
        let content = format!("manifest of {gun} v1\n");
        let (content_type, body) = multipart(&first_publish(&root, &timestamp, content.as_bytes())?);
        let response = http
            .post(format!("{trust_url}/v2/{gun}/_trust/tuf/"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(format!("publishing {gun}: HTTP {status}: {}", response.text().await.unwrap_or_default()));
        }
        let digest = format!("sha256:{}", hex(&tufa_core::keys::sha256(content.as_bytes())));
        images.push((format!("{gun}:v1"), digest));
    }

    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[content-trust]\nmode = \"enforced\"\n\n[content-trust.trust-pinning.root-keys]\n\"{PREFIX}*\" = \
             [\"{root_key_id}\"]\n\n[cache]\nmax-repositories = {}\n",
            options.repos.max(1)
        ),
    )
    .map_err(|error| error.to_string())?;
    let verify_port = process::free_port()?;
    let verify_url = format!("https://127.0.0.1:{verify_port}");
    let verify_data = dir.path().join("verify-data");
    let mut command = Command::new(&options.server);
    command
        .args(["--listen", &format!("127.0.0.1:{verify_port}"), "--log-level", "warn", "--data-dir"])
        .arg(&verify_data)
        .arg("verify-server")
        .arg("--policy")
        .arg(&policy)
        .arg("--trust-server")
        .arg(&trust_url)
        .arg("--trust-ca")
        .arg(&trust_ca);
    let mut verifier = Server::start("verify-server", command, &dir.path().join("verify-server.log"))?;
    let verify_ca = verify_data.join("tls").join("ca.crt");
    ready(&mut verifier, &verify_ca, &format!("{verify_url}/healthz")).await?;
    // Every verification goes over a lean HTTP/1.1 keep-alive client, so that the load generator leaves the
    // shared CPUs to the server; each request is prepared once.
    let address = format!("127.0.0.1:{verify_port}");
    let tls = lean_http::tls_config(&verify_ca)?;
    let prepared: Vec<(Vec<u8>, String)> = images
        .iter()
        .map(|(image, digest)| {
            (lean_http::post_json(&address, "/v1/verify", &json!({"image": image}).to_string()), digest.clone())
        })
        .collect();

    // Cold: each repository's first verification, one at a time, counting the trust server's requests.
    let mut cold = Vec::with_capacity(prepared.len());
    let mut round_trips = Vec::with_capacity(prepared.len());
    let mut cold_connection = lean_http::Connection::open(&address, "127.0.0.1", tls.clone()).await?;
    for (request, digest) in &prepared {
        let before = requests_served(&http, &trust_url).await?;
        cold.push(lean_verify(&mut cold_connection, request, digest).await?);
        // The metrics request itself is counted once it has been answered, so subtract it.
        round_trips.push(requests_served(&http, &trust_url).await?.saturating_sub(before).saturating_sub(1));
    }
    cold.sort();
    round_trips.sort_unstable();

    // Cache hits: every client its own keep-alive connection, all repositories cached.
    let prepared = Arc::new(prepared);
    let mut connections = Vec::with_capacity(options.clients);
    for _ in 0..options.clients {
        let mut connection = lean_http::Connection::open(&address, "127.0.0.1", tls.clone()).await?;
        let (request, digest) = prepared.first().ok_or("no repository")?;
        lean_verify(&mut connection, request, digest).await?;
        connections.push(connection);
    }
    let served_before = requests_served(&http, &trust_url).await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.clients);
    for (index, mut connection) in connections.into_iter().enumerate() {
        let (prepared, requests) = (prepared.clone(), options.requests);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(requests);
            for request in 0..requests {
                let (bytes, digest) =
                    prepared.get((index + request) % prepared.len()).ok_or_else(|| "no repository".to_owned())?;
                latencies.push(lean_verify(&mut connection, bytes, digest).await?);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut hits = Vec::with_capacity(options.clients * options.requests);
    for task in tasks {
        hits.extend(task.await.map_err(|error| error.to_string())??);
    }
    let wall = started.elapsed();
    let hit_round_trips = requests_served(&http, &trust_url).await?.saturating_sub(served_before).saturating_sub(1);
    hits.sort();

    println!("## verify-server: POST /v1/verify");
    println!();
    println!(
        "{} repositories on a local tufa-server; {} clients x {} requests; {} CPUs",
        options.repos,
        options.clients,
        options.requests,
        std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1)
    );
    println!();
    println!("| case | requests | p50 ms | p99 ms | max ms | requests/s | trust-server requests |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    println!(
        "| cold (first verification of a repository, sequential) | {} | {} | {} | {} | - | {}-{} each |",
        cold.len(),
        ms(percentile(&cold, 0.50)),
        ms(percentile(&cold, 0.99)),
        ms(cold.last().copied().unwrap_or_default()),
        round_trips.first().copied().unwrap_or_default(),
        round_trips.last().copied().unwrap_or_default(),
    );
    println!(
        "| cache hit ({} concurrent keep-alive clients) | {} | {} | {} | {} | {:.0} | {hit_round_trips} in all |",
        options.clients,
        hits.len(),
        ms(percentile(&hits, 0.50)),
        ms(percentile(&hits, 0.99)),
        ms(hits.last().copied().unwrap_or_default()),
        hits.len() as f64 / wall.as_secs_f64().max(f64::EPSILON),
    );
    drop(trust);
    Ok(())
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("verify-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("verify-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
