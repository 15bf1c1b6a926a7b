//! The command line: parse, dispatch, and turn every error into one line and an exit code.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code: the command ran and its verdict is success.
pub const EXIT_OK: u8 = 0;
/// Exit code: bad flags or arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: host error (no usable KVM, bad image, I/O).
pub const EXIT_HOST: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "tdxlab",
    version,
    about = "Emulated Intel TDX on stock Linux KVM: a confidential unikernel guest and its host",
    after_help = "Exit codes: 0 success, 2 bad usage, 3 host error (no usable /dev/kvm, MAXPHYADDR < 48, I/O)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that this host can run emulated TDs (KVM API, VM types, MAXPHYADDR, capabilities).
    Caps {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the zap policies' decision table: roots zapped and flush kept, per caller and VM.
    ZapTable {
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parse `std::env::args` and run.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Caps { json } => crate::caps::run(json),
        Command::ZapTable { json } => crate::zap_table::run(json),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tdxlab: {}", one_line(&format!("{e:#}")));
            ExitCode::from(EXIT_HOST)
        }
    }
}

/// Help and version go to stdout with exit 0; real usage errors become one line on stderr.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(
                if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    EXIT_USAGE
                } else {
                    EXIT_OK
                },
            )
        }
        _ => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("tdxlab: {first} (try --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Collapse a multi-line message into one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
