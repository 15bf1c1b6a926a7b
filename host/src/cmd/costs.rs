//! What one conversion costs the host, counted: the exits by kind, kicks, memory system
//! calls and host CPU time of each measured step of vCPU 0's round trips, beside the exits
//! the same step takes on real TDX (derived in docs/performance.md); and `bench convert
//! --compare`, the same steps under upstream behaviour and each beyond-upstream option.

use crate::kvm::{BeyondUpstream, TdxRemove};
use crate::td::{RunReport, WindowCounts};
use serde::Serialize;
use shared_abi::hostcheck::Window;
use shared_abi::PageLevel;
use std::collections::BTreeMap;

/// One measured step, per sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StepCosts {
    /// Samples averaged.
    pub samples: u64,
    /// Exits to the host (doorbell + memory faults + raw I/O + others); `emulated_exits` in
    /// JSON, beside `real_tdx_exits` (`exits` there is the run's exits by kind).
    #[serde(rename = "emulated_exits")]
    pub exits: f64,
    /// Of which TDCALLs through the doorbell.
    pub doorbell: f64,
    /// Of which TDVMCALL<MapGPA>.
    pub map_gpa: f64,
    /// Of which guest-memory faults (a first touch).
    pub memory_faults: f64,
    /// EPT violations resolved inside a TDCALL's exit (not exits of their own).
    pub ept_violations_in_tdcall: f64,
    /// Kick-all-vCPUs requests.
    pub kicks: f64,
    /// vCPUs those kicks waited for.
    pub kick_waits: f64,
    /// Memory system calls (fallocate, madvise, mprotect, userfaultfd ioctls).
    pub mem_syscalls: f64,
    /// Host CPU time outside KVM_RUN, ns (the unit of the run's `exits.host_cpu_ns`).
    pub host_cpu_ns: f64,
    /// The exits the same step takes on real TDX.
    pub real_tdx_exits: u64,
    /// `exits` / `real_tdx_exits`.
    pub exits_vs_real_tdx: f64,
}

/// The exits a step takes on real TDX with KVM (docs/performance.md): MapGPA is one
/// TDVMCALL exit per ≤ 2 MiB chunk; a first touch of a shared page is one EPT violation; an
/// ACCEPT of an unmapped page is one EPT violation (the AUG), and a TDCALL that does not
/// fault never exits. With 4K private mappings a 2 MiB accept faults once, gets
/// PAGE_SIZE_MISMATCH, and the guest's 512 4K accepts fault 511 more times.
pub fn real_tdx_exits(window: Window, private: PageLevel) -> u64 {
    match window {
        Window::ToShared4k | Window::Touch4k | Window::ToShared2m | Window::Touch2m => 1,
        Window::ToPrivate4k => 2,
        Window::ToPrivate2m if private == PageLevel::Size2M => 2,
        Window::ToPrivate2m => 1 + 1 + 511,
    }
}

impl StepCosts {
    fn of(w: &WindowCounts, window: Window, private: PageLevel) -> StepCosts {
        let n = w.samples.max(1) as f64;
        let t = &w.total;
        let real = real_tdx_exits(window, private);
        StepCosts {
            samples: w.samples,
            exits: t.exits() as f64 / n,
            doorbell: t.doorbell as f64 / n,
            map_gpa: t.map_gpa as f64 / n,
            memory_faults: t.memory_faults as f64 / n,
            ept_violations_in_tdcall: t.ept_violations_in_tdcall as f64 / n,
            kicks: t.kicks as f64 / n,
            kick_waits: t.kick_waits as f64 / n,
            mem_syscalls: t.mem_syscalls as f64 / n,
            host_cpu_ns: t.host_cpu_ns as f64 / n,
            real_tdx_exits: real,
            exits_vs_real_tdx: t.exits() as f64 / n / real as f64,
        }
    }
}

/// Every measured step of a run, by window name (`4k-to-shared`, …).
pub fn steps(r: &RunReport, private: PageLevel) -> BTreeMap<String, StepCosts> {
    (Window::ALL.iter())
        .filter_map(|w| {
            Some((
                w.name().to_string(),
                StepCosts::of(r.windows.get(w.name())?, *w, private),
            ))
        })
        .collect()
}

