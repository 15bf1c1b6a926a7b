//! The performance figures that are counts, not times (docs/performance.md): exits per round
//! trip against real TDX's, batched removal's kicks, prefault's EPT violations, and the
//! beyond-upstream options keeping every invariant in the simulator. No time is asserted.

mod common;
use common::{assert_usage_error, tdxlab};
use serde_json::Value;
use tdxlab::kvm::{BeyondUpstream, TdxRemove, ZapPolicy};
use tdxlab::sim::{run, SimConfig};

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[k];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} missing in {v}"))
}

fn sim(policy: ZapPolicy, beyond: BeyondUpstream) -> tdxlab::sim::SimReport {
    run(&SimConfig {
        vcpus: 4,
        ops: 1500,
        seed: 7,
        policy,
        beyond,
        ..Default::default()
    })
}

/// Each option keeps the simulator's checks clean (accesses, TLBs, the invariants every 64
/// operations), and batched removal kicks less for the same seeded work.
#[test]
fn beyond_upstream_options_keep_every_invariant_in_the_simulator() {
    let upstream = sim(ZapPolicy::Filter, BeyondUpstream::default());
    assert!(upstream.clean(), "{upstream:#?}");
    for beyond in [
        BeyondUpstream {
            tdx_remove: TdxRemove::Batched,
            prefault: false,
        },
        BeyondUpstream {
            tdx_remove: TdxRemove::PerLeaf,
            prefault: true,
        },
        BeyondUpstream {
            tdx_remove: TdxRemove::Batched,
            prefault: true,
        },
    ] {
        let r = sim(ZapPolicy::Filter, beyond);
        assert!(r.clean(), "{beyond:?}: {r:#?}");
        assert!(r.zaps.mirror > 0 && r.conversions > 0, "{beyond:?}: {r:#?}");
        assert_eq!(r.beyond, beyond, "the report records the options");
        if beyond.tdx_remove == TdxRemove::Batched {
            assert!(
                r.kicks < upstream.kicks,
                "batched {} kicks vs per-leaf {}",
                r.kicks,
                upstream.kicks
            );
        }
    }
}

/// v19's dropped flush is on the shared side: batched removal of private leaves does not hide
/// it (one vCPU and a fixed seed replay exactly, as in tests/sim.rs).
#[test]
fn v19_still_shows_its_lost_flush_under_batched_removal() {
    let r = run(&SimConfig {
        vcpus: 1,
        ops: 1000,
        seed: 3,
        policy: ZapPolicy::V19,
        beyond: BeyondUpstream {
            tdx_remove: TdxRemove::Batched,
            prefault: false,
        },
        ..Default::default()
    });
    assert!(r.flushes_dropped > 0, "{r:#?}");
    assert!(r.stale_tlb_reads > 0 && r.data_mismatches > 0, "{r:#?}");
    assert!(
        r.invariant_violations == 0 && r.private_leaks == 0,
        "{r:#?}"
    );
}

#[test]
fn a_removal_mode_that_does_not_exist_is_a_usage_error() {
    assert_usage_error(
        &["sim", "--tdx-remove", "lazy"],
        "'lazy' is not a removal mode: per-leaf or batched",
    );
    assert_usage_error(&["stress", "--tdx-remove", "eager"], "per-leaf or batched");
}

/// `bench convert --compare`: upstream, batched, prefault and 2 MiB private pages, counted.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn compare_counts_exits_kicks_and_ept_violations_per_mode() {
    require_kvm!();
    let out = tdxlab(&["bench", "convert", "--compare", "--samples", "8", "--json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let modes = v["modes"].as_array().expect("modes");
    let mode = |name: &str| {
        (modes.iter())
            .find(|m| m["mode"] == name)
            .unwrap_or_else(|| panic!("no mode {name}: {v}"))
    };
    let (up, batched, prefault, huge) = (
        mode("upstream"),
        mode("batched"),
        mode("prefault"),
        mode("2m-private"),
    );
    // A 4K round trip with its first touch: no more exits than real TDX's 4.
    let trip = &up["round_trip_4k"];
    assert_eq!(f(trip, &["real_tdx_exits"]), 4.0, "{trip}");
    assert!(f(trip, &["emulated_exits"]) <= 4.0, "{trip}");
    // Per-leaf removal kicks once per 4K leaf (+ the flush); batched once per zap.
    let kicks = |m: &Value| f(m, &["to_shared_2m", "kicks"]);
    assert!(kicks(up) >= 512.0, "{up}");
    assert!(kicks(batched) <= 2.0, "{batched}");
    assert!(kicks(up) / kicks(batched) >= 50.0);
    // Prefault: the accepts of the converted 2 MiB raise no EPT violation.
    let ept = |m: &Value| f(m, &["to_private_2m", "ept_violations_in_tdcall"]);
    assert_eq!(ept(up), 512.0, "{up}");
    assert_eq!(ept(prefault), 0.0, "{prefault}");
    // 2 MiB private pages: MapGPA and one accept.
    assert_eq!(f(huge, &["to_private_2m", "emulated_exits"]), 2.0, "{huge}");
    for m in modes {
        assert!(f(m, &["to_shared_2m", "host_cpu_ns"]) > 0.0, "{m}");
        assert!(f(m, &["to_private_2m", "wall_us"]) > 0.0, "{m}");
    }
}

/// A stress run's report carries the exit accounting, in total and per measured step.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn the_stress_report_counts_exits_per_measured_step() {
    require_kvm!();
    let r = common::run_with_report(&[
        "stress",
        "--scenario",
        "explicit",
        "--vcpus",
        "1",
        "--seconds",
        "0",
    ]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.out, r.err);
    let (exits, windows) = (&r.report["exits"], &r.report["windows"]);
    assert!(
        f(exits, &["doorbell"]) > 0.0 && f(exits, &["memory_faults"]) > 0.0,
        "{exits}"
    );
    assert!(f(exits, &["host_cpu_ns"]) > 0.0, "{exits}");
    for w in ["4k-to-shared", "4k-first-touch", "4k-to-private"] {
        assert_eq!(f(windows, &[w, "samples"]), 32.0, "{windows}");
    }
    // Per 4K trip: MapGPA twice, one first touch, one accept whose EPT violation is inside it.
    let per = |w: &str, k: &str| f(windows, &[w, "total", k]) / 32.0;
    assert_eq!(per("4k-to-shared", "map_gpa"), 1.0);
    assert_eq!(per("4k-first-touch", "memory_faults"), 1.0);
    assert_eq!(per("4k-first-touch", "doorbell"), 0.0);
    assert_eq!(per("4k-to-private", "doorbell"), 2.0);
    assert_eq!(per("4k-to-private", "ept_violations_in_tdcall"), 1.0);
    // The windows are part of the total.
    let sum: f64 = (windows.as_object().unwrap().values())
        .map(|w| f(w, &["total", "doorbell"]))
        .sum();
    assert!(sum <= f(exits, &["doorbell"]));
}
