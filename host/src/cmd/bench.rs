//! `tdxlab bench`: a null TDCALL's round trip next to a bare KVM exit's (`doorbell`), and the
//! conversion costs (`convert`), each measured in one run.

use super::costs::{self, ModeCosts, StepCosts, TripExits};
use crate::kvm::ZapPolicy;
use crate::td::{run, RunConfig};
use serde::Serialize;
use shared_abi::stress::field;
use std::collections::BTreeMap;
use std::time::Duration;

/// One measured quantity over its samples, in TSC cycles (the JSON names say so:
/// `min_cycles`, …).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Fastest sample.
    #[serde(rename = "min_cycles")]
    pub min: u64,
    /// Median.
    #[serde(rename = "median_cycles")]
    pub median: u64,
    /// 90th percentile.
    #[serde(rename = "p90_cycles")]
    pub p90: u64,
}

/// `tdxlab bench doorbell`: both round trips, measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct DoorbellBench {
    /// Samples of each.
    pub samples: u64,
    /// A null TDCALL (TDG.VP.INFO) through the doorbell, cycles.
    pub tdcall: Spread,
    /// A bare port-I/O exit to the host and back, cycles.
    pub bare_exit: Spread,
    /// The guest's TSC rate.
    pub tsc_hz: f64,
    /// Median null TDCALL, µs.
    pub tdcall_us: f64,
    /// Median bare exit, µs.
    pub bare_exit_us: f64,
    /// Median null TDCALL vs median bare exit.
    pub tdcall_vs_bare_exit: f64,
}

/// Boot a one-vCPU TD that times both round trips `samples` times (0: the guest's default);
/// print them.
pub fn doorbell(json: bool, samples: u32) -> anyhow::Result<u8> {
    let cfg = RunConfig {
        image: crate::GUEST_IMAGE.to_vec(),
        vcpus: 1,
        mem_bytes: 64 << 20,
        policy: ZapPolicy::Filter,
        strict: false,
        timeout: Duration::from_secs(600),
        flags: 0,
        echo: false,
        workload: crate::guest_layout::WORKLOAD_BENCH_DOORBELL,
        plant_leak: false,
        inject: Default::default(),
        stress: None,
        gpaw: None,
        bench_samples: samples,
        beyond: Default::default(),
        debug_exit: true,
        kernel: None,
        map: None,
    };
    let r = run(&cfg)?;
    let out = DoorbellBench::from_run(&r)?;
    if json {
        crate::outln!("{}", crate::output::json("bench doorbell", &out)?)?;
        return Ok(0);
    }
    let row = |what: &str, s: Spread| {
        crate::outln!(
            "  {what:<44} min {:>8}  median {:>8}  p90 {:>8} cycles  (median {:.2} us)",
            s.min,
            s.median,
            s.p90,
            s.median as f64 / out.tsc_hz * 1e6
        )
    };
    crate::outln!(
        "doorbell floor, {} samples of each, measured in one run:",
        out.samples
    )?;
    row("null TDCALL (TDG.VP.INFO via the doorbell):", out.tdcall)?;
    row("bare KVM port-I/O exit:", out.bare_exit)?;
    crate::outln!(
        "  null TDCALL vs bare exit (medians): {:.2}",
        out.tdcall_vs_bare_exit
    )?;
    Ok(0)
}

impl DoorbellBench {
    /// The guest's `bench-doorbell` line.
    fn from_run(r: &crate::td::RunReport) -> anyhow::Result<DoorbellBench> {
        let line = (r.console.iter())
            .find(|l| l.starts_with("bench-doorbell "))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the benchmark guest reported nothing ({}: {})",
                    r.exit.kind,
                    r.exit.message
                )
            })?;
        let get = |k: &str| field(line, k).ok_or_else(|| anyhow::anyhow!("no {k} in: {line}"));
        let spread = |p: &str, med: &str| -> anyhow::Result<Spread> {
            Ok(Spread {
                min: get(&format!("{p}_min"))?,
                median: get(med)?,
                p90: get(&format!("{p}_p90"))?,
            })
        };
        let (t, b) = (
            spread("tdcall", "tdcall_cycles")?,
            spread("bare", "bare_cycles")?,
        );
        let us = |c: u64| c as f64 / r.tsc_hz * 1e6;
        Ok(DoorbellBench {
            samples: get("n")?,
            tdcall: t,
            bare_exit: b,
            tsc_hz: r.tsc_hz,
            tdcall_us: us(t.median),
            bare_exit_us: us(b.median),
            tdcall_vs_bare_exit: t.median as f64 / b.median.max(1) as f64,
        })
    }
}

