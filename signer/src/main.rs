//! The tufa-signer binary. See `tufa-signer --help`.

use std::process::ExitCode;

use clap::Parser as _;
use tufa_signer::config::{self, BackendSettings, Cli, Command};
use tufa_signer::run::{self, RunError};
use tufa_signer::store::EventFilter;
use tufa_signer::{pki, service};

#[tokio::main]
async fn main() -> ExitCode {
    // One process-wide crypto provider: aws-lc-rs (ring is not in the dependency tree).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tufa-signer: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn execute(cli: Cli) -> Result<(), RunError> {
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
        Some(Command::Audit { key_id, since, until, after_id, limit }) => {
            let config = config::resolve_config(&cli.common, &cli.serve)?;
            run::init_logging(&config.log);
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
            let config = config::resolve_config(&cli.common, &cli.serve)?;
            run::init_logging(&config.log);
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
            let config = config::resolve_config(&cli.common, &cli.serve)?;
            run::init_logging(&config.log);
            run::serve(&config).await
        }
    }
}