/// A whole round trip (to shared, first touch, to private): exits here and on real TDX.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TripExits {
    /// Exits per round trip here (`emulated_exits` in JSON).
    #[serde(rename = "emulated_exits")]
    pub exits: f64,
    /// On real TDX.
    pub real_tdx_exits: u64,
    /// `exits` / `real_tdx_exits`.
    pub ratio: f64,
}

/// The round trip made of three steps (missing steps: none measured).
pub fn trip(steps: &BTreeMap<String, StepCosts>, w: [Window; 3]) -> Option<TripExits> {
    let parts: Option<Vec<&StepCosts>> = w.iter().map(|w| steps.get(w.name())).collect();
    let parts = parts?;
    let exits: f64 = parts.iter().map(|s| s.exits).sum();
    let real: u64 = parts.iter().map(|s| s.real_tdx_exits).sum();
    Some(TripExits {
        exits,
        real_tdx_exits: real,
        ratio: exits / real as f64,
    })
}

/// The 4K and 2M round trips' windows.
pub const TRIP_4K: [Window; 3] = [Window::ToShared4k, Window::Touch4k, Window::ToPrivate4k];
/// The 2M round trip's windows.
pub const TRIP_2M: [Window; 3] = [Window::ToShared2m, Window::Touch2m, Window::ToPrivate2m];

/// Print the step table.
pub fn print_steps(steps: &BTreeMap<String, StepCosts>) -> Result<(), crate::output::OutputError> {
    crate::outln!(
        "  {:<16} {:>8} {:>8} {:>6} {:>8} {:>8} {:>9} {:>7} {:>6} {:>8} {:>9}",
        "step (per sample)",
        "exits",
        "real TDX",
        "ratio",
        "doorbell",
        "mem-flt",
        "ept-in-tc",
        "kicks",
        "waits",
        "syscalls",
        "host-us"
    )?;
    for w in Window::ALL {
        let Some(s) = steps.get(w.name()) else {
            continue;
        };
        crate::outln!(
            "  {:<16} {:>8.1} {:>8} {:>6.2} {:>8.1} {:>8.1} {:>9.1} {:>7.1} {:>6.1} {:>8.1} {:>9.1}",
            w.name(),
            s.exits,
            s.real_tdx_exits,
            s.exits_vs_real_tdx,
            s.doorbell,
            s.memory_faults,
            s.ept_violations_in_tdcall,
            s.kicks,
            s.kick_waits,
            s.mem_syscalls,
            s.host_cpu_ns / 1e3
        )?;
    }
    Ok(())
}

/// One mode of `bench convert --compare`.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Its name in the table.
    pub name: &'static str,
    /// The options.
    pub beyond: BeyondUpstream,
    /// Largest private mapping.
    pub private: PageLevel,
}

/// Upstream first, then each option alone.
pub const MODES: [Mode; 4] = [
    Mode {
        name: "upstream",
        beyond: BeyondUpstream {
            tdx_remove: TdxRemove::PerLeaf,
            prefault: false,
        },
        private: PageLevel::Size4K,
    },
    Mode {
        name: "batched",
        beyond: BeyondUpstream {
            tdx_remove: TdxRemove::Batched,
            prefault: false,
        },
        private: PageLevel::Size4K,
    },
    Mode {
        name: "prefault",
        beyond: BeyondUpstream {
            tdx_remove: TdxRemove::PerLeaf,
            prefault: true,
        },
        private: PageLevel::Size4K,
    },
    Mode {
        name: "2m-private",
        beyond: BeyondUpstream {
            tdx_remove: TdxRemove::PerLeaf,
            prefault: false,
        },
        private: PageLevel::Size2M,
    },
];

/// A 2 MiB conversion under one mode, per sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Conversion2m {
    /// Kick-all requests.
    pub kicks: f64,
    /// Exits (`emulated_exits` in JSON).
    #[serde(rename = "emulated_exits")]
    pub exits: f64,
    /// EPT violations inside TDCALL exits (prefault's target: 0 during the ACCEPTs).
    pub ept_violations_in_tdcall: f64,
    /// Host CPU outside KVM_RUN, ns.
    pub host_cpu_ns: f64,
    /// Guest-timed wall time (median), µs.
    pub wall_us: f64,
}