/// `tdxlab bench convert`: conversion costs measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertBench {
    /// Round trips and the floor.
    #[serde(flatten)]
    pub round_trips: crate::td::Measured,
    /// Bytes accepted with 2 MiB pages.
    pub accept_bytes: u64,
    /// How long accepting them took.
    pub accept_s: f64,
    /// Accept bandwidth.
    pub accept_bytes_per_s: f64,
    /// TDG.MEM.PAGE.ACCEPT calls it took (512 when every 2 MiB accept succeeds).
    pub accept_calls: u64,
    /// Bytes the guest's memset covers (the first 64 MiB of the accepted memory).
    pub guest_memset_bytes: u64,
    /// The guest's memset (rep stosq) over them, first touch.
    pub guest_memset_cold_bytes_per_s: f64,
    /// The same again.
    pub guest_memset_warm_bytes_per_s: f64,
    /// This machine's memset: the host process over 1 GiB of fresh memory (first touch).
    pub host_memset_cold_bytes_per_s: f64,
    /// The same again.
    pub host_memset_warm_bytes_per_s: f64,
    /// Accept bandwidth vs the host's warm memset bandwidth over the same size.
    pub accept_vs_host_memset: f64,
    /// What each step of the round trips cost the host, per sample, beside real TDX.
    pub steps: BTreeMap<String, StepCosts>,
    /// Exits per 4K round trip (first touch included), here and on real TDX.
    pub round_trip_4k_exits: Option<TripExits>,
    /// The same for the 2M round trip (private pages mapped at 2 MiB).
    pub round_trip_2m_exits: Option<TripExits>,
}

/// `tdxlab bench convert --compare`: the 2 MiB conversions under each mode.
#[derive(Debug, Clone, Serialize)]
pub struct CompareBench {
    /// Upstream first, then each option alone.
    pub modes: Vec<ModeCosts>,
}

/// memset over `len` bytes of fresh anonymous memory, twice: (first touch, again) in bytes/s.
fn host_memset(len: usize) -> anyhow::Result<(f64, f64)> {
    // A zeroed allocation this large is fresh mmap'ed memory: the first fill touches it first.
    let mut m = vec![0u8; len];
    let mut bw = [0.0; 2];
    for (i, b) in bw.iter_mut().enumerate() {
        let t = std::time::Instant::now();
        m.fill(0x42 + i as u8);
        std::hint::black_box(&m);
        *b = len as f64 / t.elapsed().as_secs_f64();
    }
    Ok((bw[0], bw[1]))
}

/// Boot a 1.5 GiB TD whose vCPU 0 measures the conversion costs; print them. With
/// `compare`, boot one small TD per mode instead and compare their 2 MiB conversions.
pub fn convert(json: bool, samples: u32, compare: bool) -> anyhow::Result<u8> {
    if compare {
        return convert_compare(json, samples);
    }
    let r = run(&RunConfig {
        bench_samples: samples,
        beyond: Default::default(),
        ..convert_config()
    })?;
    let out = ConvertBench::from_run(&r)?;
    if json {
        crate::outln!("{}", crate::output::json("bench convert", &out)?)?;
    } else {
        print_convert(&out)?;
    }
    Ok(0)
}

/// One vCPU, 1.5 GiB, private pages mapped at up to 2 MiB, the bench-convert workload.
fn convert_config() -> RunConfig {
    RunConfig {
        image: crate::GUEST_IMAGE.to_vec(),
        vcpus: 1,
        mem_bytes: 1536 << 20,
        policy: ZapPolicy::Filter,
        strict: false,
        timeout: Duration::from_secs(600),
        flags: 0,
        echo: false,
        workload: crate::guest_layout::WORKLOAD_BENCH_CONVERT,
        plant_leak: false,
        inject: crate::td::InjectConfig {
            private_page_size: shared_abi::PageLevel::Size2M,
            ..Default::default()
        },
        stress: None,
        gpaw: None,
        bench_samples: 0,
        beyond: Default::default(),
        debug_exit: true,
        kernel: None,
        map: None,
    }
}

impl ConvertBench {
    /// The guest's measurement lines (cycles at the run's TSC rate) beside the host's memset.
    fn from_run(r: &crate::td::RunReport) -> anyhow::Result<ConvertBench> {
        let failed = || {
            anyhow::anyhow!(
                "the benchmark guest reported nothing ({}: {})",
                r.exit.kind,
                r.exit.message
            )
        };
        let rt = crate::td::Measured::from_console(&r.console, r.tsc_hz).ok_or_else(failed)?;
        let line = (r.console.iter())
            .find(|l| l.starts_with("bench-convert "))
            .ok_or_else(failed)?;
        let get = |k: &str| field(line, k).ok_or_else(|| anyhow::anyhow!("no {k} in: {line}"));
        let (bytes, accept, calls) = (get("bytes")?, get("accept")?, get("accept_calls")?);
        let (span, cold, warm) = (
            get("memset_bytes")?,
            get("memset_cold")?,
            get("memset_warm")?,
        );
        let bw = |n: u64, cycles: u64| n as f64 / (cycles as f64 / r.tsc_hz);
        let steps = costs::steps(r, shared_abi::PageLevel::Size2M);
        let (host_cold, host_warm) = host_memset(bytes as usize)?;
        Ok(ConvertBench {
            round_trips: rt,
            accept_bytes: bytes,
            accept_s: accept as f64 / r.tsc_hz,
            accept_bytes_per_s: bw(bytes, accept),
            accept_calls: calls,
            guest_memset_bytes: span,
            guest_memset_cold_bytes_per_s: bw(span, cold),
            guest_memset_warm_bytes_per_s: bw(span, warm),
            host_memset_cold_bytes_per_s: host_cold,
            host_memset_warm_bytes_per_s: host_warm,
            accept_vs_host_memset: bw(bytes, accept) / host_warm,
            round_trip_4k_exits: costs::trip(&steps, costs::TRIP_4K),
            round_trip_2m_exits: costs::trip(&steps, costs::TRIP_2M),
            steps,
        })
    }
}

