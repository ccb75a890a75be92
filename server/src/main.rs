//! The tufa-server binary. See `tufa-server --help`.

use std::process::ExitCode;

use tufa_common::EXIT_CONFIG;
use tufa_common::logging;

fn main() -> ExitCode {
    return_large_buffers();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tufa-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

/// Makes glibc's allocator return every buffer of 1 MiB or more to the system when it is freed.
///
/// By default glibc serves such buffers with their own mappings only until the first is freed: it
/// then raises that threshold to the freed size (up to 32 MiB) and serves later ones from its
/// per-thread arenas, where they stay after they are freed, split by smaller allocations. An upload
/// holds buffers as large as its body (the body, the stored file it replaces as SQLite and sqlx read
/// it), so after the first large upload each later one grew the process by up to 6.3 times its body
/// instead of 3 (upload-bench, `100000 targets replacing 100000 others`). A fixed threshold keeps
/// the figure at the second.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(unsafe_code, reason = "mallopt has no safe binding; called once, before any other thread exists")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before the runtime starts any
    // thread, so no allocation runs concurrently with it. A refusal (0) leaves glibc's default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

async fn run() -> ExitCode {
    // One process-wide crypto provider: aws-lc-rs (ring is not in the dependency tree).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = match tufa_server::config::load() {
        Ok(config) => config,
        // --help and --version arrive here; clap prints them and picks the exit code.
        Err(tufa_server::config::ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("tufa-server: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Admin commands report on stdout; their log keeps to warnings unless a more detailed level was asked for.
    let mut log = config.log.clone();
    if config.command.is_some() && log.filter == "info" {
        log.filter = "warn".into();
    }
    if let Err(error) = logging::init(&log) {
        eprintln!("tufa-server: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let format = config.log.format;
    if let Some(tufa_server::admin::AdminCommand::Admin(admin)) = &config.command {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut output = std::io::stdout();
        return match tufa_server::admin::run(&config, &admin.action, &mut input, &mut output).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                logging::report_fatal("tufa-server admin", format, &error);
                ExitCode::from(error.exit_code())
            }
        };
    }
    if let Some(tufa_server::admin::AdminCommand::Audit(audit)) = &config.command {
        let mut output = std::io::stdout();
        return match tufa_server::audit_cli::run(&config, &audit.action, &mut output).await {
            Ok(status) => ExitCode::from(status),
            Err(error) => {
                logging::report_fatal("tufa-server audit", format, &error);
                ExitCode::from(tufa_common::EXIT_CONFIG)
            }
        };
    }
    if let Some(tufa_server::admin::AdminCommand::Verify(verify)) = &config.command {
        let mut output = std::io::stdout();
        return ExitCode::from(tufa_server::verify_cli::run_verify(&config, verify, &mut output).await);
    }
    let enforcement = match &config.command {
        Some(tufa_server::admin::AdminCommand::VerifyServer(args)) => {
            Some(("tufa-server verify-server", tufa_server::verify_cli::run_verify_server(&config, args).await))
        }
        Some(tufa_server::admin::AdminCommand::AuthzPlugin(args)) => {
            Some(("tufa-server authz-plugin", tufa_server::verify_cli::run_authz_plugin(&config, args).await))
        }
        _ => None,
    };
    if let Some((what, outcome)) = enforcement {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                logging::report_fatal(what, format, &error);
                ExitCode::from(tufa_common::EXIT_CONFIG)
            }
        };
    }
    match tufa_server::run::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            logging::report_fatal("tufa-server", format, &error);
            ExitCode::from(error.exit_code())
        }
    }
}
