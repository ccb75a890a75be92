//! upload-flood-bench: GET latency of tufa-server while other clients flood it with the largest
//! uploads it allows, all of them invalid. It prints figures; it never asserts a speed.
//!
//! Usage: `upload-flood-bench [--seconds S] [--uploaders N]`. Environment: `TUFA_SERVER_BIN`
//! (default: the `tufa-server` next to this binary). The server runs with SQLite and generated TLS
//! in a temporary directory and its default limits (32 MiB bodies, 64 MiB buffered, four uploads
//! verified at once).
//!
//! Two phases of S seconds each: GETs alone, then GETs while N uploaders post, back to back, a
//! multipart body just under the body limit whose one part is a 32 MiB JSON array (it parses to
//! the end before it is refused). The GET client reads `root.json` of a repository that does not
//! exist (a 404 after a database look-up: routing, the store, the response path), one request at a
//! time over one kept-alive TLS connection. Reported: GET p50/p99/max and count per phase, upload
//! answers by status, and the server's peak resident memory.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tufa_testkit::process::{free_port, log_tail, spawn_logged};

const USAGE: &str = "usage: upload-flood-bench [--seconds S] [--uploaders N]";
/// The server's default `limits.max_body_bytes`.
const MAX_BODY: usize = 32 << 20;

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upload-flood-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

struct Plan {
    seconds: f64,
    uploaders: usize,
}

fn parse_plan() -> Result<Plan, String> {
    let mut plan = Plan { seconds: 5.0, uploaders: 4 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
        match arg.as_str() {
            "--seconds" => plan.seconds = value.parse().map_err(|_| format!("--seconds needs a number\n{USAGE}"))?,
            "--uploaders" => {
                plan.uploaders = value.parse().map_err(|_| format!("--uploaders needs a whole number\n{USAGE}"))?;
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !(0.5..=600.0).contains(&plan.seconds) || !(1..=64).contains(&plan.uploaders) {
        return Err(format!("--seconds must be 0.5..=600 and --uploaders 1..=64\n{USAGE}"));
    }
    Ok(plan)
}

/// The tufa-server process, killed and reaped on drop.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Peak resident memory so far (`VmHWM`), in MiB.
    fn peak_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

fn server_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("TUFA_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|error| format!("cannot find this binary: {error}"))?;
    let path = exe.with_file_name("tufa-server");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} not found: build it (cargo build -p tufa-server) or set TUFA_SERVER_BIN", path.display()))
    }
}

fn tls_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).map_err(|error| format!("{}: {error}", ca.display()))? {
        let certificate = certificate.map_err(|error| format!("{}: {error}", ca.display()))?;
        roots.add(certificate).map_err(|error| format!("{}: {error}", ca.display()))?;
    }
    let mut config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn connect(address: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Tls> {
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let connection = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    let tcp = TcpStream::connect(address)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
    Ok(StreamOwned::new(connection, tcp))
}

/// Sends one HTTP/1.1 request and reads its response; returns the status. The connection stays
/// usable unless the server said `Connection: close`.
fn exchange(stream: &mut BufReader<Tls>, head: &str, body: &[u8]) -> io::Result<(u16, bool)> {
    stream.get_mut().write_all(head.as_bytes())?;
    stream.get_mut().write_all(body)?;
    stream.get_mut().flush()?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {line:?}")))?;
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(io::Error::other)?;
            } else if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut content = vec![0u8; length];
    stream.read_exact(&mut content)?;
    Ok((status, close))
}

/// GETs one at a time for `duration`; returns the latencies.
fn measure_gets(address: SocketAddr, config: &Arc<ClientConfig>, duration: Duration) -> Result<Vec<Duration>, String> {
    let head = "GET /v2/bench.test/flood/_trust/tuf/root.json HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut stream = BufReader::new(connect(address, config).map_err(|error| format!("connect: {error}"))?);
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let sent = Instant::now();
        let (status, close) = exchange(&mut stream, head, &[]).map_err(|error| format!("GET: {error}"))?;
        latencies.push(sent.elapsed());
        if status != 404 {
            return Err(format!("GET answered {status}, expected 404"));
        }
        if close {
            stream = BufReader::new(connect(address, config).map_err(|error| format!("connect: {error}"))?);
        }
    }
    Ok(latencies)
}

