//! The `shears` command-line tool: `shears --help` lists the subcommands.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
