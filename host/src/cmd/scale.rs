//! `tdxlab bench scale`: conversion throughput at 1, 2 and 4 vCPUs, per removal mode, as
//! ratios to 1 vCPU measured in one run — the simulator (the host model alone) and, with
//! `--stress`, the emulated TD on KVM (the random stress scenario).

use crate::kvm::{BeyondUpstream, TdxRemove};
use crate::sim::SimConfig;
use clap::Parser;
use serde::Serialize;

/// The vCPU counts measured.
const VCPUS: [u32; 3] = [1, 2, 4];

/// One measured point: `repeat` samples, taken in rounds that alternate the vCPU counts
/// (1, 2, 4, then 4, 2, 1, …) so that every count sees the machine in the same moods.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// `sim` or `stress`.
    pub what: &'static str,
    /// Removal mode.
    pub tdx_remove: TdxRemove,
    /// vCPUs.
    pub vcpus: u32,
    /// Samples taken.
    pub samples: usize,
    /// Conversions the guests completed per second: the median sample.
    pub conversions_per_s: f64,
    /// The slowest sample.
    pub conversions_per_s_min: f64,
    /// The fastest sample.
    pub conversions_per_s_max: f64,
    /// Kick-all requests per conversion (median).
    pub kicks_per_conversion: f64,
    /// The median of the rounds' ratios to the same mode's 1-vCPU sample of that round.
    pub vs_1_vcpu: f64,
    /// The smallest of those ratios.
    pub vs_1_vcpu_min: f64,
    /// The largest.
    pub vs_1_vcpu_max: f64,
}

/// `bench scale`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleBench {
    /// Seconds each sample ran.
    pub seconds: f64,
    /// Samples per point.
    pub repeat: u32,
    /// The host's CPUs.
    pub host_cpus: usize,
    /// How busy the machine was while the bench ran, apart from the bench itself.
    pub load: Load,
    /// Every point, mode by mode.
    pub points: Vec<Point>,
}

/// The machine's CPU time while the bench ran (`/proc/stat` and the bench's own
/// `getrusage`), as shares of all host CPUs' time: ratios measured on a busy machine are
/// not the scaling of tdxlab.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Load {
    /// CPU time other processes used.
    pub others_share: f64,
    /// CPU time the hypervisor under this machine took away (steal).
    pub steal_share: f64,
    /// The bench's own CPU time.
    pub own_share: f64,
}

/// Above these shares the bench warns that its ratios are unreliable.
const BUSY_OTHERS: f64 = 0.15;
const BUSY_STEAL: f64 = 0.05;

impl Load {
    /// A warning when the machine was too busy to trust the ratios.
    fn warning(&self) -> Option<String> {
        (self.others_share > BUSY_OTHERS || self.steal_share > BUSY_STEAL).then(|| {
            format!(
                "the machine was busy: other processes used {:.0}% of the host CPUs' time and steal took {:.0}% while the bench ran (the bench itself: {:.0}%); its ratios are unreliable",
                self.others_share * 100.0,
                self.steal_share * 100.0,
                self.own_share * 100.0
            )
        })
    }
}

/// Cumulative CPU ticks of all host CPUs: (busy, steal, total), from `/proc/stat`'s `cpu`
/// line (user nice system idle iowait irq softirq steal ...; guest time is inside user).
fn parse_proc_stat(text: &str) -> Option<(u64, u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = (line.split_ascii_whitespace().skip(1))
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq;
    Some((busy, steal, busy + idle + iowait + steal))
}

/// This process's CPU time so far, in seconds (every thread, vCPUs included).
fn own_cpu_s() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A snapshot to measure [`Load`] from.
struct LoadProbe {
    stat: Option<(u64, u64, u64)>,
    own_s: f64,
}

impl LoadProbe {
    fn now() -> LoadProbe {
        LoadProbe {
            stat: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_proc_stat(&t)),
            own_s: own_cpu_s(),
        }
    }

    /// The load since `self` (zero where /proc/stat cannot be read).
    fn since(&self) -> Load {
        let now = LoadProbe::now();
        let (Some((b0, s0, t0)), Some((b1, s1, t1))) = (self.stat, now.stat) else {
            return Load::default();
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let total = (t1.saturating_sub(t0)).max(1) as f64;
        let own = (now.own_s - self.own_s) * hz;
        let others = (b1.saturating_sub(b0) as f64 - own).max(0.0);
        Load {
            others_share: others / total,
            steal_share: s1.saturating_sub(s0) as f64 / total,
            own_share: (own / total).min(1.0),
        }
    }
}

/// Measure and print.
pub fn scale(json: bool, seconds: f64, repeat: u32, with_stress: bool) -> anyhow::Result<u8> {
    let probe = LoadProbe::now();
    let mut points = Vec::new();
    for mode in TdxRemove::ALL {
        let beyond = BeyondUpstream {
            tdx_remove: mode,
            prefault: false,
        };
        points.extend(series("sim", mode, repeat, |v| {
            sim_point(v, seconds, beyond)
        })?);
        if with_stress {
            points.extend(series("stress", mode, repeat, |v| {
                stress_point(v, seconds, mode)
            })?);
        }
    }
    let load = probe.since();
    if let Some(w) = load.warning() {
        crate::note!("tdxlab: warning: {w}");
    }
    let out = ScaleBench {
        seconds,
        repeat,
        host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load,
        points,
    };
    if json {
        crate::outln!("{}", crate::output::json("bench scale", &out)?)?;
        return Ok(0);
    }
    print_scale(&out)?;
    Ok(0)
}