/// A multipart body just under the limit: one part holding a JSON array of zeros, which parses to
/// its end and is then refused (it is not signed metadata).
fn flood_body() -> (String, Vec<u8>) {
    let boundary = "flood-boundary";
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"targets\"\r\n\r\n[");
    let tail = format!("0]\r\n--{boundary}--\r\n");
    let zeros = (MAX_BODY - 1024 - head.len() - tail.len()) / 2;
    let mut body = Vec::with_capacity(MAX_BODY);
    body.extend_from_slice(head.as_bytes());
    for _ in 0..zeros {
        body.extend_from_slice(b"0,");
    }
    body.extend_from_slice(tail.as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Posts the flood body back to back until `stop`; returns the statuses seen (0: I/O error).
fn flood(
    address: SocketAddr,
    config: Arc<ClientConfig>,
    body: Arc<(String, Vec<u8>)>,
    stop: Arc<AtomicBool>,
) -> Vec<u16> {
    let (content_type, bytes) = body.as_ref();
    let head = format!(
        "POST /v2/bench.test/flood/_trust/tuf/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        bytes.len()
    );
    let mut statuses = Vec::new();
    let mut stream = None;
    while !stop.load(Ordering::Relaxed) {
        let current = match stream.take() {
            Some(current) => current,
            None => match connect(address, &config) {
                Ok(connection) => BufReader::new(connection),
                Err(_) => {
                    statuses.push(0);
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let mut current = current;
        match exchange(&mut current, &head, bytes) {
            Ok((status, close)) => {
                statuses.push(status);
                if !close {
                    stream = Some(current);
                }
            }
            Err(_) => statuses.push(0),
        }
    }
    statuses
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

fn report(phase: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "{phase:<28} GETs {:>6}   p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
}

fn run() -> Result<(), String> {
    let plan = parse_plan()?;
    let binary = server_binary()?;
    let dir = tempfile::tempdir().map_err(|error| format!("temporary directory: {error}"))?;
    let port = free_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.path().join("server.log");
    let mut command = Command::new(&binary);
    command
        .args(["--listen", &address.to_string(), "--auth", "none", "--log-level", "warn", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TUFA_") {
            command.env_remove(&name);
        }
    }
    let child = spawn_logged(&mut command, &log)?;
    let server = Server { child, log };
    let ca = dir.path().join("data/tls/ca.crt");
    let started = Instant::now();
    let config = loop {
        if ca.is_file()
            && let Ok(config) = tls_config(&ca)
            && connect(address, &config).is_ok()
        {
            break config;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("the server did not start; its log ends with:\n{}", log_tail(&server.log, 4096)));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if cfg!(debug_assertions) || binary.components().any(|part| part.as_os_str() == "debug") {
        eprintln!("WARNING: a debug build is being measured; its figures mean little (use --release builds)");
    }
    let duration = Duration::from_secs_f64(plan.seconds);

    let quiet = measure_gets(address, &config, duration)?;
    report("GET alone", quiet);
    let peak_quiet = server.peak_mib();

    let body = Arc::new(flood_body());
    let stop = Arc::new(AtomicBool::new(false));
    let uploaders: Vec<_> = (0..plan.uploaders)
        .map(|_| {
            let (config, body, stop) = (config.clone(), body.clone(), stop.clone());
            std::thread::spawn(move || flood(address, config, body, stop))
        })
        .collect();
    // Let the flood reach the server before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let flooded = measure_gets(address, &config, duration);
    stop.store(true, Ordering::Relaxed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for uploader in uploaders {
        for status in uploader.join().map_err(|_| "an uploader thread panicked".to_owned())? {
            *statuses.entry(status).or_default() += 1;
        }
    }
    report(&format!("GET during {} uploaders", plan.uploaders), flooded?);
    let answers: Vec<String> = statuses
        .iter()
        .map(|(status, count)| if *status == 0 { format!("{count} I/O errors") } else { format!("{count} x {status}") })
        .collect();
    println!("uploads of {} MiB: {}", body.1.len() >> 20, answers.join(", "));
    let mib = |peak: Option<f64>| peak.map_or_else(|| "unknown".to_owned(), |peak| format!("{peak:.0} MiB"));
    println!("server peak RSS: {} after GETs alone, {} after the flood", mib(peak_quiet), mib(server.peak_mib()));
    Ok(())
}
