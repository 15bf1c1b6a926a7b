//! `tdxlab bench doorbell`: a null TDCALL's round trip next to a bare KVM exit's.

use super::machine::{run, RunConfig};
use crate::kvm::ZapPolicy;
use serde::Serialize;
use std::time::Duration;

/// The doorbell floor.
#[derive(Debug, Clone, Serialize)]
pub struct DoorbellBench {
    /// Samples per median.
    pub samples: u64,
    /// Median TDG.VP.INFO round trip, TSC cycles.
    pub tdcall_cycles: u64,
    /// Median bare port-I/O exit round trip, TSC cycles.
    pub bare_exit_cycles: u64,
    /// TSC rate measured during the run.
    pub tsc_hz: f64,
    /// The same in microseconds.
    pub tdcall_us: f64,
    /// The same in microseconds.
    pub bare_exit_us: f64,
    /// tdcall / bare exit.
    pub ratio: f64,
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Run the benchmark guest and report.
pub fn doorbell(json: bool) -> anyhow::Result<u8> {
    let cfg = RunConfig {
        image: crate::GUEST_IMAGE.to_vec(),
        vcpus: 1,
        mem_bytes: 64 << 20,
        policy: ZapPolicy::Filter,
        strict: false,
        timeout: Duration::from_secs(120),
        flags: 0,
        echo: false,
        workload: crate::pack::WORKLOAD_BENCH_DOORBELL,
        plant_leak: false,
        inject_retry: 0.0,
    };
    let r = run(&cfg)?;
    let line = r
        .console
        .iter()
        .find(|l| l.starts_with("bench-doorbell "))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the benchmark guest reported nothing ({}: {})",
                r.exit.kind,
                r.exit.message
            )
        })?;
    let (n, t, b) = match (
        field(line, "n"),
        field(line, "tdcall_cycles"),
        field(line, "bare_cycles"),
    ) {
        (Some(n), Some(t), Some(b)) => (n, t, b),
        _ => anyhow::bail!("unreadable benchmark line: {line}"),
    };
    let us = |c: u64| c as f64 / r.tsc_hz * 1e6;
    let out = DoorbellBench {
        samples: n,
        tdcall_cycles: t,
        bare_exit_cycles: b,
        tsc_hz: r.tsc_hz,
        tdcall_us: us(t),
        bare_exit_us: us(b),
        ratio: t as f64 / b.max(1) as f64,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("doorbell floor, median of {n} round trips each, measured in one run:");
        println!(
            "  null TDCALL (TDG.VP.INFO via the doorbell): {:>9} cycles  {:>8.2} us",
            t, out.tdcall_us
        );
        println!(
            "  bare KVM port-I/O exit:                     {:>9} cycles  {:>8.2} us",
            b, out.bare_exit_us
        );
        println!("  ratio: {:.2}", out.ratio);
    }
    Ok(0)
}
