//! signer-bench: signatures per second of tufa-signer's backends, in process and over gRPC with
//! mutual TLS, side by side with Go notary-signer on the same machine, in one run. See
//! `bench/README.md`. It measures; it never asserts a speed.
//!
//! Usage: `signer-bench [--seconds S] [--warmup N]`. Environment: `TUFA_SIGNER_BIN` (default: the
//! `tufa-signer` next to this binary), `NOTARY_SIGNER_BIN` (default `/usr/bin/notary-signer`),
//! `PKCS11_MODULE` (default `/usr/lib/softhsm/libsofthsm2.so`).

mod grpc;
mod inproc;
mod measure;
mod process;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::grpc::{Pki, Running, SoftHsm};
use crate::measure::{Plan, run_cell};
use crate::process::{clean_command, run_tool};
use crate::report::Row;

/// Concurrency levels of every target.
const LEVELS: [usize; 2] = [1, 8];
/// Default timed seconds per cell.
const DEFAULT_SECONDS: f64 = 3.0;
/// Default warm-up calls per cell.
const DEFAULT_WARMUP: usize = 200;
const DEFAULT_NOTARY_SIGNER: &str = "/usr/bin/notary-signer";

const USAGE: &str = "\
usage: signer-bench [--seconds S] [--warmup N]

Measures signatures per second of tufa-signer (in process and over gRPC, software and PKCS#11
backends) and of Go notary-signer, at concurrency 1 and 8. Needs the tufa-signer binary next to
this one (cargo build --release -p tufa-signer -p tufa-bench) or TUFA_SIGNER_BIN; uses
NOTARY_SIGNER_BIN (default /usr/bin/notary-signer), softhsm2-util and PKCS11_MODULE (default
/usr/lib/softhsm/libsofthsm2.so) when present.";

fn parse_plan(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan { warmup: DEFAULT_WARMUP, duration: Duration::from_secs_f64(DEFAULT_SECONDS) };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                let seconds: f64 = value("--seconds")?.parse().map_err(|_| "--seconds needs a number")?;
                if !(0.1..=600.0).contains(&seconds) {
                    return Err("--seconds must be between 0.1 and 600".to_owned());
                }
                plan.duration = Duration::from_secs_f64(seconds);
            }
            "--warmup" => plan.warmup = value("--warmup")?.parse().map_err(|_| "--warmup needs a whole number")?,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(plan)
}

/// A canonical-JSON snapshot body of a small repository (the size of what notary-server asks the
/// signer to sign): `_type`, `expires`, `meta` with root and targets hashes, `version`.
fn message() -> Vec<u8> {
    // Deterministic stand-ins for base64 SHA-256 / SHA-512 digests.
    fn digest(seed: u64, bytes: usize) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut state = seed;
        let chars = bytes.div_ceil(3) * 4;
        let padding = (3 - bytes % 3) % 3;
        let mut out = String::with_capacity(chars);
        for _ in 0..chars - padding {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // The top six bits always index the 64-letter alphabet; `get` keeps that unchecked-free.
            let letter = ALPHABET.get((state >> 58) as usize).copied().unwrap_or(b'A');
            out.push(char::from(letter));
        }
        out.push_str(&"=".repeat(padding));
        out
    }
    let entry = |seed: u64, length: u64| {
        serde_json::json!({
            "hashes": { "sha256": digest(seed, 32), "sha512": digest(seed + 1, 64) },
            "length": length,
        })
    };
    let body = serde_json::json!({
        "_type": "Snapshot",
        "expires": "2027-11-22T09:00:00Z",
        "meta": { "root": entry(1, 2483), "targets": entry(3, 1175) },
        "version": 17,
    });
    body.to_string().into_bytes()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn tool_version(program: &Path, flag: &str) -> String {
    match clean_command(program).arg(flag).output() {
        Ok(output) => {
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            let line = first_line(&text);
            // notary-signer logs its version as a JSON line.
            serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|value| value.get("msg").and_then(serde_json::Value::as_str).map(str::to_owned))
                .unwrap_or(line)
        }
        Err(error) => format!("unknown ({error})"),
    }
}

fn tufa_signer_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("TUFA_SIGNER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|error| format!("cannot find this program: {error}"))?;
    let path = exe.with_file_name("tufa-signer");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it with the same profile (`cargo build --release -p tufa-signer -p tufa-bench`) \
             or set TUFA_SIGNER_BIN",
            path.display()
        ))
    }
}

