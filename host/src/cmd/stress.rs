//! `tdxlab stress`: boot the emulated TD with the conversion stress workload, show live
//! progress, and judge the run: the guest's own checks, the host checks, and the end-of-run
//! audit (nothing leaked, nothing lost).

use crate::exit::{ExitKind, EXIT_USAGE};
use crate::td::{run_with_progress, InjectConfig, Measured, Progress, RunConfig, RunReport};
use serde::Serialize;
use shared_abi::stress::{field, Scenario, MEASURE_LINE, PHASE_LINE, RESULT_LINE};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// What `tdxlab stress` runs: its command-line flags.
#[derive(clap::Args, Clone, Debug)]
pub struct StressArgs {
    /// explicit, punch-hole, implicit, boundary, random or alternate.
    #[arg(long, default_value = "random", value_parser = super::parse_scenario)]
    pub scenario: Scenario,
    /// vCPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub vcpus: u32,
    /// Guest RAM, e.g. 256M, 1G or 256 (MiB, as QEMU's -m): a multiple of 2 MiB from 16 MiB
    /// to 16 GiB; from 2.75 GiB on laid out as QEMU's q35 does (2 GiB below 4 GiB, the rest
    /// from 4 GiB).
    #[arg(long, default_value = "256M", value_parser = super::parse_td_mem)]
    pub mem: u64,
    /// How long the scenario repeats (at least one pass).
    #[arg(long, allow_negative_numbers = true, default_value_t = 10.0, value_parser = super::parse_seconds)]
    pub seconds: f64,
    /// Seed of every vCPU's operation sequence and of the host's injection.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop each vCPU after this many operations (0: run for --seconds).
    #[arg(long, default_value_t = 0)]
    pub ops: u32,
    /// Zap semantics of the MMU model: filter, exclude or v19.
    #[arg(long = "zap-policy", default_value = "filter", value_parser = super::parse_zap_policy)]
    pub policy: crate::kvm::ZapPolicy,
    /// Refuse implicit conversions (the implicit scenario must then be stopped).
    #[arg(long)]
    pub strict: bool,
    /// Fault injection, comma-separated and combinable: retry=P, busy=P,
    /// private-page-size=4k|2m, host-invalidate-hz=N.
    #[arg(long, value_delimiter = ',', value_parser = super::parse_inject_item)]
    pub inject: Vec<super::InjectItem>,
    /// Skip vCPU 0's doorbell-floor and round-trip measurements.
    #[arg(long)]
    pub no_measure: bool,
    /// Force the TD's GPA width (default: 52 or 48 as the host's MAXPHYADDR allows, else
    /// the host's MAXPHYADDR, non-architectural); at most the host's MAXPHYADDR.
    #[arg(long, value_parser = super::parse_gpaw)]
    pub gpaw: Option<u8>,
    #[command(flatten)]
    pub(crate) beyond: super::beyond::BeyondArgs,
    /// Stop the TD after this many seconds (default: 2 × --seconds + 120).
    #[arg(long, allow_negative_numbers = true, value_parser = super::parse_timeout)]
    pub timeout: Option<u64>,
    /// Write the JSON report here (`-`: stdout).
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Print the JSON report on stdout (as `--report -`; docs/json.md).
    #[arg(long, conflicts_with = "report")]
    pub json: bool,
    #[command(flatten)]
    pub(crate) trace: super::trace_args::TraceArgs,
    /// Also write a map of the run to FILE: one self-contained HTML page of page states
    /// over time per vCPU region, the conversions, the counters and the settings.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    /// Test-only: the host leaks a private byte before each SYNC_PRIVATE (set from the
    /// environment, never a flag).
    #[arg(skip)]
    pub plant_leak: bool,
}

impl StressArgs {
    /// The injection the `--inject` items describe.
    pub fn inject(&self) -> InjectConfig {
        super::inject_config(&self.inject)
    }

    fn timeout(&self) -> Duration {
        self.timeout
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs_f64(self.seconds * 2.0 + 120.0))
    }
}

