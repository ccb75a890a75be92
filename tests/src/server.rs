//! The running-server handle shared by every implementation under test: start a process on
//! a free 127.0.0.1 port, wait until its health endpoint answers, talk HTTPS to it, and
//! kill it (printing its log when the test failed) on drop.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use reqwest::blocking::Client;
use tempfile::TempDir;

use crate::postgres::PgDatabase;
use crate::process::{
    LOG_TAIL_BYTES, WaitError, describe, free_port, log_tail, spawn_logged, stop_and_report, wait_ready,
};

/// How long a server may take from spawn to a 200 on its health endpoint.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times start-up is retried with a new port when the port was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// Everything needed to start one server process.
pub struct Launch {
    /// Human-readable name for messages, e.g. `tufa-server (sqlite)`.
    pub name: String,
    /// The test's private directory; kept alive as long as the server.
    pub dir: TempDir,
    /// Where the CA certificate that clients must trust is (or will be, once the server
    /// has generated it).
    pub ca_cert: PathBuf,
    /// Builds the command line for a given port.
    pub command: Box<dyn Fn(u16) -> Command>,
    /// A PostgreSQL database dropped after the server has stopped.
    pub database: Option<PgDatabase>,
}

/// A server process listening on `127.0.0.1:<port>` over HTTPS.
pub struct Server {
    name: String,
    child: Child,
    url: String,
    ca_cert: PathBuf,
    log: PathBuf,
    http: Client,
    // Field order matters: the database is dropped after the process is killed (in `Drop`),
    // and the directory (holding the log and the data) last.
    _database: Option<PgDatabase>,
    dir: TempDir,
}

/// Status and body of an HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// The raw body.
    pub body: Vec<u8>,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl HttpResponse {
    /// The value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body parsed as JSON; panics with the body text when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("response body is not JSON ({error}):\n{}", String::from_utf8_lossy(&self.body))
        })
    }

    /// The `code` of the single error in a Notary error envelope
    /// (`{"errors":[{"code":...}]}`), if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let errors = body.get("errors")?.as_array()?;
        match errors.as_slice() {
            [only] => only.get("code")?.as_str().map(str::to_owned),
            _ => None,
        }
    }
}

impl fmt::Display for HttpResponse {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "HTTP {} {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

/// Why one start attempt failed.
enum StartFailure {
    /// The port was taken between choosing it and binding it: try another one.
    PortTaken,
    /// Anything else: give up with this description.
    Fatal(String),
}

impl Server {
    /// Starts the process described by `launch` and waits until it is healthy. Panics with
    /// the server's log when it does not become healthy within [`STARTUP_TIMEOUT`].
    pub fn start(launch: Launch) -> Server {
        let mut last_failure = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let log = launch.dir.path().join(format!("server-{attempt}.log"));
            let mut command = (launch.command)(port);
            let line = describe(&command);
            let child = spawn_logged(&mut command, &log)
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", launch.name));
            let mut starting = Starting { child: Some(child), log: log.clone() };
            match starting.wait_healthy(port, &launch.ca_cert) {
                Ok(http) => {
                    let child = starting.child.take().expect("child is present until handed over");
                    return Server {
                        name: launch.name,
                        child,
                        url: format!("https://127.0.0.1:{port}"),
                        ca_cert: launch.ca_cert,
                        log,
                        http,
                        _database: launch.database,
                        dir: launch.dir,
                    };
                }
                Err(StartFailure::PortTaken) => {
                    last_failure = format!("port {port} was taken (attempt {attempt})");
                }
                Err(StartFailure::Fatal(reason)) => {
                    panic!(
                        "{} did not become healthy: {reason}\ncommand: {line}\n--- server log {} ---\n{}",
                        launch.name,
                        log.display(),
                        log_tail(&log, LOG_TAIL_BYTES)
                    );
                }
            }
        }
        panic!("{} could not get a free port: {last_failure}", launch.name);
    }