fn print_scale(out: &ScaleBench) -> anyhow::Result<()> {
    crate::outln!(
        "conversion throughput by vCPUs, {} s per sample, {} samples per point (median, min–max), on {} host CPUs:",
        out.seconds,
        out.repeat,
        out.host_cpus
    )?;
    crate::outln!(
        "  {:<7} {:<9} {:>6} {:>24} {:>11} {:>19}",
        "what",
        "removal",
        "vCPUs",
        "conversions/s",
        "kicks/conv",
        "vs 1 vCPU"
    )?;
    for p in &out.points {
        let rate = format!(
            "{:.0} ({:.0}–{:.0})",
            p.conversions_per_s, p.conversions_per_s_min, p.conversions_per_s_max
        );
        let ratio = format!(
            "{:.2} ({:.2}–{:.2})",
            p.vs_1_vcpu, p.vs_1_vcpu_min, p.vs_1_vcpu_max
        );
        crate::outln!(
            "  {:<7} {:<9} {:>6} {:>24} {:>11.1} {:>19}",
            p.what,
            p.tdx_remove.name(),
            p.vcpus,
            rate,
            p.kicks_per_conversion,
            ratio
        )?;
    }
    if let Some(w) = out.load.warning() {
        crate::outln!("warning: {w}")?;
    }
    Ok(())
}

/// The order of the vCPU counts in round `round`: up, then down, and so on.
fn round_order(round: u32) -> Vec<u32> {
    match round % 2 {
        0 => VCPUS.to_vec(),
        _ => VCPUS.iter().rev().copied().collect(),
    }
}

/// One mode at every vCPU count, `repeat` rounds, each sample (conversions/s, kicks per
/// conversion).
fn series(
    what: &'static str,
    mode: TdxRemove,
    repeat: u32,
    point: impl Fn(u32) -> anyhow::Result<(f64, f64)>,
) -> anyhow::Result<Vec<Point>> {
    // samples[i][round]: VCPUS[i]'s sample in that round.
    let mut samples = vec![Vec::new(); VCPUS.len()];
    for round in 0..repeat {
        for v in round_order(round) {
            crate::note!(
                "bench scale: {what}, {} removal, {v} vCPUs (round {}/{repeat})",
                mode.name(),
                round + 1
            );
            let i = VCPUS.iter().position(|x| *x == v).unwrap_or(0);
            samples[i].push(point(v)?);
        }
    }
    let base: Vec<f64> = samples[0].iter().map(|s| s.0).collect();
    Ok((VCPUS.iter().zip(&samples))
        .map(|(&vcpus, s)| {
            let rates: Vec<f64> = s.iter().map(|x| x.0).collect();
            let ratios: Vec<f64> = (rates.iter().zip(&base))
                .map(|(r, b)| r / b.max(f64::MIN_POSITIVE))
                .collect();
            let (lo, mid, hi) = spread(&rates);
            let (rlo, rmid, rhi) = spread(&ratios);
            Point {
                what,
                tdx_remove: mode,
                vcpus,
                samples: rates.len(),
                conversions_per_s: mid,
                conversions_per_s_min: lo,
                conversions_per_s_max: hi,
                kicks_per_conversion: spread(&s.iter().map(|x| x.1).collect::<Vec<_>>()).1,
                vs_1_vcpu: rmid,
                vs_1_vcpu_min: rlo,
                vs_1_vcpu_max: rhi,
            }
        })
        .collect())
}

/// (min, median, max) of `v` (the median of an even count: the mean of the middle two).
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let mid = match n % 2 {
        1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    };
    (s[0], mid, s[n - 1])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(spread(&[4.0, 1.0]), (1.0, 2.5, 4.0));
        assert_eq!(spread(&[]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn rounds_alternate_the_vcpu_counts() {
        assert_eq!(round_order(0), [1, 2, 4]);
        assert_eq!(round_order(1), [4, 2, 1]);
        assert_eq!(round_order(2), [1, 2, 4]);
    }

    #[test]
    fn proc_stat_gives_busy_steal_and_total_ticks() {
        let t = "cpu  100 5 20 800 10 1 2 30 0 0\ncpu0 50 2 10 400 5 0 1 15 0 0\n";
        assert_eq!(parse_proc_stat(t), Some((128, 30, 968)));
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
    }

    #[test]
    fn a_busy_machine_is_warned_about_and_a_quiet_one_is_not() {
        let quiet = Load {
            others_share: 0.02,
            steal_share: 0.0,
            own_share: 0.5,
        };
        assert_eq!(quiet.warning(), None);
        let busy = Load {
            others_share: 0.4,
            ..quiet
        };
        assert!(busy
            .warning()
            .unwrap()
            .contains("busy: other processes used 40%"));
        let stolen = Load {
            steal_share: 0.2,
            ..quiet
        };
        assert!(stolen.warning().is_some());
    }
}