/// One vCPU's result line.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct VcpuResult {
    /// vCPU.
    pub vcpu: u64,
    /// Operations done.
    pub ops: u64,
    /// Conversions the guest asked for.
    pub conversions: u64,
    /// Pages in them.
    pub pages: u64,
    /// Host checks that passed.
    pub checks: u64,
    /// Hash of the operation sequence: equal seeds and op counts give equal hashes (a hex
    /// string in JSON).
    #[serde(serialize_with = "crate::output::hex_u64")]
    pub hash: u64,
}

/// Where the time of a stress run went, from the guest's phase lines as the host received
/// them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phases {
    /// vCPUs started → the guest's first console line (the report's `boot_ms`: not twice
    /// in JSON).
    #[serde(skip)]
    pub boot_s: f64,
    /// vCPU 0's doorbell-floor and round-trip measurements (`None` with --no-measure).
    pub measure_s: Option<f64>,
    /// The first vCPU's scenario start → the last vCPU's scenario end: the window the
    /// rates are over (to the stop when `scenario_stopped`).
    pub scenario_s: f64,
    /// The run stopped (a signal, a failure, the timeout) before every vCPU left its
    /// scenario: the window ends where the vCPUs stopped.
    pub scenario_stopped: bool,
    /// The longest final check of every page (random scenario), after the scenario window.
    pub final_sweep_s: Option<f64>,
    /// The host's end-of-run audit.
    pub audit_s: f64,
}

impl Phases {
    /// From the phase and result lines and when each arrived.
    fn from_console(run: &RunReport) -> Phases {
        let at = |i: usize| run.console_at_s.get(i).copied().unwrap_or(0.0);
        let mut start = f64::MAX;
        let (mut end, mut sweep_max) = (0.0f64, None::<f64>);
        let mut vcpu0_start = None;
        let mut sweeps = std::collections::HashMap::new();
        for (i, l) in run.console.iter().enumerate() {
            let vcpu = field(l, "vcpu");
            if l.starts_with(PHASE_LINE) && l.ends_with("phase=scenario") {
                start = start.min(at(i));
                if vcpu == Some(0) {
                    vcpu0_start = Some(at(i));
                }
            } else if l.starts_with(PHASE_LINE) && l.ends_with("phase=sweep") {
                sweeps.insert(vcpu, at(i));
                end = end.max(at(i));
            } else if l.starts_with(RESULT_LINE) {
                match sweeps.get(&vcpu) {
                    Some(s) => sweep_max = Some(sweep_max.unwrap_or(0.0).max(at(i) - s)),
                    None => end = end.max(at(i)),
                }
            }
        }
        let results = run.console.iter().filter(|l| l.starts_with(RESULT_LINE));
        let stopped = start < f64::MAX && results.count() < run.vcpus as usize;
        if stopped {
            end = end.max(run.vcpus_ran_s);
        }
        let boot_s = run.boot_ms / 1e3;
        let measured = run.console.iter().any(|l| l.starts_with(MEASURE_LINE));
        Phases {
            boot_s,
            measure_s: measured.then(|| vcpu0_start.unwrap_or(boot_s) - boot_s),
            scenario_s: if start <= end { end - start } else { 0.0 },
            scenario_stopped: stopped,
            final_sweep_s: sweep_max,
            audit_s: run.audit_s,
        }
    }
}

/// The stress report: the run's report plus the verdict's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct StressReport {
    /// Scenario name.
    pub scenario: &'static str,
    /// Seed.
    pub seed: u64,
    /// The scenario's duration asked for.
    pub seconds: f64,
    /// Host-check mismatches (the host saw something the guest did not put there).
    pub mismatches: u64,
    /// Audit findings (details in `audit`).
    pub leaks: u64,
    /// The run's phases, in seconds (the rates are over `phases.scenario_s` only).
    pub phases: Phases,
    /// Conversions the guests asked for (MapGPA, or PTE flips the host converted
    /// implicitly), summed over the vCPUs' result lines.
    pub guest_conversions: u64,
    /// Pages in them.
    pub guest_pages: u64,
    /// Guest conversions per second over the scenario window.
    pub conversions_per_s: f64,
    /// Guest-converted bytes per second over the scenario window.
    pub bytes_converted_per_s: f64,
    /// The null-TDCALL floor (when measured).
    pub doorbell_floor_us: Option<f64>,
    /// The round-trip measurements (when measured).
    pub measured: Option<Measured>,
    /// Per-vCPU results.
    pub vcpu_results: Vec<VcpuResult>,
    /// Everything passed: guest exit 0, every vCPU reported, no mismatch, no leak.
    pub passed: bool,
    /// The run's report.
    #[serde(flatten)]
    pub run: RunReport,
}

