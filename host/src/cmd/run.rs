//! `tdxlab run`: boot the emulated TD with the built-in guest (or an image) and report.

use super::parse::{parse_gpaw, parse_probability, parse_td_mem, parse_timeout, parse_zap_policy};
use super::{open_report, plant_leak_requested, usage};
use crate::exit::{ExitKind, EXIT_PIPE};
use crate::kvm::ZapPolicy;
use crate::td::{InjectConfig, RunConfig};
use shared_abi::layout::hob::config;
use std::path::PathBuf;
use std::time::Duration;

/// The flags of `tdxlab run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// TDVF image to boot (default: the built-in tdxlab guest).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Boot this Linux kernel as the TD instead (a bzImage or vmlinux built with
    /// CONFIG_INTEL_TDX_GUEST and CONFIG_PVH; QEMU's flag name): all RAM is initial TD
    /// memory, its TDCALLs are patched so KVM sees them (docs/linux-td.md). Needs a stock KVM.
    #[arg(long, conflicts_with_all = ["image", "misbehave"])]
    kernel: Option<PathBuf>,
    /// The initrd for --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line for --kernel.
    #[arg(long, requires = "kernel", default_value = "console=ttyS0")]
    append: String,
    /// vCPUs (the built-in guest runs on up to 16 and parks the others at boot).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=crate::td::MAX_VCPUS as i64))]
    vcpus: u32,
    /// Guest RAM, e.g. 256M, 1G or 256 (MiB, as QEMU's -m): a multiple of 2 MiB from 16 MiB
    /// to 16 GiB; from 2.75 GiB on laid out as QEMU's q35 does (2 GiB below 4 GiB, the rest
    /// from 4 GiB).
    #[arg(long, default_value = "256M", value_parser = parse_td_mem)]
    mem: u64,
    /// Zap semantics of the MMU model: filter, exclude or v19.
    #[arg(long, default_value = "filter", value_parser = parse_zap_policy)]
    zap_policy: ZapPolicy,
    /// Refuse implicit conversions: an alias/attribute mismatch stops the TD.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    pub(super) trace: super::trace_args::TraceArgs,
    /// Stop the TD after this many seconds.
    #[arg(long, allow_negative_numbers = true, default_value_t = 60, value_parser = parse_timeout)]
    timeout: u64,
    /// Write the JSON report here (`-`: stdout).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the JSON report on stdout (as `--report -`; docs/json.md).
    #[arg(long, conflicts_with = "report")]
    json: bool,
    /// Make the built-in guest misbehave on purpose (to see the host's diagnostics):
    /// touch-unaccepted, alias-mismatch, hang, halt, fault, raw-io or triple-fault.
    #[arg(long, conflicts_with = "image", value_parser = ["touch-unaccepted", "alias-mismatch", "hang", "halt", "fault", "raw-io", "triple-fault"])]
    misbehave: Option<String>,
    /// Leave out the isa-debug-exit device, as QEMU does without `-device isa-debug-exit`:
    /// the guest then finds QEMU's ACPI tables through fw_cfg and powers off (S5) when it
    /// passes (exit kind `power_off`, exit code 0).
    #[arg(long)]
    no_debug_exit: bool,
    /// Accept all RAM at boot (instead of lazily) and report how long it took.
    #[arg(long)]
    accept_all: bool,
    /// Probability that an event is pending after each 2 MiB chunk of a longer MapGPA, so
    /// the host answers RETRY there as KVM does (fault injection: the guest's RETRY loop must
    /// resume from R11). The built-in round trip converts 16 pages: one chunk, never cut.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = parse_probability)]
    inject_retry: f64,
    /// Force the TD's GPA width (default: 52 or 48 as the host's MAXPHYADDR allows, else
    /// the host's MAXPHYADDR, non-architectural); at most the host's MAXPHYADDR.
    #[arg(long, value_parser = parse_gpaw)]
    gpaw: Option<u8>,
    #[command(flatten)]
    beyond: super::beyond::BeyondArgs,
}

impl RunArgs {
    /// The guest configuration flags `--misbehave` and `--accept-all` ask for.
    fn flags(&self) -> u32 {
        let misbehave = match self.misbehave.as_deref() {
            Some("touch-unaccepted") => config::TOUCH_UNACCEPTED,
            Some("alias-mismatch") => config::ALIAS_MISMATCH,
            Some("hang") => config::HANG,
            Some("halt") => config::HALT,
            Some("fault") => config::FAULT,
            Some("raw-io") => config::RAW_IO,
            Some("triple-fault") => config::TRIPLE_FAULT,
            _ => 0,
        };
        let trace = if self.trace.trace { config::TRACE } else { 0 };
        misbehave
            | trace
            | if self.accept_all {
                config::ACCEPT_ALL
            } else {
                0
            }
    }