/// One mode's 2 MiB conversions.
#[derive(Debug, Clone, Serialize)]
pub struct ModeCosts {
    /// Mode name.
    pub mode: &'static str,
    /// Its options.
    pub beyond: BeyondUpstream,
    /// `4k` or `2m`.
    pub private_page_size: String,
    /// 2 MiB private → shared.
    pub to_shared_2m: Conversion2m,
    /// 2 MiB shared → private, with its accepts.
    pub to_private_2m: Conversion2m,
    /// Exits per 4K round trip (first touch included) and real TDX's.
    pub round_trip_4k: Option<TripExits>,
}

impl ModeCosts {
    /// Read a mode's run: its windows and the guest's per-direction medians.
    pub fn of(mode: &Mode, r: &RunReport) -> anyhow::Result<ModeCosts> {
        let steps = steps(r, mode.private);
        let line = (r.console.iter())
            .find(|l| l.starts_with(shared_abi::stress::MEASURE_LINE))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "mode {}: no measurement ({}: {})",
                    mode.name,
                    r.exit.kind,
                    r.exit.message
                )
            })?;
        let us = |k: &str| {
            shared_abi::stress::field(line, k)
                .map(|c| c as f64 / r.tsc_hz * 1e6)
                .ok_or_else(|| anyhow::anyhow!("no {k} in: {line}"))
        };
        let conv = |w: Window, wall: f64| -> anyhow::Result<Conversion2m> {
            let s = steps.get(w.name()).ok_or_else(|| {
                anyhow::anyhow!("mode {}: window {} not measured", mode.name, w.name())
            })?;
            Ok(Conversion2m {
                kicks: s.kicks,
                exits: s.exits,
                ept_violations_in_tdcall: s.ept_violations_in_tdcall,
                host_cpu_ns: s.host_cpu_ns,
                wall_us: wall,
            })
        };
        Ok(ModeCosts {
            mode: mode.name,
            beyond: mode.beyond,
            private_page_size: mode.private.name().to_ascii_lowercase(),
            to_shared_2m: conv(Window::ToShared2m, us("sh2m")?)?,
            to_private_2m: conv(Window::ToPrivate2m, us("pr2m")?)?,
            round_trip_4k: trip(&steps, TRIP_4K),
        })
    }
}

/// Print the comparison: each mode's figures and upstream's over them.
pub fn print_compare(modes: &[ModeCosts]) -> Result<(), crate::output::OutputError> {
    let Some(up) = modes.first() else {
        return Ok(());
    };
    for (what, get) in [
        (
            "2M to-shared",
            (|m: &ModeCosts| m.to_shared_2m) as fn(&ModeCosts) -> Conversion2m,
        ),
        ("2M to-private (with its accepts)", |m: &ModeCosts| {
            m.to_private_2m
        }),
    ] {
        crate::outln!("  {what}: per conversion, and upstream / mode")?;
        crate::outln!(
            "    {:<11} {:>9} {:>8} {:>9} {:>8} {:>10} {:>8} {:>10} {:>8} {:>11}",
            "mode",
            "kicks",
            "x",
            "exits",
            "x",
            "ept-in-tc",
            "host-us",
            "x",
            "wall-us",
            "x"
        )?;
        for m in modes {
            let (u, c) = (get(up), get(m));
            let x = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
            crate::outln!(
                "    {:<11} {:>9.1} {:>8.1} {:>9.1} {:>8.2} {:>10.1} {:>8.0} {:>10.2} {:>8.0} {:>11.2}",
                m.mode,
                c.kicks,
                x(u.kicks, c.kicks),
                c.exits,
                x(u.exits, c.exits),
                c.ept_violations_in_tdcall,
                c.host_cpu_ns / 1e3,
                x(u.host_cpu_ns, c.host_cpu_ns),
                c.wall_us,
                x(u.wall_us, c.wall_us)
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip_real(w: [Window; 3], private: PageLevel) -> u64 {
        w.iter().map(|w| real_tdx_exits(*w, private)).sum()
    }

    #[test]
    fn real_tdx_round_trips_take_4_exits_and_515_with_4k_private_mappings_at_2m() {
        assert_eq!(trip_real(TRIP_4K, PageLevel::Size4K), 4);
        assert_eq!(trip_real(TRIP_4K, PageLevel::Size2M), 4);
        assert_eq!(trip_real(TRIP_2M, PageLevel::Size2M), 4);
        assert_eq!(trip_real(TRIP_2M, PageLevel::Size4K), 515);
    }
}
