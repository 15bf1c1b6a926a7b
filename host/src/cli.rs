//! The command line: parse, dispatch, and turn every error into one line and an exit code.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use crate::exit::{EXIT_HOST, EXIT_OK, EXIT_PIPE, EXIT_USAGE};

#[derive(Parser, Debug)]
#[command(
    name = "tdxlab",
    version,
    about = "Emulated Intel TDX on stock Linux KVM: a confidential unikernel guest and its host",
    after_help = "Exit codes: 0 success; 1 the guest (or sim) reported a failure; 2 bad usage; 3 host error (no usable /dev/kvm or userfaultfd, bad image, I/O); 4 timeout."
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
    /// Run simulated vCPUs converting memory against the in-process TDX module and MMU.
    Sim {
        /// Simulated vCPUs.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        vcpus: u32,
        /// Random operations per vCPU (default 2000, or no limit with --seconds).
        #[arg(long)]
        ops: Option<u64>,
        /// Keep going this long (the soak mode): each vCPU stops here or at --ops.
        #[arg(long, value_parser = parse_seconds)]
        seconds: Option<f64>,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Zap semantics.
        #[arg(long, value_enum, default_value_t = crate::kvm::ZapPolicy::Filter)]
        zap_policy: crate::kvm::ZapPolicy,
        /// Fault injection, comma-separated: retry=P, busy=P, private-page-size=4k|2m (the
        /// simulated host migrates shared pages as part of its operations).
        #[arg(long)]
        inject: Vec<String>,
        /// Pages of RAM each vCPU owns.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=262_144))]
        region_pages: u64,
        /// Largest private mapping: 4k (KVM today) or 2m.
        #[arg(long, default_value = "4k", value_parser = parse_page_size)]
        private_page_size: shared_abi::PageLevel,
        /// Probability that the host cuts a MapGPA short with RETRY.
        #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
        inject_retry: f64,
        /// The simulated TD's GPA width (shared bit GPAW - 1): 48, 52, or 36..=47 as an
        /// emulated TD gets on a host with that MAXPHYADDR.
        #[arg(long, default_value_t = 48, value_parser = parse_gpaw)]
        gpaw: u8,
        /// Print the JSON report instead of the summary.
        #[arg(long)]
        json: bool,
        /// Print every mirrored kernel/module step (very verbose; use few ops).
        #[arg(long)]
        trace: bool,
    },
    /// Boot the emulated TD on KVM and run its workload.
    Run {
        /// TDVF image to boot (default: the built-in tdxlab guest).
        #[arg(long)]
        image: Option<std::path::PathBuf>,
        /// vCPUs.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=crate::pack::MAX_VCPUS as i64))]
        vcpus: u32,
        /// Guest RAM, e.g. 256M or 1G: a multiple of 2 MiB from 16 MiB to 2 GiB.
        #[arg(long, default_value = "256M", value_parser = parse_td_mem)]
        mem: u64,
        /// Zap semantics of the MMU model.
        #[arg(long, value_enum, default_value_t = crate::kvm::ZapPolicy::Filter)]
        zap_policy: crate::kvm::ZapPolicy,
        /// Refuse implicit conversions: an alias/attribute mismatch stops the TD.
        #[arg(long)]
        strict: bool,
        /// Print every kernel/module step as a tree.
        #[arg(long)]
        trace: bool,
        /// Stop the TD after this many seconds.
        #[arg(long, default_value_t = 60, value_parser = parse_timeout)]
        timeout: u64,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// Make the built-in guest misbehave on purpose (to see the host's diagnostics):
        /// touch-unaccepted, alias-mismatch, hang, fault, raw-io or triple-fault.
        #[arg(long, value_parser = ["touch-unaccepted", "alias-mismatch", "hang", "fault", "raw-io", "triple-fault"])]
        misbehave: Option<String>,
        /// Accept all RAM at boot (instead of lazily) and report how long it took.
        #[arg(long)]
        accept_all: bool,
        /// Probability that the host answers a MapGPA chunk with RETRY after part of it
        /// (fault injection: the guest's RETRY loop must resume from R11).
        #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
        inject_retry: f64,
        /// Force the TD's GPA width (default: 52 or 48 as the host's MAXPHYADDR allows, else
        /// the host's MAXPHYADDR, non-architectural); at most the host's MAXPHYADDR.
        #[arg(long, value_parser = parse_gpaw)]
        gpaw: Option<u8>,
    },
    /// Conversion stress: every vCPU converts memory private <-> shared under a scenario while
    /// the host checks that nothing leaks or is lost (the main job).
    Stress {
        /// explicit, punch-hole, implicit, boundary or random.
        #[arg(long, default_value = "random", value_parser = parse_scenario)]
        scenario: shared_abi::stress::Scenario,
        /// vCPUs.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
        vcpus: u32,
        /// Guest RAM, e.g. 256M or 1G: a multiple of 2 MiB from 16 MiB to 2 GiB.
        #[arg(long, default_value = "256M", value_parser = parse_td_mem)]
        mem: u64,
        /// How long the scenario repeats (at least one pass).
        #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
        seconds: f64,
        /// Seed of every vCPU's operation sequence and of the host's injection.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop each vCPU after this many operations (0: run for --seconds).
        #[arg(long, default_value_t = 0)]
        ops: u32,
        /// Zap semantics of the MMU model.
        #[arg(long, value_enum, default_value_t = crate::kvm::ZapPolicy::Filter)]
        zap_policy: crate::kvm::ZapPolicy,
        /// Refuse implicit conversions (the implicit scenario must then be stopped).
        #[arg(long)]
        strict: bool,
        /// Fault injection, comma-separated and combinable: retry=P, busy=P,
        /// private-page-size=4k|2m, host-invalidate-hz=N.
        #[arg(long)]
        inject: Vec<String>,
        /// Skip vCPU 0's doorbell-floor and round-trip measurements.
        #[arg(long)]
        no_measure: bool,
        /// Force the TD's GPA width (default: 52 or 48 as the host's MAXPHYADDR allows, else
        /// the host's MAXPHYADDR, non-architectural); at most the host's MAXPHYADDR.
        #[arg(long, value_parser = parse_gpaw)]
        gpaw: Option<u8>,
        /// Stop the TD after this many seconds (default: 2 × --seconds + 120).
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<u64>,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// Print every kernel/module step as a tree (very verbose).
        #[arg(long)]
        trace: bool,
    },
    /// Benchmarks of the emulated TD.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Validate a TDVF firmware image with QEMU's rules and list its sections.
    Inspect {
        /// The image file.
        image: std::path::PathBuf,
        /// Print the description as JSON.
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

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// The round trip of a null TDCALL (TDG.VP.INFO) through the doorbell, next to a bare KVM
    /// port-I/O exit measured in the same run: the floor every conversion figure is judged by.
    Doorbell {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Conversion costs in one run: the doorbell floor, 4K and 2M round trips, and 1 GiB
    /// accepted with 2 MiB pages next to memset over the same memory (boots a 1.5 GiB TD).
    Convert {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parse `std::env::args` and run.
pub fn main() -> ExitCode {
    crate::td::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Caps { json } => crate::caps::run(json),
        Command::ZapTable { json } => crate::zap_table::run(json),
        Command::Inspect { image, json } => crate::image::inspect(&image, json),
        Command::Bench {
            which: BenchCommand::Doorbell { json },
        } => crate::bench::doorbell(json),
        Command::Bench {
            which: BenchCommand::Convert { json },
        } => crate::bench::convert(json),
        Command::Stress {
            scenario,
            vcpus,
            mem,
            seconds,
            seed,
            ops,
            zap_policy,
            strict,
            inject,
            no_measure,
            timeout,
            report,
            trace,
            gpaw,
        } => {
            if trace {
                init_trace();
            }
            match parse_inject(&inject) {
                Err(e) => {
                    eprintln!("tdxlab: {e} (try --help)");
                    return ExitCode::from(EXIT_USAGE);
                }
                Ok(inject) => {
                    let args = crate::stress::StressArgs {
                        scenario,
                        vcpus,
                        mem,
                        seconds,
                        seed,
                        ops,
                        policy: zap_policy,
                        strict,
                        inject,
                        no_measure,
                        timeout: timeout.map(std::time::Duration::from_secs),
                        plant_leak: plant_leak_requested(),
                        gpaw,
                    };
                    match open_report(report.as_deref()) {
                        Ok(report) => crate::stress::main(&args, report),
                        Err(code) => return code,
                    }
                }
            }
        }
        Command::Run {
            image,
            vcpus,
            mem,
            zap_policy,
            strict,
            trace,
            timeout,
            report,
            misbehave,
            accept_all,
            inject_retry,
            gpaw,
        } => {
            if trace {
                init_trace();
            }
            let need = shared_abi::workload::min_mem(vcpus);
            if image.is_none() && mem < need {
                eprintln!(
                    "tdxlab: --mem {} MiB is too small for {vcpus} vCPUs of the default workload (needs {} MiB)",
                    mem >> 20,
                    need.div_ceil(2 << 20) * 2
                );
                return ExitCode::from(EXIT_USAGE);
            }
            let report = match open_report(report.as_deref()) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let image = match image {
                Some(p) => crate::image::read_image(&p),
                None => Ok(crate::GUEST_IMAGE.to_vec()),
            };
            image.and_then(|image| {
                let cfg = crate::td::RunConfig {
                    image,
                    vcpus,
                    mem_bytes: mem,
                    policy: zap_policy,
                    strict,
                    timeout: std::time::Duration::from_secs(timeout),
                    flags: match misbehave.as_deref() {
                        Some("touch-unaccepted") => {
                            shared_abi::layout::hob::config::TOUCH_UNACCEPTED
                        }
                        Some("alias-mismatch") => shared_abi::layout::hob::config::ALIAS_MISMATCH,
                        Some("hang") => shared_abi::layout::hob::config::HANG,
                        Some("fault") => shared_abi::layout::hob::config::FAULT,
                        Some("raw-io") => shared_abi::layout::hob::config::RAW_IO,
                        Some("triple-fault") => shared_abi::layout::hob::config::TRIPLE_FAULT,
                        _ => 0,
                    } | if accept_all {
                        shared_abi::layout::hob::config::ACCEPT_ALL
                    } else {
                        0
                    },
                    workload: crate::pack::WORKLOAD_DEFAULT,
                    plant_leak: plant_leak_requested(),
                    inject: crate::td::InjectConfig {
                        retry: inject_retry,
                        ..Default::default()
                    },
                    stress: None,
                    // `--report -` owns stdout: the console is not echoed there.
                    echo: !report
                        .as_ref()
                        .is_some_and(crate::output::Report::is_stdout),
                    gpaw,
                };
                run_td(&cfg, report)
            })
        }
        Command::Sim {
            vcpus,
            ops,
            seconds,
            seed,
            zap_policy,
            inject,
            region_pages,
            private_page_size,
            inject_retry,
            gpaw,
            json,
            trace,
        } => {
            if trace {
                init_trace();
            }
            let pages = vcpus as u64 * region_pages;
            if pages > crate::sim::MAX_PAGES {
                eprintln!(
                    "tdxlab: --vcpus {vcpus} x --region-pages {region_pages} is {pages} pages ({} MiB); the simulator holds at most {} ({} MiB)",
                    pages >> 8,
                    crate::sim::MAX_PAGES,
                    crate::sim::MAX_PAGES >> 8
                );
                return ExitCode::from(EXIT_USAGE);
            }
            let inject = match parse_inject(&inject) {
                Ok(i) if i.host_invalidate_hz > 0 => {
                    eprintln!("tdxlab: --inject host-invalidate-hz is for KVM runs; the simulated host migrates shared pages as part of its operations (try --help)");
                    return ExitCode::from(EXIT_USAGE);
                }
                Ok(i) => i,
                Err(e) => {
                    eprintln!("tdxlab: {e} (try --help)");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let cfg = crate::sim::SimConfig {
                vcpus,
                ops: ops.unwrap_or(if seconds.is_some() { u64::MAX } else { 2000 }),
                seconds,
                seed,
                policy: zap_policy,
                region_pages,
                private_max_level: private_page_size.max(inject.private_page_size),
                retry_p: inject_retry.max(inject.retry),
                busy_p: inject.busy,
                gpaw: shared_abi::Gpaw::emulated(gpaw).expect("checked by parse_gpaw"),
                ..Default::default()
            };
            crate::sim::cli::run(&cfg, json)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader of stdout went away: end quietly, as coreutils do.
        Err(e)
            if e.downcast_ref::<crate::output::OutputError>()
                .is_some_and(|o| o.is_closed_pipe()) =>
        {
            ExitCode::from(EXIT_PIPE)
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

pub use crate::trace::init as init_trace;

/// Test-only switch (environment, never a flag, so that `--help` and normal use never see
/// it): `TDXLAB_TEST_PLANT_LEAK=1` makes the host leak a private byte into shared memory
/// before each SYNC_PRIVATE host check, and the run must fail.
pub const TEST_PLANT_LEAK_ENV: &str = "TDXLAB_TEST_PLANT_LEAK";

fn plant_leak_requested() -> bool {
    std::env::var_os(TEST_PLANT_LEAK_ENV).is_some_and(|v| v == "1")
}

/// `--report PATH` opened now; a path that cannot be written is a usage error (exit 2).
fn open_report(path: Option<&std::path::Path>) -> Result<Option<crate::output::Report>, ExitCode> {
    match path.map(crate::output::Report::open).transpose() {
        Ok(r) => Ok(r),
        Err(e) => {
            eprintln!("tdxlab: {e}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

fn run_td(cfg: &crate::td::RunConfig, report: Option<crate::output::Report>) -> anyhow::Result<u8> {
    let r = crate::td::run(cfg)?;
    if let Some(report) = report {
        report.write(&r)?;
    }
    eprintln!(
        "tdxlab: {} ({}): {} vCPUs, {} MiB, GPAW {}, boot {:.1} ms, {} TDCALLs, {:.2} s",
        r.exit.kind,
        r.exit.message,
        r.vcpus,
        r.mem_bytes >> 20,
        r.gpaw,
        r.boot_ms,
        r.tdcalls.values().sum::<u64>(),
        r.elapsed_s
    );
    if r.stdout_closed {
        return Ok(EXIT_PIPE);
    }
    let passed = r.exit.kind == crate::exit::ExitKind::Guest && r.exit.code == 0;
    Ok(r.exit.kind.exit_code(r.exit.code, passed))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let m = match t[i..]
                .to_ascii_uppercase()
                .trim_end_matches("IB")
                .trim_end_matches('B')
            {
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "" => 1,
                _ => return Err(format!("'{s}' is not a size (use e.g. 256M or 1G)")),
            };
            (&t[..i], m)
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("'{s}' is not a size (use e.g. 256M or 1G)"))
}

/// A timeout: whole seconds, at least 1 (0 would stop the TD before it boots).
fn parse_timeout(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| format!("'{s}' is not a number of seconds of at least 1"))
}

/// A TD's RAM: a size that is a multiple of 2 MiB within what the host lays out.
fn parse_td_mem(s: &str) -> Result<u64, String> {
    use crate::td::{MAX_MEM, MIN_MEM};
    let v = parse_size(s)?;
    if v % (2 << 20) != 0 || !(MIN_MEM..=MAX_MEM).contains(&v) {
        return Err(format!(
            "'{s}' is not a multiple of 2 MiB from {} MiB to {} MiB",
            MIN_MEM >> 20,
            MAX_MEM >> 20
        ));
    }
    Ok(v)
}

fn parse_gpaw(s: &str) -> Result<u8, String> {
    s.parse::<u8>()
        .ok()
        .and_then(shared_abi::Gpaw::emulated)
        .map(|g| g.bits())
        .ok_or_else(|| {
            format!(
                "'{s}' is not a GPA width ({}..=52)",
                shared_abi::Gpaw::MIN_EMULATED_BITS
            )
        })
}

fn parse_page_size(s: &str) -> Result<shared_abi::PageLevel, String> {
    match s.to_ascii_lowercase().as_str() {
        "4k" => Ok(shared_abi::PageLevel::Size4K),
        "2m" => Ok(shared_abi::PageLevel::Size2M),
        _ => Err(format!("'{s}' is not a private page size (4k or 2m)")),
    }
}

fn parse_scenario(s: &str) -> Result<shared_abi::stress::Scenario, String> {
    shared_abi::stress::Scenario::parse(s).ok_or_else(|| {
        format!("'{s}' is not a scenario (explicit, punch-hole, implicit, boundary or random)")
    })
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a duration in seconds (0 to 86400)")),
    }
}

/// `--inject retry=P,busy=P,private-page-size=4k|2m,host-invalidate-hz=N` (repeatable).
pub fn parse_inject(items: &[String]) -> Result<crate::td::InjectConfig, String> {
    let mut c = crate::td::InjectConfig::default();
    for item in items.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("--inject '{item}' is not NAME=VALUE"));
        };
        match k {
            "retry" => {
                c.retry = parse_probability(v).map_err(|e| format!("--inject retry: {e}"))?
            }
            "busy" => c.busy = parse_probability(v).map_err(|e| format!("--inject busy: {e}"))?,
            "private-page-size" => {
                c.private_page_size =
                    parse_page_size(v).map_err(|e| format!("--inject private-page-size: {e}"))?
            }
            "host-invalidate-hz" => {
                c.host_invalidate_hz =
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| *n <= 10_000)
                        .ok_or_else(|| {
                            format!(
                                "--inject host-invalidate-hz: '{v}' is not a rate from 0 to 10000"
                            )
                        })?
            }
            _ => {
                return Err(format!(
                "--inject '{k}' is unknown (retry, busy, private-page-size, host-invalidate-hz)"
            ))
            }
        }
    }
    Ok(c)
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a probability between 0 and 1")),
    }
}

/// Collapse a multi-line message into one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
