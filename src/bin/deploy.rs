//! The `wheelhouse-deploy` binary: parse the command line, run the command.

use std::process::ExitCode;

use clap::Parser;

use wheelhouse::deploy::cli::{run, DeployCli};

fn main() -> ExitCode {
    let cli = DeployCli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(err) => {
            eprintln!("wheelhouse-deploy: error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}
