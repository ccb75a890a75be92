//! tufa-server against hostile or careless clients, as real processes: early rejections reach curl
//! over HTTP/2 every time (not as a stream reset), bodies cut for being late or slow get their 408
//! over HTTP/1.1 and HTTP/2, silent connections are closed, and connections beyond the cap are
//! refused while the server keeps serving.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tufa_tests::server::Server;
use tufa_tests::tufa::{Options, start_with};

/// Starts tufa-server (SQLite) with `config` as its TOML file.
fn start(name: &str, config: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tufa-server.toml");
    std::fs::write(&file, config).expect("write the config file");
    let server = start_with(Options {
        name: name.into(),
        database_url: None,
        database: None,
        extra_args: vec!["--config".into(), file.to_str().expect("UTF-8 path").into()],
    });
    (server, dir)
}

fn address(server: &Server) -> SocketAddr {
    server.url().trim_start_matches("https://").parse().expect("the server URL is https://IP:PORT")
}

/// One `curl --http2` POST: curl's exit status, the HTTP status and version, and the body.
fn curl_post(server: &Server, path: &str, content_type: &str, body: &Path) -> (i32, String, String) {
    curl_post_with(server, path, content_type, body, &["--http2"])
}

/// One `curl` POST with extra options.
fn curl_post_with(
    server: &Server,
    path: &str,
    content_type: &str,
    body: &Path,
    options: &[&str],
) -> (i32, String, String) {
    let port = address(server).port();
    let output = Command::new("curl")
        .args(["--silent", "--show-error"])
        .args(options)
        .arg("--cacert")
        .arg(server.ca_cert())
        .args(["-X", "POST", "-H", &format!("Content-Type: {content_type}"), "--data-binary"])
        .arg(format!("@{}", body.display()))
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://localhost:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl (the curl package must be installed)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), format!("{status} {stderr}").trim().to_owned(), body.to_owned())
}

/// The notary error code in a response body.
fn code(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    json["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn early_rejections_reach_curl_over_http2_every_time() {
    let (server, dir) = start("tufa-server (hostile clients: rejections)", "");
    // Large enough that the client is still sending when the server has already answered.
    let body = dir.path().join("body.bin");
    std::fs::write(&body, vec![b'x'; 200_000]).expect("write the body");
    let cases = [
        // Not multipart: refused before the body is read.
        ("/v2/tufa.test/hostile/_trust/tuf/", "application/json", "MALFORMED_UPLOAD"),
        // A control character in the GUN: refused before the body is read.
        ("/v2/tufa.test/ho%01stile/_trust/tuf/", "multipart/form-data; boundary=x", "INVALID_GUN"),
    ];
    for (path, content_type, expected) in cases {
        for attempt in 0..60 {
            let (exit, status, reply) = curl_post(&server, path, content_type, &body);
            assert_eq!((exit, status.as_str()), (0, "400 2"), "{path} attempt {attempt}: {reply}");
            assert_eq!(code(&reply), expected, "{path} attempt {attempt}");
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> =
                (0..20).map(|_| scope.spawn(|| curl_post(&server, path, content_type, &body))).collect();
            for handle in handles {
                let (exit, status, reply) = handle.join().expect("curl thread");
                assert_eq!((exit, status.as_str()), (0, "400 2"), "{path} in parallel: {reply}");
                assert_eq!(code(&reply), expected, "{path} in parallel");
            }
        });
    }
    // Nothing was stored.
    assert_eq!(server.metadata("tufa.test/hostile", "root.json").status, 404);
}

/// Reads until the server closes the connection and returns how long that took.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("set a read timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(error) => panic!("the connection was still open after {:?}: {error}", started.elapsed()),
        }
    }
}

#[test]
fn silent_connections_are_closed_and_the_connection_cap_holds() {
    let (server, _dir) = start(
        "tufa-server (hostile clients: connections)",
        "[connections]\nhandshake_timeout_secs = 1\nfirst_request_timeout_secs = 1\nmax_connections = 8\n",
    );
    let address = address(&server);
    // A client that connects and never starts the TLS handshake.
    let mut silent = TcpStream::connect(address).expect("connect");
    let took = closed_within(&mut silent, Duration::from_secs(10));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");

    // Eight silent connections fill the cap; a ninth is closed at once, long before any timeout.
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(address).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = TcpStream::connect(address).expect("the kernel still accepts the TCP connection");
    let took = closed_within(&mut refused, Duration::from_secs(10));
    assert!(took < Duration::from_millis(500), "the excess connection stayed open {took:?}");
    // Once the silent ones have been closed (handshake timeout), the server serves again.
    drop(held);
    std::thread::sleep(Duration::from_millis(1500));
    let health = server.get("/_notary_server/health");
    assert_eq!(health.status, 200, "{health}");
}

#[test]
fn a_body_that_is_not_complete_in_time_is_cut_with_408() {
    let (server, dir) =
        start("tufa-server (hostile clients: slow body)", "[connections]\nbody_timeout_secs = 2\nmin_body_rate = 0\n");
    let body = dir.path().join("body.bin");
    std::fs::write(&body, vec![b'x'; 100_000]).expect("write the body");
    for (version, expected) in [("--http1.1", "408 1.1"), ("--http2", "408 2")] {
        let started = Instant::now();
        // 100 kB at 4 kB/s would take 25 s; the server cuts it after 2.
        let (exit, status, reply) = curl_post_with(
            &server,
            "/v2/tufa.test/slow/_trust/tuf/",
            "multipart/form-data; boundary=x",
            &body,
            &[version, "--limit-rate", "4000"],
        );
        let took = started.elapsed();
        assert_eq!((exit, status.as_str()), (0, expected), "{version}: {reply}");
        assert_eq!(code(&reply), "MALFORMED_UPLOAD", "{version}");
        let json: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
        assert_eq!(json["errors"][0]["detail"], "the request body was not complete within 2 s", "{version}");
        assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(10), "{version}: {took:?}");
    }
    assert_eq!(server.metadata("tufa.test/slow", "root.json").status, 404);
}

#[test]
fn a_body_under_the_minimum_rate_is_cut_with_408_over_http2_and_http1() {
    let (server, dir) = start(
        "tufa-server (hostile clients: trickled body)",
        "[connections]\nbody_timeout_secs = 60\nmin_body_rate = 10000\nbody_rate_grace_secs = 1\n",
    );
    let body = dir.path().join("body.bin");
    std::fs::write(&body, vec![b'x'; 100_000]).expect("write the body");
    for (version, expected) in [("--http2", "408 2"), ("--http1.1", "408 1.1")] {
        let started = Instant::now();
        // 100 kB at 2 kB/s would take 50 s; at under 10 kB/s it is cut once the 1 s grace is over.
        let (exit, status, reply) = curl_post_with(
            &server,
            "/v2/tufa.test/trickle/_trust/tuf/",
            "multipart/form-data; boundary=x",
            &body,
            &[version, "--limit-rate", "2000"],
        );
        let took = started.elapsed();
        assert_eq!((exit, status.as_str()), (0, expected), "{version}: {reply}");
        assert_eq!(code(&reply), "MALFORMED_UPLOAD", "{version}");
        let json: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
        assert_eq!(
            json["errors"][0]["detail"], "the request body arrived at less than 10000 bytes per second",
            "{version}"
        );
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "{version}: {took:?}");
    }
    assert_eq!(server.metadata("tufa.test/trickle", "root.json").status, 404);
}
