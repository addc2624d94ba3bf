//! `collections`: the pipeline on one machine. Settings come from the
//! environment (docs/configuration.md); flags are parsed into typed values
//! here and handed to the command, never through the environment.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use collections::commands::{
    backfill::Backfill, batches::Batches, delete::Delete, erase::Erase, failures::Failures, migrate::Migrate,
    prune::Prune, prune_analyses::PruneAnalyses, reanalyze::Reanalyze, redrive::Redrive, reembed::Reembed,
    retry::Retry, run::Run, search::Search, serve::Serve, stats::Stats, thumbnail::Thumbnail,
    vector_index::VectorIndexCommand,
};
use domain::settings::Env;

#[derive(Debug, Parser)]
#[command(name = "collections", version, about = "Thumbnail, analyse, embed and search images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Migrate(Migrate),
    Run(Run),
    Search(Search),
    Thumbnail(Thumbnail),
    Failures(Failures),
    Backfill(Backfill),
    Batches(Batches),
    VectorIndex(VectorIndexCommand),
    Redrive(Redrive),
    Serve(Serve),
    Stats(Stats),
    Reanalyze(Reanalyze),
    PruneAnalyses(PruneAnalyses),
    Reembed(Reembed),
    #[command(alias = "prune-vectors")]
    Prune(Prune),
    Delete(Delete),
    Erase(Erase),
    Retry(Retry),
}

#[tokio::main]
async fn main() -> ExitCode {
    runtime::telemetry::init_cli();
    let env = Env::process();
    let done = match Cli::parse().command {
        Command::Migrate(c) => c.run(&env).await,
        Command::Run(c) => c.run(&env).await,
        Command::Search(c) => c.run(&env).await,
        Command::Thumbnail(c) => c.run(&env).await,
        Command::Failures(c) => c.run(&env).await,
        Command::Backfill(c) => c.run(&env).await,
        Command::Batches(c) => c.run(&env).await,
        Command::VectorIndex(c) => c.run(&env).await,
        Command::Redrive(c) => c.run().await,
        Command::Serve(c) => c.run(&env).await,
        Command::Stats(c) => c.run(&env).await,
        Command::Reanalyze(c) => c.run(&env).await,
        Command::PruneAnalyses(c) => c.run(&env).await,
        Command::Reembed(c) => c.run(&env).await,
        Command::Prune(c) => c.run(&env).await,
        Command::Delete(c) => c.run(&env).await,
        Command::Erase(c) => c.run(&env).await,
        Command::Retry(c) => c.run(&env).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
