//! Debian's `docker-registry` (Docker distribution 2.8): one registry process on a free 127.0.0.1
//! port, plain HTTP, filesystem storage in a temporary directory; either a consumer of
//! Tufa-issued tokens (`auth: token: {realm, service, issuer, rootcertbundle}`, [`Registry::start`])
//! or open to everyone ([`Registry::start_open`], the image store of the Docker daemon tests).
//!
//! Environment: `DOCKER_REGISTRY_BIN`, the registry binary (default: `docker-registry` from `PATH`;
//! scripts/test.sh installs the Debian package).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use reqwest::blocking::Client;
use tempfile::TempDir;

use crate::process::{LOG_TAIL_BYTES, describe, free_port, log_tail, spawn_logged, stop_and_report, wait_ready};
use crate::server::HttpResponse;

/// How long the registry may take to answer its first request.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The token settings the registry is started with (distribution's `auth.token` section).
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// Where clients get tokens (the token service's `/auth/token`).
    pub realm: String,
    /// The registry's service name: the `aud` its tokens must carry.
    pub service: String,
    /// The token service's issuer name (`iss`).
    pub issuer: String,
    /// The PEM bundle of CAs whose token-signing certificates the registry trusts.
    pub rootcertbundle: PathBuf,
}

/// A running registry, killed on drop (its log is printed when the test failed).
pub struct Registry {
    child: Child,
    url: String,
    log: PathBuf,
    http: Client,
    dir: TempDir,
}

/// The registry binary: `DOCKER_REGISTRY_BIN` if set, else `docker-registry` from `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("DOCKER_REGISTRY_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("docker-registry"))
}

/// The registry's configuration file for `port` and `auth` (none: open to everyone), storing
/// blobs under `storage`.
fn config(port: u16, storage: &Path, auth: Option<&TokenAuth>) -> String {
    // JSON is YAML, and serde_json quotes every value correctly.
    let mut config = serde_json::json!({
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": true}},
        "storage": {"filesystem": {"rootdirectory": storage}, "maintenance": {"uploadpurging": {"enabled": false}}},
        "http": {"addr": format!("127.0.0.1:{port}"), "secret": "tufa-test-registry-secret"},
    });
    if let Some(auth) = auth {
        config["auth"] = serde_json::json!({"token": {
            "realm": auth.realm,
            "service": auth.service,
            "issuer": auth.issuer,
            "rootcertbundle": auth.rootcertbundle,
        }});
    }
    config.to_string()
}

impl Registry {
    /// Starts a registry with token auth `auth` and waits until it answers `GET /v2/` (with the
    /// 401 that token auth gives a request without a token). Panics with its log on failure.
    pub fn start(auth: &TokenAuth) -> Registry {
        Registry::launch(Some(auth))
    }

    /// Starts a registry without authentication and waits until it answers `GET /v2/` with 200.
    /// Panics with its log on failure.
    pub fn start_open() -> Registry {
        Registry::launch(None)
    }

    fn launch(auth: Option<&TokenAuth>) -> Registry {
        let ready_status = if auth.is_some() { 401 } else { 200 };
        let dir = tempfile::Builder::new().prefix("tufa-registry-").tempdir().expect("create temp dir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("create registry storage");
        let http = Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        let mut last_failure = String::new();
        for attempt in 1..=3 {
            let port = free_port();
            let config_file = dir.path().join(format!("config-{attempt}.yml"));
            fs::write(&config_file, config(port, &storage, auth)).expect("write registry config");
            let log = dir.path().join(format!("registry-{attempt}.log"));
            let mut command = Command::new(binary());
            command.arg("serve").arg(&config_file);
            let line = describe(&command);
            let mut child = spawn_logged(&mut command, &log).unwrap_or_else(|error| panic!("{error}"));
            let url = format!("http://127.0.0.1:{port}");
            let probe = || match http.get(format!("{url}/v2/")).timeout(Duration::from_secs(2)).send() {
                Ok(response) if response.status().as_u16() == ready_status => Ok(()),
                Ok(response) => Err(format!("GET /v2/ answered {}", response.status())),
                Err(error) => Err(format!("GET /v2/ failed: {error:?}")),
            };
            match wait_ready(&mut child, &log, STARTUP_TIMEOUT, probe) {
                Ok(()) => return Registry { child, url, log, http, dir },
                Err(crate::process::WaitError::Exited { port_taken: true, .. }) => {
                    last_failure = format!("port {port} was taken");
                }
                Err(other) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry did not start: {other}\ncommand: {line}\n{}",
                        log_tail(&log, LOG_TAIL_BYTES)
                    );
                }
            }
        }
        panic!("docker-registry could not get a free port: {last_failure}");
    }

    /// The registry's `host:port`, as image names spell it.
    pub fn host(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `<method> <url><path>` with an optional bearer token, more `headers` and an optional body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> HttpResponse {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid HTTP method");
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().unwrap_or_else(|error| panic!("request to docker-registry failed: {error:?}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().expect("read the registry's response").to_vec();
        HttpResponse { status, body, headers }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop_and_report(&mut self.child, "docker-registry", &self.log, &mut self.dir);
    }
}
