//! The `wheelhouse` server binary: parse the command line, set up logging, serve.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use wheelhouse::config::{Cli, Command, LogStream, ServerConfig};

fn init_logging(config: &ServerConfig) -> Result<(), String> {
    let level = match config.verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("wheelhouse={level},rocket=off,warn")))
    };
    let stream = match config.log_stream {
        LogStream::Stderr => Some(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .with_filter(filter())
                .boxed(),
        ),
        LogStream::Stdout => Some(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stdout().is_terminal())
                .with_writer(std::io::stdout)
                .with_filter(filter())
                .boxed(),
        ),
        LogStream::None => None,
    };
    let file = match &config.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| format!("cannot open --log-file {}: {err}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(filter())
                    .boxed(),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(stream)
        .with(file)
        .init();
    Ok(())
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and each keeps
/// the memory its thread freed: with tokio's worker and blocking threads that inflated RSS by
/// tens of MB for nothing. Two arenas keep contention low on the thread counts the server runs.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = match cli.command {
        Command::Run(run) => {
            limit_malloc_arenas();
            run
        }
        Command::Healthcheck { url, timeout } => {
            return match wheelhouse::healthcheck::probe(
                &url,
                std::time::Duration::from_secs(timeout),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("wheelhouse healthcheck: {err}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let config = match run.into_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("wheelhouse: error: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = init_logging(&config) {
        eprintln!("wheelhouse: error: {err}");
        return ExitCode::from(2);
    }
    for ignored in &config.ignored {
        tracing::warn!("ignored: {ignored}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        builder.worker_threads(usize::from(workers));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wheelhouse: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wheelhouse::server::launch(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wheelhouse: error: {err}");
            ExitCode::FAILURE
        }
    }
}
