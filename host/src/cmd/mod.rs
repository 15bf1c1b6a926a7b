//! The command line: one module per subcommand, each with its clap `Args` struct; parse,
//! dispatch, and turn every error into one line and an exit code (`crate::exit`).

mod bench;
mod beyond;
mod costs;
mod parse;
mod run;
mod scale;
pub mod sept_states;
mod sim;
pub mod stress;
mod trace_args;

pub use parse::{check_inject, inject_config, InjectItem};
pub(crate) use parse::{
    parse_gpaw, parse_inject_item, parse_scenario, parse_seconds, parse_td_mem, parse_timeout,
    parse_zap_policy,
};

use crate::exit::{EXIT_HOST, EXIT_OK, EXIT_PIPE, EXIT_USAGE};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "tdxlab",
    version,
    about = "Emulated Intel TDX on stock Linux KVM: a confidential unikernel guest and its host",
    after_help = "Exit codes: 0 success; 1 the guest (or sim) reported a failure; 2 bad usage; 3 host error (no usable /dev/kvm or userfaultfd, bad image, I/O); 4 timeout; 130/143 interrupted; 141 stdout closed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Errors only: no progress lines, headers, notes or warnings on stderr (the result
    /// itself still prints).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

impl Command {
    /// `--trace`: the step tree the subcommand asked for, if any (the walkthrough's: every
    /// step, no timestamps, so its text is the same on every run).
    fn trace(&self) -> Result<Option<crate::trace::Options>, String> {
        match self {
            Command::Run(a) => a.trace.options(),
            Command::Stress(a) => a.trace.options(),
            Command::Sim(a) => a.trace.options(),
            // The walkthrough's trace is the command's output: stdout.
            Command::Walkthrough => Ok(Some(crate::trace::Options {
                timestamps: false,
                boot: true,
                out: Box::new(std::io::stdout()),
                ..Default::default()
            })),
            _ => Ok(None),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that this host can run emulated TDs (KVM API, VM types, MAXPHYADDR, capabilities).
    Caps(JsonArg),
    /// Run simulated vCPUs converting memory against the in-process TDX module and MMU.
    Sim(sim::SimArgs),
    /// Boot the emulated TD on KVM and run its workload.
    Run(run::RunArgs),
    /// Conversion stress: every vCPU converts memory private <-> shared under a scenario while
    /// the host checks that nothing leaks or is lost (the main job).
    Stress(stress::StressArgs),
    /// Benchmarks of the emulated TD.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Validate a TDVF firmware image with QEMU's rules and list its sections.
    Inspect {
        /// The image file.
        image: std::path::PathBuf,
        #[command(flatten)]
        out: JsonArg,
    },
    /// One 4 KiB page through its life on the simulated TD (accept, to shared, first touch,
    /// to private), every step traced: the run docs/walkthrough.md reads line by line.
    Walkthrough,
    /// Print the zap policies' decision table: roots zapped and flush kept, per caller and VM.
    ZapTable {
        /// Draw the TD half as SVG to this file (`-`: stdout) instead.
        #[arg(long)]
        svg: Option<std::path::PathBuf>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Print the S-EPT entry state machine as measured on the TDX module model (every
    /// operation tried on every state), or draw it as SVG.
    SeptStates {
        /// Write the picture as SVG to this file (`-`: stdout) instead.
        #[arg(long)]
        svg: Option<std::path::PathBuf>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Write the built-in guest's TDVF image to a file (to boot it elsewhere, or inspect it).
    Image {
        /// Where to write it.
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// The round trip of a null TDCALL (TDG.VP.INFO) through the doorbell, next to a bare KVM
    /// port-I/O exit measured in the same run: the floor every conversion figure is judged by.
    Doorbell {
        /// Samples of each round trip (min, median and p90 are printed).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=crate::guest_layout::MAX_BENCH_SAMPLES as i64))]
        samples: u32,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Conversion costs in one run: the doorbell floor, 4K and 2M round trips, and 1 GiB
    /// accepted with 2 MiB pages next to memset over the same memory (boots a 1.5 GiB TD).
    Convert {
        /// 4K round trips to time (2M ones: an eighth, at least 4).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
        samples: u32,
        /// Instead: the 2 MiB conversions under upstream behaviour and under each
        /// beyond-upstream option (batched removal, prefault, 2 MiB private pages), one small
        /// TD each, side by side with upstream's figures over each mode's.
        #[arg(long)]
        compare: bool,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Conversion throughput at 1, 2 and 4 vCPUs under per-leaf and batched removal, as
    /// ratios to 1 vCPU measured in one run: the simulator, and with --stress the emulated
    /// TD on KVM (the random scenario).
    Scale {
        /// Seconds each sample runs.
        #[arg(long, allow_negative_numbers = true, default_value_t = 2.0, value_parser = parse_seconds)]
        seconds: f64,
        /// Samples per point, in rounds that alternate the vCPU counts; the median and the
        /// range are printed.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        repeat: u32,
        /// Also boot the emulated TD for every point (needs a usable /dev/kvm).
        #[arg(long)]
        stress: bool,
        #[command(flatten)]
        out: JsonArg,
    },
}

/// `--json`, for the commands whose result has a machine-readable form.
#[derive(clap::Args, Debug)]
struct JsonArg {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Parse `std::env::args` and run.
pub fn main() -> ExitCode {
    crate::td::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    crate::output::set_quiet(cli.quiet);
    match cli.command.trace() {
        Ok(tree) => crate::trace::init(cli.verbose, cli.quiet, tree),
        Err(e) => {
            eprintln!("tdxlab: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let result = match cli.command {
        Command::Caps(o) => crate::caps::run(o.json),
        Command::Walkthrough => crate::sim::walkthrough::run()
            .map(|()| EXIT_OK)
            .map_err(Into::into),
        Command::ZapTable { svg, out } => crate::zap_table::run(out.json, svg.as_deref()),
        Command::SeptStates { svg, out } => sept_states::main(out.json, svg.as_deref()),
        Command::Inspect { image, out } => crate::image::inspect(&image, out.json),
        Command::Image { output } => write_image(&output),
        Command::Bench { which } => match which {
            BenchCommand::Doorbell { samples, out } => bench::doorbell(out.json, samples),
            BenchCommand::Convert {
                samples,
                compare,
                out,
            } => bench::convert(out.json, samples, compare),
            BenchCommand::Scale {
                seconds,
                repeat,
                stress,
                out,
            } => scale::scale(out.json, seconds, repeat, stress),
        },
        Command::Stress(args) => stress(args),
        Command::Run(args) => run::main(args),
        Command::Sim(args) => sim::main(args),
    };
    finish(result)
}

/// `tdxlab image -o FILE` (`-`: stdout, unless that is a terminal).
fn write_image(path: &std::path::Path) -> anyhow::Result<u8> {
    use anyhow::Context;
    use std::io::{IsTerminal, Write};
    if path.as_os_str() == "-" {
        if std::io::stdout().is_terminal() {
            return usage("-o -: not writing a binary image to a terminal (redirect stdout)");
        }
        let mut out = std::io::stdout().lock();
        out.write_all(crate::GUEST_IMAGE)
            .and_then(|()| out.flush())
            .map_err(crate::output::OutputError)?;
        return Ok(EXIT_OK);
    }
    crate::output::create_output("-o", path)?
        .write_all(crate::GUEST_IMAGE)
        .with_context(|| format!("cannot write the image to {}", path.display()))?;
    crate::note!(
        "tdxlab: wrote the built-in guest image ({} KiB, doorbell ABI {}) to {}",
        crate::GUEST_IMAGE.len() >> 10,
        shared_abi::doorbell::DOORBELL_ABI_VERSION,
        path.display()
    );
    Ok(EXIT_OK)
}

/// `tdxlab stress`: the report path is checked before anything boots.
fn stress(mut args: stress::StressArgs) -> anyhow::Result<u8> {
    args.plant_leak = plant_leak_requested();
    if let Err(e) = check_inject(&args.inject) {
        return usage(format_args!("{e} (try --help)"));
    }
    if args.json {
        args.report = Some("-".into());
    }
    match open_report(args.report.as_deref()) {
        Ok(report) => stress::main(&args, report),
        Err(code) => Ok(code),
    }
}

/// A command's result as the process's exit code; an error is one line on stderr.
fn finish(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader of stdout went away: end quietly, as coreutils do.
        Err(e)
            if e.downcast_ref::<crate::output::OutputError>()
                .is_some_and(|o| o.is_closed_pipe()) =>
        {
            ExitCode::from(EXIT_PIPE)
        }
        // An output path that cannot be created is bad usage, as `--report`'s is.
        Err(e) if e.downcast_ref::<crate::output::OutputPathError>().is_some() => {
            // Its message already names the cause: no chain.
            eprintln!("tdxlab: {}", one_line(&e.to_string()));
            ExitCode::from(EXIT_USAGE)
        }
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
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::from(EXIT_OK)
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            eprintln!(
                "tdxlab: {} (try --help)",
                clap_one_line(&e.render().to_string())
            );
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// clap's whole error on one line: the error, the possible values, the "similar argument"
/// tips — everything but the usage line and the pointer to --help (which the caller adds).
fn clap_one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.trim_start_matches("error: "))
        .fold(String::new(), |mut s, l| {
            // A line that ends in ':' introduces what follows (clap's "the following
            // required arguments were not provided:" and the arguments).
            if !s.is_empty() {
                s += if s.ends_with(':') { " " } else { "; " };
            }
            s += l;
            s
        })
}

/// A usage error found after parsing: one line, exit 2.
fn usage(message: impl std::fmt::Display) -> anyhow::Result<u8> {
    eprintln!("tdxlab: {message}");
    Ok(EXIT_USAGE)
}

/// Test-only switch (environment, never a flag, so that `--help` and normal use never see
/// it): `TDXLAB_TEST_PLANT_LEAK=1` makes the host leak a private byte into shared memory
/// before each SYNC_PRIVATE host check, and the run must fail.
pub const TEST_PLANT_LEAK_ENV: &str = "TDXLAB_TEST_PLANT_LEAK";

fn plant_leak_requested() -> bool {
    std::env::var_os(TEST_PLANT_LEAK_ENV).is_some_and(|v| v == "1")
}

/// `--report PATH` opened now; a path that cannot be written is a usage error (exit 2).
fn open_report(path: Option<&std::path::Path>) -> Result<Option<crate::output::Report>, u8> {
    path.map(crate::output::Report::open)
        .transpose()
        .map_err(|e| {
            eprintln!("tdxlab: {e}");
            EXIT_USAGE
        })
}

/// Write `value` as `command`'s report once the run's summary has been shown, so that a
/// report that cannot be written (`--report /dev/full`) never hides the verdict: it is one
/// line after the summary, and the exit code is the verdict's if that failed, else 3. A
/// closed stdout under `--report -` is still the quiet end (141).
fn write_report<T: serde::Serialize>(
    report: Option<crate::output::Report>,
    command: &'static str,
    value: &T,
    verdict: u8,
) -> anyhow::Result<u8> {
    let Some(report) = report else {
        return Ok(verdict);
    };
    match report.write(command, value) {
        Ok(()) => Ok(verdict),
        Err(e) if e.downcast_ref::<crate::output::OutputError>().is_some() => Err(e),
        Err(e) => {
            eprintln!("tdxlab: {}", one_line(&format!("{e:#}")));
            Ok(if verdict != EXIT_OK {
                verdict
            } else {
                EXIT_HOST
            })
        }
    }
}

/// Collapse a multi-line message into one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