/// Run the stress TD and return the report (no printing besides `progress`; no map).
pub fn stress(
    a: &StressArgs,
    progress: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<StressReport> {
    stress_mapped(a, progress, None)
}

/// [`stress`], telling `map` of the run when there is one.
fn stress_mapped(
    a: &StressArgs,
    progress: &(dyn Fn(Progress) + Sync),
    map: Option<std::sync::Arc<crate::map::Recorder>>,
) -> anyhow::Result<StressReport> {
    let cfg = RunConfig {
        image: crate::GUEST_IMAGE.to_vec(),
        vcpus: a.vcpus,
        mem_bytes: a.mem,
        policy: a.policy,
        strict: a.strict,
        timeout: a.timeout(),
        flags: if a.trace.trace {
            shared_abi::layout::hob::config::TRACE
        } else {
            0
        },
        echo: false,
        workload: crate::guest_layout::WORKLOAD_STRESS,
        plant_leak: a.plant_leak,
        inject: a.inject(),
        stress: Some(crate::td::StressParams {
            scenario: a.scenario,
            seed: a.seed,
            seconds: a.seconds,
            ops: a.ops,
            measure: !a.no_measure,
        }),
        gpaw: a.gpaw,
        bench_samples: 0,
        beyond: a.beyond.get(),
        debug_exit: true,
        kernel: None,
        map,
    };
    let run = run_with_progress(&cfg, progress)?;
    let mut vcpu_results: Vec<VcpuResult> = run
        .console
        .iter()
        .filter(|l| l.starts_with(RESULT_LINE))
        .filter_map(|l| {
            Some(VcpuResult {
                vcpu: field(l, "vcpu")?,
                ops: field(l, "ops")?,
                conversions: field(l, "conversions")?,
                pages: field(l, "pages")?,
                checks: field(l, "checks")?,
                hash: field(l, "hash")?,
            })
        })
        .collect();
    // In vCPU order, not in the order the lines arrived.
    vcpu_results.sort_by_key(|v| v.vcpu);
    let measured = Measured::from_console(&run.console, run.tsc_hz);
    let phases = Phases::from_console(&run);
    let secs = phases.scenario_s.max(1e-9);
    let guest_conversions = vcpu_results.iter().map(|v| v.conversions).sum::<u64>();
    let guest_pages = vcpu_results.iter().map(|v| v.pages).sum::<u64>();
    let mismatches = run.host_check_mismatches;
    let leaks = run.audit.len() as u64;
    let passed = run.exit.kind == ExitKind::Guest
        && run.exit.code == 0
        && vcpu_results.len() == a.vcpus as usize
        && mismatches == 0
        && leaks == 0;
    let r = StressReport {
        scenario: a.scenario.name(),
        seed: a.seed,
        seconds: a.seconds,
        mismatches,
        leaks,
        conversions_per_s: guest_conversions as f64 / secs,
        bytes_converted_per_s: (guest_pages * 4096) as f64 / secs,
        phases,
        guest_conversions,
        guest_pages,
        doorbell_floor_us: measured.as_ref().map(|m| m.doorbell_floor_us),
        measured,
        vcpu_results,
        passed,
        run,
    };
    Ok(r)
}

/// Each vCPU's chunk as GFNs `[start, end)`: where the guest works for this scenario, RAM
/// and vCPU count (`Scenario::chunk`, the function the guest asks too).
fn stress_regions(a: &StressArgs) -> Vec<(u64, u64)> {
    let ram = crate::td::RamLayout::q35(a.mem).below_4g;
    (0..a.vcpus)
        .filter_map(|v| a.scenario.chunk(v, a.vcpus, ram, !a.no_measure))
        .map(|(base, len)| (base >> 12, (base + len) >> 12))
        .collect()
}

/// `--html`: the map of the run, with its report's counters and settings, written after
/// the summary; a map that cannot be written is one line, and exit 3 unless the verdict
/// already failed.
fn write_map(
    a: &StressArgs,
    r: &StressReport,
    rec: Option<&crate::map::Recorder>,
    verdict: u8,
) -> u8 {
    let (Some(path), Some(rec)) = (&a.html, rec) else {
        return verdict;
    };
    match render_map(a, r, rec, path) {
        Ok(()) => verdict,
        Err(e) => {
            eprintln!("tdxlab: {e:#}");
            if verdict != crate::exit::EXIT_OK {
                verdict
            } else {
                crate::exit::EXIT_HOST
            }
        }
    }
}

fn render_map(
    a: &StressArgs,
    r: &StressReport,
    rec: &crate::map::Recorder,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let title = format!(
        "tdxlab stress: {} scenario, {} vCPUs, {} s, seed {}",
        a.scenario.name(),
        a.vcpus,
        a.seconds,
        a.seed
    );
    let page = crate::map::render(rec, &title, &serde_json::to_value(r)?);
    std::fs::write(path, page)
        .map_err(|e| anyhow::anyhow!("cannot write the map to {}: {e}", path.display()))?;
    crate::note!("tdxlab: wrote the map of the run to {}", path.display());
    Ok(())
}

/// The CLI: progress on stderr, summary on stdout, report to a file, verdict as exit code.
pub fn main(a: &StressArgs, report: Option<crate::output::Report>) -> anyhow::Result<u8> {
    if let Some(p) = &a.html {
        if let Err(e) = std::fs::write(p, "") {
            eprintln!("tdxlab: --html {}: {e}", p.display());
            return Ok(EXIT_USAGE);
        }
    }
    let need = a.scenario.min_mem(a.vcpus, !a.no_measure);
    if a.mem < need {
        eprintln!(
            "tdxlab: --mem {} MiB is too small for {} vCPUs of the {} scenario (needs {} MiB)",
            a.mem >> 20,
            a.vcpus,
            a.scenario.name(),
            need.div_ceil(2 << 20) * 2
        );
        return Ok(EXIT_USAGE);
    }
    let tty = std::io::stderr().is_terminal() && !crate::output::quiet();
    let last_line = std::sync::Mutex::new(Throttle::default());
    let window = std::sync::Mutex::new(Window::default());
    let progress = |p: Progress| {
        if crate::output::quiet() {
            return;
        }
        let what = window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .describe(&p, a.vcpus);
        let line = format!(
            "[{:6.1} s] {what}, {} host checks{}",
            p.elapsed_s,
            p.host_checks,
            if p.mismatches > 0 {
                format!(", {} MISMATCHES", p.mismatches)
            } else {
                String::new()
            }
        );
        let mut last = last_line.lock().unwrap_or_else(|e| e.into_inner());
        // Never panic here (a closed stderr must not stop the run).
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
        } else if last.due(p.elapsed_s, &what) {
            let _ = writeln!(err, "{line}");
        }
    };
    let gpaw = crate::caps::td_gpaw(a.gpaw, crate::caps::host_maxphyaddr())
        .map(|g| format!(", GPAW {}", crate::caps::describe_gpaw(g)))
        .unwrap_or_default();
    crate::note!(
        "tdxlab stress: {} scenario on {} vCPUs, {} MiB, {} s, seed {}{gpaw}{}{}",
        a.scenario.name(),
        a.vcpus,
        a.mem >> 20,
        a.seconds,
        a.seed,
        a.beyond.get().describe(),
        if a.inject().any() || a.inject().private_page_size != shared_abi::PageLevel::Size4K {
            format!(", injecting {}", describe_inject(&a.inject()))
        } else {
            String::new()
        }
    );
    let map = (a.html.as_ref())
        .map(|_| std::sync::Arc::new(crate::map::Recorder::new(stress_regions(a))));
    let r = stress_mapped(a, &progress, map.clone())?;
    if tty {
        eprintln!();
    }
    for l in r.run.guest_failure_lines() {
        eprintln!("{l}");
    }
    let json_on_stdout = report
        .as_ref()
        .is_some_and(crate::output::Report::is_stdout);
    // The verdict first: neither a report that cannot be written nor a closed stdout
    // under `--report -` may lose it.
    if json_on_stdout {
        // `--report -` owns stdout: the summary goes to stderr.
        eprint!("{}", summary(&r));
    } else {
        crate::output::write_str(&summary(&r))?;
    }
    let verdict = r.run.exit.kind.exit_code(r.run.exit.code, r.passed);
    let verdict = write_map(a, &r, map.as_deref(), verdict);
    super::write_report(report, "stress", &r, verdict)
}