fn program_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// Collects rows, notes and failures while the run goes on.
#[derive(Debug, Default)]
struct Run {
    rows: Vec<Row>,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl Run {
    fn fail(&mut self, target: &str, error: String) {
        eprintln!("  {target}: FAILED: {error}");
        self.failures.push(format!("{target}: {error}"));
    }

    fn push(
        &mut self,
        target: &str,
        via: &'static str,
        concurrency: usize,
        connections: Option<usize>,
        outcome: Result<measure::Stats, String>,
    ) {
        match &outcome {
            Ok(stats) => eprintln!(
                "  {target} ({via}, concurrency {concurrency}{}): {:.0} signs/s",
                connections.map(|count| format!(", {count} conn")).unwrap_or_default(),
                stats.per_second()
            ),
            Err(error) => self.fail(&format!("{target} ({via}, concurrency {concurrency})"), error.clone()),
        }
        self.rows.push(Row { target: target.to_owned(), via, concurrency, connections, outcome });
    }
}

/// Times one in-process subject at every level.
async fn in_process_rows(run: &mut Run, target: &str, subject: &inproc::Subject, plan: Plan, message: &Arc<Vec<u8>>) {
    for concurrency in LEVELS {
        let outcome = inproc::run(subject, concurrency, plan, message).await;
        run.push(target, "in-process", concurrency, None, outcome);
    }
}

/// Connects to the started signer `running`, creates the key, checks one signature in full, then
/// times every level on one connection and every level above 1 on one connection per call.
async fn grpc_rows(run: &mut Run, target: &str, running: &mut Running, pki: &Pki, plan: Plan, message: &Arc<Vec<u8>>) {
    let setup = async {
        let channel = grpc::wait_ready(running, pki).await?;
        let key = grpc::create_key(&channel).await?;
        grpc::sign_checked(&channel, &key, message).await?;
        Ok::<_, String>((channel, key))
    };
    let (channel, key) = match setup.await {
        Ok(ready) => ready,
        Err(error) => return run.fail(target, error),
    };
    let check = |signature: &[u8]| key.public.verify("ecdsa", message, signature).map_err(|error| error.to_string());
    let shapes = LEVELS
        .iter()
        .map(|&level| (level, 1))
        .chain(LEVELS.iter().filter(|&&level| level > 1).map(|&level| (level, level)));
    for (concurrency, connections) in shapes {
        let mut channels = vec![channel.clone()];
        let mut opened = Ok(());
        for _ in 1..connections {
            match grpc::connect(pki, running.port).await {
                Ok(extra) => channels.push(extra),
                Err(error) => {
                    opened = Err(error);
                    break;
                }
            }
        }
        let outcome = match opened {
            Ok(()) => run_cell(&grpc::sign_fn(channels, &key.key_id, message.clone()), concurrency, plan, &check).await,
            Err(error) => Err(error),
        };
        let outcome = outcome.and_then(|stats| running.server.check_running().map(|()| stats));
        run.push(target, "gRPC", concurrency, Some(connections), outcome);
    }
    run.notes.push(format!("{target} wrote {} KiB of log during its run", running.server.log_bytes() / 1024));
}

async fn bench(plan: Plan) -> ExitCode {
    let debug = cfg!(debug_assertions);
    if debug {
        eprintln!("\n*** WARNING: this is a DEBUG build of signer-bench (and, next to it, of tufa-signer). ***");
        eprintln!("*** The numbers are not representative: cargo run --release -p tufa-bench --bin signer-bench ***\n");
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let started = chrono::Utc::now();
    let load_before = load_average();

    let tufa_signer = match tufa_signer_path() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("signer-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let workdir = match tempfile::Builder::new().prefix("signer-bench-").tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("signer-bench: cannot create a temporary directory: {error}");
            return ExitCode::from(2);
        }
    };
    let dir = workdir.path();
    let kek = dir.join("kek");
    let pki = Pki::generate(&tufa_signer, &dir.join("pki"))
        .and_then(|pki| run_tool(clean_command(&tufa_signer).arg("gen-kek").arg("--out").arg(&kek)).map(|_| pki));
    let pki = match pki {
        Ok(pki) => pki,
        Err(error) => {
            eprintln!("signer-bench: setup failed: {error}");
            return ExitCode::from(2);
        }
    };
    let message = Arc::new(message());
    let mut run = Run::default();
    eprintln!(
        "signer-bench: {} s per cell after {} warm-up calls; message {} bytes",
        plan.duration.as_secs_f64(),
        plan.warmup,
        message.len()
    );

    // In process: the ceiling, the software backend, and the service with its SQLite audit trail.
    match inproc::raw_key(&message) {
        Ok(subject) => in_process_rows(&mut run, "PrivateKey::sign (aws-lc-rs)", &subject, plan, &message).await,
        Err(error) => run.fail("PrivateKey::sign", error),
    }
    match inproc::software_backend(&kek, &message).await {
        Ok((subject, backend)) => {
            in_process_rows(&mut run, "software backend", &subject, plan, &message).await;
            match inproc::software_service(backend, dir, &message).await {
                Ok((subject, store)) => {
                    in_process_rows(&mut run, "software service + SQLite audit", &subject, plan, &message).await;
                    store.close().await;
                }
                Err(error) => run.fail("software service", error),
            }
        }
        Err(error) => run.fail("software backend", error),
    }

    // tufa-signer over gRPC, software backend.
    match grpc::start_tufa_software(&tufa_signer, &pki, dir, &kek) {
        Ok(mut running) => grpc_rows(&mut run, "tufa-signer software", &mut running, &pki, plan, &message).await,
        Err(error) => run.fail("tufa-signer software", error),
    }

    // The PKCS#11 backend on a throwaway SoftHSM token, in process (child) and over gRPC.
    let module = tufa_testkit::softhsm::module_path();
    let mut softhsm_version = None;
    match (program_on_path("softhsm2-util"), module.is_file()) {
        (Some(util), true) => {
            softhsm_version = Some(tool_version(&util, "--version"));
            match SoftHsm::create(&dir.join("softhsm"), &module) {
                Ok(hsm) => {
                    match inproc::pkcs11_in_child(&hsm, &LEVELS, plan).await {
                        Ok(results) => {
                            for (concurrency, outcome) in results {
                                run.push("pkcs11 backend (SoftHSM)", "in-process", concurrency, None, outcome);
                            }
                        }
                        Err(error) => run.fail("pkcs11 backend (SoftHSM)", error),
                    }
                    match grpc::start_tufa_pkcs11(&tufa_signer, &pki, dir, &hsm) {
                        Ok(mut running) => {
                            grpc_rows(&mut run, "tufa-signer pkcs11 (SoftHSM)", &mut running, &pki, plan, &message)
                                .await;
                        }
                        Err(error) => run.fail("tufa-signer pkcs11", error),
                    }
                }
                Err(error) => run.fail("SoftHSM token", error),
            }
        }
        _ => run.notes.push(format!(
            "PKCS#11 rows skipped: softhsm2-util or {} not found (apt-get install softhsm2)",
            module.display()
        )),
    }

    // Go notary-signer, in-memory key store.
    let notary_signer =
        std::env::var_os("NOTARY_SIGNER_BIN").map_or_else(|| PathBuf::from(DEFAULT_NOTARY_SIGNER), PathBuf::from);
    let mut notary_version = None;
    if notary_signer.is_file() {
        notary_version = Some(tool_version(&notary_signer, "-version"));
        match grpc::start_notary_signer(&notary_signer, &pki, dir) {
            Ok(mut running) => {
                grpc_rows(&mut run, "notary-signer memory (Go)", &mut running, &pki, plan, &message).await
            }
            Err(error) => run.fail("notary-signer", error),
        }
    } else {
        run.notes.push(format!(
            "notary-signer rows skipped: {} not found (apt-get install notary, or set NOTARY_SIGNER_BIN)",
            notary_signer.display()
        ));
    }

    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|text| text.trim().to_owned()).unwrap_or_default();
    println!();
    println!("signer-bench, {} UTC", started.format("%Y-%m-%d %H:%M"));
    println!("machine: {} ({cores} logical CPUs), Linux {kernel}", cpu_model());
    println!("load average: {load_before} before, {} after", load_average());
    if debug {
        println!("build: DEBUG  *** WARNING: debug build, numbers are not representative; use --release ***");
    } else {
        println!("build: release");
    }
    println!("tufa-signer: {} ({})", tool_version(&tufa_signer, "--version"), tufa_signer.display());
    if let Some(version) = notary_version {
        println!("notary-signer: {version} ({})", notary_signer.display());
    }
    if let Some(version) = softhsm_version {
        println!("SoftHSM: {version}, {} sessions", grpc::PKCS11_SESSIONS);
    }
    println!(
        "each cell: {} warm-up calls, then {} s; message: {}-byte canonical snapshot body; ECDSA P-256",
        plan.warmup,
        plan.duration.as_secs_f64(),
        message.len()
    );
    println!();
    print!("{}", report::table(&run.rows));
    println!();
    for note in &run.notes {
        println!("note: {note}");
    }
    if run.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for failure in &run.failures {
            println!("FAILED: {failure}");
        }
        ExitCode::FAILURE
    }
}

