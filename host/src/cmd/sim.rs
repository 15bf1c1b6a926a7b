//! `tdxlab sim`: the flags of the simulated TD; the run and its summary are `crate::sim::cli`.

use super::parse::{
    parse_gpaw, parse_inject_item, parse_page_size, parse_probability, parse_seconds,
    parse_zap_policy, InjectItem,
};
use super::usage;
use crate::kvm::ZapPolicy;
use crate::sim::SimConfig;
use shared_abi::PageLevel;
use std::sync::Arc;

/// The flags of `tdxlab sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Simulated vCPUs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    vcpus: u32,
    /// Random operations per vCPU (default 2000, or no limit with --seconds).
    #[arg(long)]
    ops: Option<u64>,
    /// Keep going this long (the soak mode): each vCPU stops here or at --ops.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Zap semantics: filter, exclude or v19.
    #[arg(long, default_value = "filter", value_parser = parse_zap_policy)]
    zap_policy: ZapPolicy,
    /// Fault injection, comma-separated: retry=P, busy=P, private-page-size=4k|2m (the
    /// simulated host migrates shared pages as part of its operations).
    #[arg(long, value_delimiter = ',', value_parser = parse_inject_item)]
    inject: Vec<InjectItem>,
    /// Pages of RAM each vCPU owns.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=262_144))]
    region_pages: u64,
    /// Largest private mapping: 4k (KVM today) or 2m.
    #[arg(long, value_parser = parse_page_size)]
    private_page_size: Option<PageLevel>,
    /// Probability that an event is pending after each 2 MiB chunk of a longer MapGPA (the
    /// host answers RETRY there, as KVM does).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_probability)]
    inject_retry: Option<f64>,
    /// The simulated TD's GPA width (shared bit GPAW - 1): 48, 52, or 36..=47 as an
    /// emulated TD gets on a host with that MAXPHYADDR.
    #[arg(long, default_value_t = 48, value_parser = parse_gpaw)]
    gpaw: u8,
    #[command(flatten)]
    beyond: super::beyond::BeyondArgs,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(super) trace: super::trace_args::TraceArgs,
    /// Also write a map of the run to FILE: one self-contained HTML page of page states
    /// over time per vCPU region, the conversions, the counters and the settings.
    #[arg(long, value_name = "FILE")]
    html: Option<std::path::PathBuf>,
}

/// A setting given both as its own flag and as an `--inject` item: which one was meant is
/// not for the simulator to guess.
fn twice_given(a: &SimArgs) -> Option<String> {
    let has = |f: fn(&InjectItem) -> bool| a.inject.iter().any(f);
    if a.inject_retry.is_some() && has(|i| matches!(i, InjectItem::Retry(_))) {
        return Some(
            "--inject-retry and --inject retry= set the same probability: give one".into(),
        );
    }
    if a.private_page_size.is_some() && has(|i| matches!(i, InjectItem::PrivatePageSize(_))) {
        return Some(
            "--private-page-size and --inject private-page-size= set the same size: give one"
                .into(),
        );
    }
    None
}

/// Check the size and the injection, then run.
pub(super) fn main(a: SimArgs) -> anyhow::Result<u8> {
    let pages = a.vcpus as u64 * a.region_pages;
    if pages > crate::sim::MAX_PAGES {
        return usage(format_args!(
            "--vcpus {} x --region-pages {} is {pages} pages ({} MiB); the simulator holds at most {} ({} MiB)",
            a.vcpus,
            a.region_pages,
            pages >> 8,
            crate::sim::MAX_PAGES,
            crate::sim::MAX_PAGES >> 8
        ));
    }
    if let Err(e) = super::check_inject(&a.inject) {
        return usage(format_args!("{e} (try --help)"));
    }
    if let Some(e) = twice_given(&a) {
        return usage(format_args!("{e} (try --help)"));
    }
    let inject = super::inject_config(&a.inject);
    if inject.host_invalidate_hz > 0 {
        return usage("--inject host-invalidate-hz is for KVM runs; the simulated host migrates shared pages as part of its operations (try --help)");
    }
    if let Some(p) = &a.html {
        if let Err(e) = std::fs::write(p, "") {
            return usage(format_args!("--html {}: {e}", p.display()));
        }
    }
    let regions = (0..a.vcpus as u64)
        .map(|v| (v * a.region_pages, (v + 1) * a.region_pages))
        .collect();
    let map = a
        .html
        .as_ref()
        .map(|_| Arc::new(crate::map::Recorder::new(regions)));
    let cfg = SimConfig {
        vcpus: a.vcpus,
        ops: a
            .ops
            .unwrap_or(if a.seconds.is_some() { u64::MAX } else { 2000 }),
        seconds: a.seconds,
        seed: a.seed,
        policy: a.zap_policy,
        region_pages: a.region_pages,
        private_max_level: a.private_page_size.unwrap_or(inject.private_page_size),
        retry_p: a.inject_retry.unwrap_or(inject.retry),
        busy_p: inject.busy,
        gpaw: shared_abi::Gpaw::emulated(a.gpaw).expect("checked by parse_gpaw"),
        beyond: a.beyond.get(),
        map,
        ..Default::default()
    };
    crate::sim::cli::run(&cfg, a.json, a.html.as_deref())
}