    /// The base URL, `https://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA certificate that verifies the server's TLS certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// A directory private to this test that outlives every client of the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's log file (standard output and error).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `GET <url><path>`.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.send(self.http.get(format!("{}{path}", self.url)))
    }

    /// `GET /v2/<gun>/_trust/tuf/<file>`, e.g. `file` = `root.json` or `2.root.json`.
    pub fn metadata(&self, gun: &str, file: &str) -> HttpResponse {
        self.get(&format!("/v2/{gun}/_trust/tuf/{file}"))
    }

    /// The current `<role>.json` of `gun`, which must exist, parsed as JSON.
    pub fn metadata_json(&self, gun: &str, role: &str) -> serde_json::Value {
        let response = self.metadata(gun, &format!("{role}.json"));
        assert_eq!(response.status, 200, "GET {role}.json of {gun}: {response}");
        response.json()
    }

    /// `POST /v2/<gun>/_trust/tuf/` with one multipart part per `(role, bytes)`, exactly as
    /// the notary client sends an update: field `files`, file name = role name.
    pub fn post_update(&self, gun: &str, parts: &[(&str, &[u8])]) -> HttpResponse {
        let boundary = "tufa-test-boundary-7f3a9c1e5b";
        let mut body = Vec::new();
        for (role, bytes) in parts {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{role}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let request = self
            .http
            .post(format!("{}/v2/{gun}/_trust/tuf/", self.url))
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        self.send(request)
    }

    /// `<method> <url><path>` with an optional `Authorization` header value and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> HttpResponse {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid HTTP method");
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        self.send(request)
    }

    /// `GET <url><path>` with `Authorization: <authorization>`.
    pub fn get_with(&self, path: &str, authorization: &str) -> HttpResponse {
        self.request("GET", path, Some(authorization), None)
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> HttpResponse {
        let response = request.send().unwrap_or_else(|error| panic!("HTTP request to {} failed: {error:?}", self.name));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().expect("read HTTP response body").to_vec();
        HttpResponse { status, body, headers }
    }
}

impl Server {
    /// Stops the server as an operator would (SIGTERM) and waits up to 30 s for it to exit, so
    /// that its shutdown work (the last audit checkpoint) is done. Panics if it does not exit.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "could not send SIGTERM to {}", self.name);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().expect("wait for the server").is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{} did not exit within 30 s of SIGTERM", self.name);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_and_report(&mut self.child, &self.name, &self.log, &mut self.dir);
    }
}

/// A process that has been spawned but not yet handed over to a [`Server`]; killed on drop.
struct Starting {
    child: Option<Child>,
    log: PathBuf,
}

impl Starting {
    /// Polls the health endpoint until it answers 200, the process exits, or time runs out.
    fn wait_healthy(&mut self, port: u16, ca_cert: &Path) -> Result<Client, StartFailure> {
        let health = format!("https://127.0.0.1:{port}/_notary_server/health");
        let child = self.child.as_mut().expect("child is present while starting");
        let mut client: Option<Client> = None;
        let probe = || {
            // The server writes its CA certificate during start-up: build the client once it is there.
            let http = match &client {
                Some(http) => http.clone(),
                None => client.insert(https_client(ca_cert)?).clone(),
            };
            match http.get(&health).timeout(Duration::from_secs(2)).send() {
                Ok(response) if response.status().as_u16() == 200 => Ok(http),
                Ok(response) => Err(format!("health answered {}", response.status())),
                Err(error) => Err(format!("health request failed: {error:?}")),
            }
        };
        wait_ready(child, &self.log, STARTUP_TIMEOUT, probe).map_err(|failure| match failure {
            WaitError::Exited { port_taken: true, .. } => StartFailure::PortTaken,
            other => StartFailure::Fatal(format!("{other} (waiting for a 200 from {health})")),
        })
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTPS client that trusts only the CA in `ca_cert`, ignores proxies and never reuses a
/// failed start-up's state. Fails while the CA file is missing or incomplete.
pub fn https_client(ca_cert: &Path) -> Result<Client, String> {
    let pem = fs::read(ca_cert).map_err(|error| format!("cannot read {}: {error}", ca_cert.display()))?;
    let certificate = reqwest::Certificate::from_pem(&pem)
        .map_err(|error| format!("{} is not a PEM certificate: {error}", ca_cert.display()))?;
    Client::builder()
        .tls_certs_only([certificate])
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| format!("cannot build HTTPS client: {error:?}"))
}