    /// What to boot; `echo` is false when the report owns stdout.
    fn config(&self, image: Vec<u8>, echo: bool) -> RunConfig {
        RunConfig {
            image,
            vcpus: self.vcpus,
            mem_bytes: self.mem,
            policy: self.zap_policy,
            strict: self.strict,
            timeout: Duration::from_secs(self.timeout),
            flags: self.flags(),
            echo,
            workload: crate::guest_layout::WORKLOAD_DEFAULT,
            plant_leak: plant_leak_requested(),
            inject: InjectConfig {
                retry: self.inject_retry,
                ..Default::default()
            },
            stress: None,
            gpaw: self.gpaw,
            bench_samples: 0,
            beyond: self.beyond.get(),
            debug_exit: !self.no_debug_exit,
            kernel: None,
            map: None,
        }
    }
}

/// Check, boot, run, report; the verdict is the exit code.
pub(super) fn main(args: RunArgs) -> anyhow::Result<u8> {
    let need = shared_abi::workload::min_mem(args.vcpus.min(crate::guest_layout::MAX_VCPUS as u32));
    if args.image.is_none() && args.mem < need {
        return usage(format_args!(
            "--mem {} MiB is too small for {} vCPUs of the default workload (needs {} MiB)",
            args.mem >> 20,
            args.vcpus,
            need.div_ceil(2 << 20) * 2
        ));
    }
    let path = if args.json {
        Some(PathBuf::from("-"))
    } else {
        args.report.clone()
    };
    let report = match open_report(path.as_deref()) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let image = match &args.image {
        Some(p) => crate::image::read_image(p)?,
        None => crate::GUEST_IMAGE.to_vec(),
    };
    // `--report -` owns stdout: the console is not echoed there.
    let echo = !report
        .as_ref()
        .is_some_and(crate::output::Report::is_stdout);
    let mut cfg = args.config(image, echo);
    if let Some(k) = &args.kernel {
        cfg.kernel = Some(std::sync::Arc::new(load_kernel(
            k,
            args.initrd.as_deref(),
            &args.append,
        )?));
    }
    let r = crate::td::run(&cfg)?;
    for l in r.guest_failure_lines() {
        eprintln!("{l}");
    }
    eprintln!(
        "tdxlab: {} ({}): {} vCPUs, {} MiB, GPAW {}{}, boot {:.1} ms, {} TDCALLs, {:.2} s",
        r.exit.kind,
        r.exit.message,
        r.vcpus,
        r.mem_bytes >> 20,
        r.gpaw,
        r.settings.beyond.describe(),
        r.boot_ms,
        r.tdcalls.values().sum::<u64>(),
        r.elapsed_s
    );
    let passed =
        (r.exit.kind == ExitKind::Guest && r.exit.code == 0) || r.exit.kind == ExitKind::PowerOff;
    // The summary above comes first: a report that cannot be written says so after it.
    let verdict = super::write_report(
        report,
        "run",
        &r,
        r.exit.kind.exit_code(r.exit.code, passed),
    )?;
    if r.stdout_closed {
        return Ok(EXIT_PIPE);
    }
    Ok(verdict)
}

/// The kernel, unpacked to its vmlinux, the initrd and the command line for `--kernel`.
fn load_kernel(
    kernel: &std::path::Path,
    initrd: Option<&std::path::Path>,
    append: &str,
) -> anyhow::Result<crate::td::LinuxKernel> {
    use anyhow::Context;
    if let Some(why) = crate::caps::linux_td_unsupported() {
        anyhow::bail!("this host cannot boot Linux as a TD: {why}");
    }
    let file = crate::image::read_image(kernel)?;
    let vmlinux = crate::linux::vmlinux_of(&file)
        .with_context(|| format!("{} is not a kernel tdxlab can boot", kernel.display()))?;
    let initrd = initrd
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read initrd {}", p.display())))
        .transpose()?;
    Ok(crate::td::LinuxKernel {
        vmlinux,
        initrd,
        cmdline: append.to_string(),
    })
}
