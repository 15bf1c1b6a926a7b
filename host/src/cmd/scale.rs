//! `tdxlab bench scale`: conversion throughput at 1, 2 and 4 vCPUs, per removal mode, as
//! ratios to 1 vCPU measured in one run — the simulator (the host model alone) and, with
//! `--stress`, the emulated TD on KVM (the random stress scenario).

use crate::kvm::{BeyondUpstream, TdxRemove};
use crate::sim::SimConfig;
use clap::Parser;
use serde::Serialize;

/// The vCPU counts measured.
const VCPUS: [u32; 3] = [1, 2, 4];

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// `sim` or `stress`.
    pub what: &'static str,
    /// Removal mode.
    pub tdx_remove: TdxRemove,
    /// vCPUs.
    pub vcpus: u32,
    /// Conversions the guests completed per second.
    pub conversions_per_s: f64,
    /// Kick-all requests per conversion.
    pub kicks_per_conversion: f64,
    /// Conversions/s over the same mode's 1-vCPU figure.
    pub vs_1_vcpu: f64,
}

/// `bench scale`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleBench {
    /// Seconds each point ran.
    pub seconds: f64,
    /// Every point, mode by mode.
    pub points: Vec<Point>,
}

/// Measure and print.
pub fn scale(json: bool, seconds: f64, with_stress: bool) -> anyhow::Result<u8> {
    let mut points = Vec::new();
    for mode in TdxRemove::ALL {
        let beyond = BeyondUpstream {
            tdx_remove: mode,
            prefault: false,
        };
        points.extend(series("sim", mode, |v| sim_point(v, seconds, beyond))?);
        if with_stress {
            points.extend(series("stress", mode, |v| stress_point(v, seconds, mode))?);
        }
    }
    let out = ScaleBench { seconds, points };
    if json {
        crate::outln!("{}", crate::output::json("bench scale", &out)?)?;
        return Ok(0);
    }
    crate::outln!(
        "conversion throughput by vCPUs, {} s per point, measured in one run on {} host CPUs:",
        seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    crate::outln!(
        "  {:<7} {:<9} {:>6} {:>14} {:>12} {:>11}",
        "what",
        "removal",
        "vCPUs",
        "conversions/s",
        "kicks/conv",
        "vs 1 vCPU"
    )?;
    for p in &out.points {
        crate::outln!(
            "  {:<7} {:<9} {:>6} {:>14.0} {:>12.1} {:>11.2}",
            p.what,
            p.tdx_remove.name(),
            p.vcpus,
            p.conversions_per_s,
            p.kicks_per_conversion,
            p.vs_1_vcpu
        )?;
    }
    Ok(0)
}

/// One mode at every vCPU count, each point as (conversions/s, kicks per conversion).
fn series(
    what: &'static str,
    mode: TdxRemove,
    point: impl Fn(u32) -> anyhow::Result<(f64, f64)>,
) -> anyhow::Result<Vec<Point>> {
    let mut out: Vec<Point> = Vec::new();
    for v in VCPUS {
        eprintln!("bench scale: {what}, {} removal, {v} vCPUs", mode.name());
        let (rate, kicks) = point(v)?;
        let base = out.first().map_or(rate, |p| p.conversions_per_s);
        out.push(Point {
            what,
            tdx_remove: mode,
            vcpus: v,
            conversions_per_s: rate,
            kicks_per_conversion: kicks,
            vs_1_vcpu: rate / base,
        });
    }
    Ok(out)
}

/// The simulator for `seconds` on `vcpus` vCPUs. The invariants are checked once, at the
/// end: the periodic checks scan the whole TD (every vCPU's region) and would measure
/// themselves, growing with the square of the vCPUs.
fn sim_point(vcpus: u32, seconds: f64, beyond: BeyondUpstream) -> anyhow::Result<(f64, f64)> {
    let r = crate::sim::run(&SimConfig {
        vcpus,
        ops: u64::MAX,
        seconds: Some(seconds),
        beyond,
        invariant_every: 0,
        ..SimConfig::default()
    });
    if !r.clean() {
        anyhow::bail!(
            "the simulation on {vcpus} vCPUs found problems: {:?}",
            r.notes
        );
    }
    let n = r.conversions.max(1) as f64;
    Ok((r.conversions as f64 / r.elapsed_s, r.kicks as f64 / n))
}

/// `tdxlab stress`'s flags, to build its arguments the way the command line does.
#[derive(Parser)]
struct StressCli {
    #[command(flatten)]
    args: super::stress::StressArgs,
}

/// The random stress scenario for `seconds` on `vcpus` vCPUs (no measurements).
fn stress_point(vcpus: u32, seconds: f64, mode: TdxRemove) -> anyhow::Result<(f64, f64)> {
    let (v, s) = (vcpus.to_string(), seconds.to_string());
    let argv = [
        "stress",
        "--scenario",
        "random",
        "--vcpus",
        &v,
        "--seconds",
        &s,
        "--no-measure",
        "--tdx-remove",
        mode.name(),
    ];
    let cli = StressCli::try_parse_from(argv)?;
    let r = super::stress::stress(&cli.args, &|_| {})?;
    if !r.passed {
        anyhow::bail!(
            "the stress run on {vcpus} vCPUs failed: {}",
            r.run.exit.message
        );
    }
    let n = r.run.conversions.max(1) as f64;
    Ok((r.conversions_per_s, r.run.kicks as f64 / n))
}
