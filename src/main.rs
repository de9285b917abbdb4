use clap::Parser;
use nnmon::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Bad flags exit here with code 2 and clap's explanation.
    let cli = Cli::parse();
    nnmon::logging::init();
    let cancel = nnmon::shutdown::on_signal();
    // One runtime thread: each service is a single event loop (lapin runs its socket I/O on
    // a thread of its own; amqprs runs it as tasks on this runtime), and on a small machine
    // shared with the broker more runtime threads cost more than they bring.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nnmon::run(cli, cancel)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