fn print_convert(out: &ConvertBench) -> anyhow::Result<()> {
    let m = &out.round_trips;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    crate::outln!(
        "conversion costs, measured in one run (1 vCPU, private pages mapped at up to 2 MiB):"
    )?;
    crate::outln!(
        "  doorbell floor (null TDCALL)      {:>9.1} us",
        m.doorbell_floor_us
    )?;
    let (min4, p904) = (m.round_trip_4k_min_us, m.round_trip_4k_p90_us);
    let (min2, p902) = (m.round_trip_2m_min_us, m.round_trip_2m_p90_us);
    crate::outln!(
        "  4K private->shared->private       {:>9.1} us  = {:.1} floors  (min {min4:.1}, p90 {p904:.1}; {} samples)",
        m.round_trip_4k_us,
        m.round_trip_4k_floors,
        m.samples_4k
    )?;
    crate::outln!(
        "  2M private->shared->private       {:>9.1} us  = {:.1} floors  (min {min2:.1}, p90 {p902:.1}; {} samples)",
        m.round_trip_2m_us,
        m.round_trip_2m_floors,
        m.samples_2m
    )?;
    crate::outln!(
        "  accept 1 GiB at 2M ({} calls)     {:>9.3} s   {:.2} GiB/s",
        out.accept_calls,
        out.accept_s,
        gib(out.accept_bytes_per_s)
    )?;
    crate::outln!(
        "  host memset 1 GiB: first touch {:.2} GiB/s, again {:.2} GiB/s",
        gib(out.host_memset_cold_bytes_per_s),
        gib(out.host_memset_warm_bytes_per_s)
    )?;
    crate::outln!(
        "  guest memset {} MiB (rep stosq): first touch {:.3} GiB/s, again {:.3} GiB/s",
        out.guest_memset_bytes >> 20,
        gib(out.guest_memset_cold_bytes_per_s),
        gib(out.guest_memset_warm_bytes_per_s)
    )?;
    crate::outln!(
        "  accept vs warm host memset (bandwidth): {:.2}",
        out.accept_vs_host_memset
    )?;
    crate::outln!("what each step cost the host (docs/performance.md):")?;
    costs::print_steps(&out.steps)?;
    for (what, t) in [
        ("4K", out.round_trip_4k_exits),
        ("2M", out.round_trip_2m_exits),
    ] {
        if let Some(t) = t {
            crate::outln!(
                "  {what} round trip: {:.1} exits, real TDX {} (ratio {:.2})",
                t.exits,
                t.real_tdx_exits,
                t.ratio
            )?;
        }
    }
    Ok(())
}

/// One small TD per mode (upstream, then each option alone), each timing `samples` 4K and
/// `samples / 8` (at least 4) 2M round trips; print their 2 MiB conversions side by side.
fn convert_compare(json: bool, samples: u32) -> anyhow::Result<u8> {
    let mut modes = Vec::new();
    for (i, mode) in costs::MODES.iter().enumerate() {
        crate::note!(
            "bench convert --compare: mode {} ({}/{})",
            mode.name,
            i + 1,
            costs::MODES.len()
        );
        let mut cfg = convert_config();
        cfg.workload = crate::guest_layout::WORKLOAD_BENCH_ROUND_TRIPS;
        cfg.mem_bytes = 256 << 20;
        // vCPU 1 stays busy in the TD, so each kick has a running vCPU to interrupt.
        cfg.vcpus = 2;
        cfg.bench_samples = samples;
        cfg.beyond = mode.beyond;
        cfg.inject.private_page_size = mode.private;
        let r = run(&cfg)?;
        modes.push(ModeCosts::of(mode, &r)?);
    }
    let out = CompareBench { modes };
    if json {
        crate::outln!("{}", crate::output::json("bench convert", &out)?)?;
        return Ok(0);
    }
    crate::outln!(
        "2 MiB conversions under upstream KVM and each option, measured one after another (2 vCPUs: vCPU 1 stays busy in the TD, so kicks interrupt it):"
    )?;
    costs::print_compare(&out.modes)?;
    if let Some(t) = out.modes[0].round_trip_4k {
        crate::outln!(
            "  4K round trip (upstream): {:.1} exits, real TDX {} (ratio {:.2})",
            t.exits,
            t.real_tdx_exits,
            t.ratio
        )?;
    }
    Ok(0)
}