/// When a progress line goes to a non-terminal stderr: at most every 2 s, and only when it
/// says something new (a final sweep can take seconds with nothing changing).
#[derive(Default)]
struct Throttle {
    /// When the last line went out (0: the run's start, so the first waits 2 s too).
    at: f64,
    what: String,
}

impl Throttle {
    fn due(&mut self, t: f64, what: &str) -> bool {
        if t - self.at < 2.0 || self.what == what {
            return false;
        }
        (self.at, self.what) = (t, what.to_string());
        true
    }
}

/// The scenario window as the progress lines see it: rates count from the first vCPU's
/// scenario start and stop when every vCPU has left its scenario; the phases around it are
/// named instead.
#[derive(Default)]
struct Window {
    /// (elapsed, host conversions) when the first vCPU started its scenario.
    start: Option<(f64, u64)>,
    /// The rate when the window closed.
    closed: Option<f64>,
}

impl Window {
    fn describe(&mut self, p: &Progress, vcpus: u32) -> String {
        let (started, sweeping, results) = p.stress_marks;
        let ended = if sweeping > 0 { sweeping } else { results };
        if started == 0 {
            return format!(
                "measuring round trips on vCPU 0 ({} host conversions)",
                p.conversions
            );
        }
        let (t0, c0) = *self.start.get_or_insert((p.elapsed_s, p.conversions));
        let rate = (p.conversions - c0) as f64 / (p.elapsed_s - t0).max(1e-9);
        if ended < vcpus {
            return format!(
                "scenario: {} host conversions ({:.0}/s in the scenario window), {} pages",
                p.conversions, rate, p.pages_converted
            );
        }
        let rate = *self.closed.get_or_insert(rate);
        let phase = if results < vcpus {
            format!("final sweep ({results} of {vcpus} vCPUs done)")
        } else {
            "finishing".to_string()
        };
        format!(
            "{phase}: {} host conversions ({rate:.0}/s in the scenario window), {} pages",
            p.conversions, p.pages_converted
        )
    }
}

