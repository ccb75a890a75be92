//! The tufa-signer binary. See `tufa-signer --help`.

use std::process::ExitCode;

use tufa_common::logging::{self, LogFormat};
use tufa_signer::config::{
    self, AuditAction, BackendSettings, Cli, Command, CommonArgs, Config, ConfigError, ServeArgs,
};
use tufa_signer::run::{self, RunError};
use tufa_signer::store::EventFilter;
use tufa_signer::{pki, service};

#[tokio::main]
async fn main() -> ExitCode {
    // One process-wide crypto provider: aws-lc-rs (ring is not in the dependency tree).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match config::parse_cli(&args) {
        Ok(cli) => cli,
        // --help and --version arrive here too; clap prints them and picks the exit code.
        Err(ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("tufa-signer: {error}");
            return ExitCode::from(tufa_common::EXIT_CONFIG);
        }
    };
    // Until the configuration (and with it the log format) is known, errors are plain lines.
    let mut format = LogFormat::Text;
    match execute(cli, &mut format).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            logging::report_fatal("tufa-signer", format, &error);
            ExitCode::from(error.exit_code())
        }
    }
}

/// Loads the configuration and starts logging as it says; `format` learns the log format.
fn configure(common: &CommonArgs, serve: &ServeArgs, format: &mut LogFormat) -> Result<Config, RunError> {
    let config = config::load(common, serve)?;
    logging::init(&config.log).map_err(RunError::Other)?;
    *format = config.log.format;
    Ok(config)
}

async fn execute(cli: Cli, format: &mut LogFormat) -> Result<(), RunError> {
    match cli.command {
        Some(Command::GenCerts { out, signer_names, client_name, force }) => {
            let generated =
                pki::generate_pki(&signer_names, &client_name).map_err(|error| RunError::Other(error.to_string()))?;
            let written =
                pki::write_pki(&out, &generated, force).map_err(|error| RunError::Other(error.to_string()))?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
        Some(Command::GenKek { out }) => {
            pki::write_new_kek(&out).map_err(|error| RunError::Other(error.to_string()))?;
            println!("{}", out.display());
            Ok(())
        }
        Some(Command::Audit { action: Some(AuditAction::Verify { checkpoint_key, json }), .. }) => {
            let config = configure(&cli.common, &cli.serve, format)?;
            let verification = async {
                let store = run::open_existing_store(&config).await?;
                let verification = run::verify_log(&store, checkpoint_key.as_deref()).await;
                store.close().await;
                verification
            }
            .await
            .map_err(|error| RunError::VerifyFailed(Box::new(error)))?;
            if verification.source == run::KeySource::Database {
                eprintln!(
                    "tufa-signer: warning: the checkpoint key was taken from the database being verified; pin it with \
                     --checkpoint-key {}",
                    verification.key.vkey()
                );
            }
            let mut stdout = std::io::stdout().lock();
            run::print_verification(&verification, json, &mut stdout)
                .map_err(|error| RunError::VerifyFailed(Box::new(error)))?;
            let report = &verification.report;
            if report.ok() {
                Ok(())
            } else {
                Err(RunError::LogProblems(report.problems.len() as u64 + report.more_problems))
            }
        }
        Some(Command::Audit { action: Some(AuditAction::Checkpoint), .. }) => {
            let config = configure(&cli.common, &cli.serve, format)?;
            let store = run::open_existing_store(&config).await?;
            let latest = run::latest_checkpoint(&store).await;
            store.close().await;
            let (checkpoint, key) = latest?;
            print!("{}", checkpoint.note);
            println!();
            println!("vkey: {}", key.vkey());
            Ok(())
        }
        Some(Command::Audit { action: None, key_id, since, until, after_id, limit }) => {
            let config = configure(&cli.common, &cli.serve, format)?;
            if let Some(key_id) = &key_id {
                service::check_key_id(key_id).map_err(|error| RunError::Other(error.to_string()))?;
            }
            let store = run::open_store(&config).await?;
            let filter = EventFilter {
                key_id,
                since: since.map(|time| time.to_utc()),
                until: until.map(|time| time.to_utc()),
                after_id,
                ..EventFilter::default()
            };
            let mut stdout = std::io::stdout().lock();
            run::print_audit(&store, filter, limit, &mut stdout).await?;
            store.close().await;
            Ok(())
        }
        Some(Command::RotateKek) => {
            let config = configure(&cli.common, &cli.serve, format)?;
            let BackendSettings::Software(settings) = &config.backend else {
                return Err(RunError::Other("rotate-kek applies to the software backend only".to_owned()));
            };
            let backend = run::open_software_backend(settings)?;
            let store = run::open_store(&config).await?;
            let report = run::rotate_kek(&store, &backend).await?;
            store.close().await;
            println!("re-sealed {} key(s) under KEK {:?}", report.resealed, backend.ring().active_name());
            for (key_id, reason) in &report.failed {
                println!("not re-sealed: {key_id}: {reason}");
            }
            if report.failed.is_empty() {
                Ok(())
            } else {
                Err(RunError::Other(format!("{} key(s) could not be re-sealed", report.failed.len())))
            }
        }
        None => {
            let config = configure(&cli.common, &cli.serve, format)?;
            run::serve(&config).await
        }
    }
}
