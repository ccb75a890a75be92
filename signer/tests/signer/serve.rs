//! The serving binary's audit checkpoints: the checkpoint key made at start-up under the
//! configured origin, a checkpoint at start, one every `--audit-checkpoint-interval` while the log
//! grows, and one at shutdown (SIGTERM), all verifying with the logged key.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tufa_signer::pki::{Pki, generate_pki, write_pki};
use tufa_signer::run::verify_log;
use tufa_signer::store::Store;
use tufa_signer_api::proto::key_management_client::KeyManagementClient;
use tufa_signer_api::proto::signer_client::SignerClient;
use tufa_signer_api::proto::{CreateKeyRequest, KeyId, SignatureRequest};
use tufa_testkit::process::{free_port, log_tail, spawn_logged, stop_and_report, wait_ready};

use crate::support::KEK_A;

const ORIGIN: &str = "serve.example/audit";

struct Running {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

/// Starts `tufa-signer` on `dir` with checkpoints every `interval`.
fn start(dir: &Path, interval: &str, run: &str) -> Running {
    let pki = dir.join("pki");
    let log = dir.join(format!("signer-{run}.log"));
    for _attempt in 0..3 {
        let port = free_port().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tufa-signer"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TUFA_SIGNER_") {
                command.env_remove(name);
            }
        }
        command
            .env("TUFA_SIGNER_KEK_A", KEK_A)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-cert")
            .arg(pki.join("signer.crt"))
            .arg("--tls-key")
            .arg(pki.join("signer.key"))
            .arg("--tls-client-ca")
            .arg(pki.join("ca.crt"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--audit-origin", ORIGIN, "--audit-checkpoint-interval", interval]);
        let mut child = spawn_logged(&mut command, &log).unwrap();
        let ready = wait_ready(&mut child, &log, Duration::from_secs(30), || {
            let text = log_tail(&log, 64 * 1024);
            if text.contains("listening on") { Ok(()) } else { Err("not listening yet".to_owned()) }
        });
        match ready {
            Ok(()) => return Running { child, port, log },
            Err(tufa_testkit::process::WaitError::Exited { port_taken: true, .. }) => continue,
            Err(error) => panic!("tufa-signer did not start: {error}\n{}", log_tail(&log, 8192)),
        }
    }
    panic!("no free port after three attempts");
}

/// Sends SIGTERM and waits for a clean exit.
fn terminate(running: &mut Running) {
    let status = Command::new("kill").args(["-TERM", &running.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            assert!(status.success(), "exit {status}\n{}", log_tail(&running.log, 8192));
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "tufa-signer did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn channel(pki: &Pki, port: u16) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca.cert_pem))
        .identity(Identity::from_pem(&pki.client.cert_pem, &pki.client.key_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://127.0.0.1:{port}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
}

/// Creates a key and signs with it; returns the signature's log position.
async fn sign_once(pki: &Pki, port: u16) -> u64 {
    let channel = channel(pki, port).await;
    let created = KeyManagementClient::new(channel.clone())
        .create_key(CreateKeyRequest {
            algorithm: "ecdsa".into(),
            gun: "docker.io/library/alpine".into(),
            role: "timestamp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let key_id = created.key_info.unwrap().key_id.unwrap().id;
    let response = SignerClient::new(channel)
        .sign(SignatureRequest { key_id: Some(KeyId { id: key_id }), content: b"payload".to_vec() })
        .await
        .unwrap();
    response.metadata().get("tufa-audit-seq").unwrap().to_str().unwrap().parse().unwrap()
}

async fn store(dir: &Path) -> Store {
    Store::open_sqlite_file(&dir.join("data").join("tufa-signer.db")).await.unwrap()
}

/// Waits until the latest checkpoint covers `size` entries.
async fn wait_for_checkpoint(dir: &Path, size: u64) {
    let store = store(dir).await;
    let started = Instant::now();
    loop {
        let latest = store.latest_checkpoint().await.unwrap().map(|latest| latest.size);
        if latest == Some(size) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no checkpoint of {size} entries; latest {latest:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_signer_checkpoints_at_start_on_interval_and_at_shutdown() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut dir = tempfile::tempdir().unwrap();
    let pki = generate_pki(&[], "tufa-server").unwrap();
    write_pki(&dir.path().join("pki"), &pki, false).unwrap();

    // First run, checkpoints hourly: one at start (the checkpoint key's creation), one at shutdown.
    let mut first = start(dir.path(), "1h", "first");
    wait_for_checkpoint(dir.path(), 1).await;
    let vkey_line = log_tail(&first.log, 64 * 1024);
    assert_eq!(sign_once(&pki, first.port).await, 2, "entry 0 is the checkpoint key, 1 the client key");
    terminate(&mut first);
    let store_after_first = store(dir.path()).await;
    assert_eq!(store_after_first.latest_checkpoint().await.unwrap().map(|latest| latest.size), Some(3));
    let vkey = {
        let key = store_after_first.latest_checkpoint().await.unwrap().unwrap().key_id;
        let record = store_after_first.key(&key).await.unwrap().unwrap();
        tufa_signer::checkpoint::verifier_key(&record).unwrap().vkey()
    };
    assert!(vkey.starts_with(&format!("{ORIGIN}+")), "{vkey}");
    assert!(vkey_line.contains(&vkey), "the start-up log names the key to pin:\n{vkey_line}");
    store_after_first.close().await;

    // Second run on the same database, checkpoints every second: one appears while it serves.
    let mut second = start(dir.path(), "1", "second");
    assert_eq!(sign_once(&pki, second.port).await, 4, "the same checkpoint key: no new key entry");
    wait_for_checkpoint(dir.path(), 5).await;
    terminate(&mut second);

    let store = store(dir.path()).await;
    let sizes: Vec<u64> = store.checkpoints().await.unwrap().iter().map(|checkpoint| checkpoint.size).collect();
    assert_eq!(sizes, [1, 3, 5]);
    let verification = verify_log(&store, Some(&vkey)).await.unwrap();
    assert!(verification.report.ok(), "{:?}", verification.report);
    assert_eq!((verification.report.entries, verification.report.checkpoints), (5, 3));
    store.close().await;
    stop_and_report(&mut second.child, "tufa-signer", &second.log, &mut dir);
}