fn describe_inject(i: &InjectConfig) -> String {
    let mut v = Vec::new();
    if i.retry > 0.0 {
        v.push(format!("retry={}", i.retry));
    }
    if i.busy > 0.0 {
        v.push(format!("busy={}", i.busy));
    }
    if i.private_page_size == shared_abi::PageLevel::Size2M {
        v.push("private-page-size=2m".into());
    }
    if i.host_invalidate_hz > 0 {
        v.push(format!("host-invalidate-hz={}", i.host_invalidate_hz));
    }
    v.join(",")
}

fn mib(b: f64) -> f64 {
    b / (1 << 20) as f64
}

fn summary(r: &StressReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let run = &r.run;
    let _ = writeln!(
        s,
        "tdxlab stress: {} on {} vCPUs, {} MiB, GPAW {}, seed {}{}: {} in {:.1} s",
        r.scenario,
        run.vcpus,
        run.mem_bytes >> 20,
        run.gpaw,
        r.seed,
        run.settings.beyond.describe(),
        match (r.passed, run.exit.kind) {
            (true, _) => "PASSED",
            (false, ExitKind::Interrupted) => "INTERRUPTED",
            _ => "FAILED",
        },
        run.elapsed_s
    );
    if !r.passed {
        let _ = writeln!(
            s,
            "  exit             {}: {}",
            run.exit.kind, run.exit.message
        );
    }
    s += &phase_line(&r.phases, run.elapsed_s);
    s += &guest_line(r);
    let _ = writeln!(
        s,
        "  host conversions {:>10}  (MapGPA chunks incl. RETRYs and measurements; implicit {}; {} pages changed attribute)",
        run.conversions, run.implicit_conversions, run.pages_converted
    );
    let _ = writeln!(
        s,
        "  host checks      {:>10}  mismatches {}",
        run.host_checks, r.mismatches
    );
    let _ = writeln!(s, "  audit (leaks)    {:>10}", r.leaks);
    for l in &run.audit {
        let _ = writeln!(s, "    {l}");
    }
    if !run.injected.is_empty() {
        let inj: Vec<String> = run
            .injected
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "  injected         {}", inj.join(", "));
    }
    if run.accept_2m_fallbacks > 0 {
        let _ = writeln!(
            s,
            "  2M accepts at 4K {:>10}  (KVM mapped those ranges with 4K pages: not an error)",
            run.accept_2m_fallbacks
        );
    }
    let _ = writeln!(s,
        "  TDX activity     {} TDCALLs, {} EPT violations{}, {} leaves zapped (mirror {}, direct {}), {} kicks",
        run.tdcalls.values().sum::<u64>(),
        run.ept_violations,
        prefaults(run),
        run.zaps.mirror + run.zaps.direct,
        run.zaps.mirror,
        run.zaps.direct,
        run.kicks
    );
    if let Some(m) = &r.measured {
        s += &measured_lines(m);
    }
    s += &vcpu_table(r);
    s
}

