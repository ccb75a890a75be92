//! The tufa-server binary. See `tufa-server --help`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // One process-wide crypto provider: aws-lc-rs (ring is not in the dependency tree).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = match tufa_server::config::load() {
        Ok(config) => config,
        // --help and --version arrive here; clap prints them and picks the exit code.
        Err(tufa_server::config::ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("tufa-server: {error}");
            return ExitCode::from(2);
        }
    };
    tufa_server::run::init_logging(&config);
    match tufa_server::run::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "tufa-server stopped");
            eprintln!("tufa-server: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