/// A multi-threaded tokio runtime, or exit status 2 after saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|error| {
        eprintln!("cannot start the async runtime: {error}");
        ExitCode::from(2)
    })
}

fn child(args: &[String]) -> ExitCode {
    // __pkcs11-child MODULE DURATION_MS WARMUP LEVEL...
    let parsed = (|| {
        let module = PathBuf::from(args.first()?);
        let duration = Duration::from_millis(args.get(1)?.parse().ok()?);
        let warmup = args.get(2)?.parse().ok()?;
        let levels = args.get(3..)?.iter().map(|level| level.parse().ok()).collect::<Option<Vec<usize>>>()?;
        Some((module, Plan { warmup, duration }, levels))
    })();
    let Some((module, plan, levels)) = parsed else {
        eprintln!("signer-bench {}: bad arguments", inproc::PKCS11_CHILD);
        return ExitCode::from(2);
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(inproc::child_main(module, &levels, plan, Arc::new(message()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some(inproc::PKCS11_CHILD) {
        return child(args.get(1..).unwrap_or_default());
    }
    let plan = match parse_plan(&args) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        tokio::select! {
            code = bench(plan) => code,
            _ = tokio::signal::ctrl_c() => {
                // Dropping the benchmark future kills the signers and removes the temporary files.
                eprintln!("signer-bench: interrupted");
                ExitCode::from(130)
            }
        }
    })
}