/// The guests' own totals over the scenario window; a run stopped before some vCPUs'
/// result lines says how many reported (the table has the others as the host served them).
fn guest_line(r: &StressReport) -> String {
    let (reported, all) = (r.vcpu_results.len(), r.run.vcpus as usize);
    if reported == 0 {
        return "  guest conversions  not reported: the run stopped before the vCPUs' result lines (below: as the host served them)\n".to_string();
    }
    let missing = match reported < all {
        true => format!("; {reported} of {all} vCPUs reported before the stop"),
        false => String::new(),
    };
    format!(
        "  guest conversions {:>9}  {:>10.1}/s over the scenario window  ({} pages, {:.2} MiB/s){missing}\n",
        r.guest_conversions,
        r.conversions_per_s,
        r.guest_pages,
        mib(r.bytes_converted_per_s),
    )
}

/// One row per vCPU in vCPU order: the guest's result line, or for a vCPU stopped before
/// its result line (a signal, a failure), the conversions the host had served it.
fn vcpu_table(r: &StressReport) -> String {
    use std::fmt::Write;
    let mut s = String::from("  vCPU        ops  conversions      pages  checks  sequence hash\n");
    for vcpu in 0..r.run.vcpus as u64 {
        if let Some(v) = r.vcpu_results.iter().find(|v| v.vcpu == vcpu) {
            let _ = writeln!(
                s,
                "  {:>4} {:>10} {:>12} {:>10} {:>7}  {:#018x}",
                v.vcpu, v.ops, v.conversions, v.pages, v.checks, v.hash
            );
        } else if let Some(h) = r
            .run
            .vcpu_conversions
            .iter()
            .find(|h| h.vcpu as u64 == vcpu)
        {
            let _ = writeln!(
                s,
                "  {:>4} {:>10} {:>12} {:>10} {:>7}  (no result line: the host served {} conversions, {} pages)",
                vcpu, "-", "-", "-", "-", h.conversions, h.pages
            );
        }
    }
    s
}

/// `--prefault`'s mappings, named beside the EPT violations they are not part of.
fn prefaults(run: &RunReport) -> String {
    match run.prefault_maps {
        0 => String::new(),
        n => format!(
            " (and {n} prefault mappings, {} pages)",
            run.prefaulted_pages
        ),
    }
}

/// Where the time went. The phases are per vCPU, so they overlap (vCPU 0 measures while
/// the others start their scenario; one vCPU sweeps while others are still in theirs): when
/// they add up to more than the run, the summary says so.
fn phase_line(p: &Phases, elapsed_s: f64) -> String {
    let mut v = vec![format!("boot {:.2} s", p.boot_s)];
    if let Some(m) = p.measure_s {
        v.push(format!("measuring {m:.2} s"));
    }
    v.push(match p.scenario_stopped {
        true => format!("scenario {:.2} s (to the stop)", p.scenario_s),
        false => format!("scenario {:.2} s", p.scenario_s),
    });
    if let Some(f) = p.final_sweep_s {
        v.push(format!("final sweep {f:.2} s"));
    }
    v.push(format!("audit {:.2} s", p.audit_s));
    let sum = p.boot_s
        + p.measure_s.unwrap_or(0.0)
        + p.scenario_s
        + p.final_sweep_s.unwrap_or(0.0)
        + p.audit_s;
    let overlap = match sum > elapsed_s + 0.01 {
        true => "\n                   (per vCPU, so they overlap: vCPU 0 measures while the others start their scenario; one vCPU sweeps while another is still in its scenario)",
        false => "",
    };
    format!("  phases           {}{overlap}\n", v.join(", "))
}

/// vCPU 0's round trips, in time and in doorbell floors.
fn measured_lines(m: &Measured) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  doorbell floor   {:>10.1} us (null TDCALL)",
        m.doorbell_floor_us
    );
    let _ = writeln!(
        s,
        "  4K round trip    {:>10.1} us = {:.1} floors  (projected: {:.0} conversions/s, {:.2} MiB/s)",
        m.round_trip_4k_us,
        m.round_trip_4k_floors,
        m.conversions_per_s_4k,
        mib(m.bytes_per_s_4k)
    );
    let _ = writeln!(
        s,
        "  2M round trip    {:>10.1} us = {:.1} floors  (projected: {:.0} conversions/s, {:.2} MiB/s)",
        m.round_trip_2m_us,
        m.round_trip_2m_floors,
        m.conversions_per_s_2m,
        mib(m.bytes_per_s_2m)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(measure: f64, scenario: f64, sweep: f64) -> Phases {
        Phases {
            boot_s: 0.1,
            measure_s: Some(measure),
            scenario_s: scenario,
            scenario_stopped: false,
            final_sweep_s: Some(sweep),
            audit_s: 0.1,
        }
    }

    #[test]
    fn phases_that_add_up_to_more_than_the_run_are_said_to_overlap() {
        // stress --vcpus 16 --seconds 3: PASSED in 13.8 s with 0.08 + 8.80 + 11.14 + 5.83 s.
        let many = phase_line(&phases(8.8, 11.14, 5.83), 13.8);
        assert!(many.contains("per vCPU, so they overlap"), "{many}");
        let one = phase_line(&phases(1.0, 3.0, 0.5), 4.9);
        assert!(!one.contains("overlap"), "{one}");
        assert_eq!(one.lines().count(), 1);
    }

    #[test]
    fn a_progress_line_that_says_nothing_new_is_not_repeated() {
        let mut t = Throttle::default();
        let first = "scenario: 10 host conversions";
        assert!(!t.due(0.3, first), "the first line after 2 s");
        assert!(t.due(2.1, first));
        assert!(
            !t.due(3.0, "scenario: 20 host conversions"),
            "every 2 s at most"
        );
        assert!(t.due(4.2, "scenario: 20 host conversions"));
        let sweep = "final sweep (0 of 2 vCPUs done): 30 host conversions";
        assert!(t.due(6.5, sweep));
        assert!(!t.due(8.6, sweep) && !t.due(11.0, sweep), "nothing new");
        assert!(t.due(11.1, "final sweep (1 of 2 vCPUs done): 30 host conversions"));
    }
}
