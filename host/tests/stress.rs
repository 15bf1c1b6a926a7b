//! `tdxlab stress` on KVM: every scenario with and without fault injection on 1 and 4 vCPUs
//! (one pass each), alternating pages over all of RAM, --strict against the implicit
//! scenario, a planted leak that both the host check and the end-of-run audit must catch,
//! seeded replay, and bad flags.

mod common;
use common::{run_with_report, run_with_report_env, tdxlab, Run};
use serde_json::Value;

const INJECT: &str = "retry=0.3,busy=0.2,host-invalidate-hz=200";

fn stress(args: &[&str]) -> Run {
    let mut all = vec!["stress", "--timeout", "600"];
    all.extend_from_slice(args);
    run_with_report(&all)
}

fn u(r: &Value, k: &str) -> u64 {
    r[k].as_u64()
        .unwrap_or_else(|| panic!("report field {k} missing: {r}"))
}

/// One pass of `scenario` on `vcpus` vCPUs; asserts the verdict and the report. The 4-vCPU
/// injection runs use the narrowest GPAW tested here (39, the Intel client width, unless the
/// host is narrower), the others the host's own: both shared-bit positions see every scenario.
fn check(scenario: &str, vcpus: u32, inject: bool) {
    check_with(scenario, vcpus, inject, &[]);
}

/// [`check`] with `extra` flags (the beyond-upstream options).
fn check_with(scenario: &str, vcpus: u32, inject: bool, extra: &[&str]) {
    let v = vcpus.to_string();
    let gpaw = if inject && vcpus > 1 {
        common::test_gpaws().into_iter().min().unwrap()
    } else {
        common::host_gpaw()
    };
    let g = gpaw.to_string();
    let mut args = vec![
        "--scenario",
        scenario,
        "--vcpus",
        &v,
        "--no-measure",
        "--gpaw",
        &g,
    ];
    if scenario == "random" {
        // One random operation proves little: run a fixed number.
        args.extend(["--seconds", "600", "--ops", "300"]);
    } else {
        args.extend(["--seconds", "0"]);
    }
    if inject {
        args.extend(["--inject", INJECT]);
        if vcpus > 1 {
            // 2 MiB private mappings under concurrency: partial conversions DEMOTE.
            args.extend(["--inject", "private-page-size=2m"]);
        }
    }
    args.extend_from_slice(extra);
    let r = stress(&args);
    let rep = &r.report;
    assert_eq!(
        r.code,
        Some(0),
        "{scenario} on {vcpus} vCPUs (inject {inject}, {extra:?}) failed: {}\n{}",
        r.out,
        r.err
    );
    assert!(r.out.contains("PASSED"), "{}", r.out);
    assert_eq!(rep["passed"], true);
    assert_eq!(rep["scenario"], scenario);
    assert_eq!(u(rep, "gpaw"), gpaw as u64);
    assert_eq!(u(rep, "seed"), 1);
    assert_eq!(u(rep, "mismatches"), 0);
    assert_eq!(u(rep, "leaks"), 0, "audit: {}", rep["audit"]);
    assert_eq!(u(rep, "exits_on_mapped_private"), 0);
    assert_eq!(
        u(rep, "memslot_vmas"),
        2,
        "reachability never splits a mapping"
    );
    assert!(u(rep, "conversions") > 0 && u(rep, "pages_converted") > 0);
    assert!(u(rep, "host_checks") > 0);
    assert!(rep["conversions_per_s"].as_f64().unwrap() > 0.0);
    assert!(rep["bytes_converted_per_s"].as_f64().unwrap() > 0.0);
    let results = rep["vcpu_results"].as_array().expect("vcpu_results");
    assert_eq!(results.len(), vcpus as usize, "one result line per vCPU");
    for res in results {
        assert!(u(res, "ops") > 0 && u(res, "checks") > 0, "{res}");
    }
    let inj = &rep["injected"];
    if inject {
        assert!(u(inj, "busy") > 0, "busy injected: {inj}");
        assert!(inj.get("retry").is_some() && inj.get("host_invalidate").is_some());
        if scenario == "explicit" || scenario == "boundary" {
            // KVM answers RETRY only between 2 MiB chunks of one MapGPA: these two scenarios
            // always convert more than 2 MiB at once (4 MiB; 6 MiB + 4 KiB). The others may
            // not (implicit never calls MapGPA at all).
            assert!(u(inj, "retry") > 0, "retry injected: {inj}");
        }
    } else {
        assert!(
            inj.get("busy").is_none() && inj.get("retry").is_none(),
            "{inj}"
        );
    }
    if scenario == "implicit" {
        assert!(u(rep, "implicit_conversions") > 0);
    }
}

macro_rules! scenario_tests {
    ($($name:ident: $scenario:expr, $vcpus:expr, $inject:expr;)*) => {$(
        #[test]
        #[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
        fn $name() {
            require_kvm!();
            check($scenario, $vcpus, $inject);
        }
    )*};
}

scenario_tests! {
    explicit_1: "explicit", 1, false;
    explicit_1_inject: "explicit", 1, true;
    explicit_4: "explicit", 4, false;
    explicit_4_inject: "explicit", 4, true;
    punch_hole_1: "punch-hole", 1, false;
    punch_hole_1_inject: "punch-hole", 1, true;
    punch_hole_4: "punch-hole", 4, false;
    punch_hole_4_inject: "punch-hole", 4, true;
    implicit_1: "implicit", 1, false;
    implicit_1_inject: "implicit", 1, true;
    implicit_4: "implicit", 4, false;
    implicit_4_inject: "implicit", 4, true;
    boundary_1: "boundary", 1, false;
    boundary_1_inject: "boundary", 1, true;
    boundary_4: "boundary", 4, false;
    boundary_4_inject: "boundary", 4, true;
    random_1: "random", 1, false;
    random_1_inject: "random", 1, true;
    random_4: "random", 4, false;
    random_4_inject: "random", 4, true;
}

/// Beyond upstream (batched removal, prefault) under every scenario with injection and
/// 2 MiB private pages on 4 vCPUs: the guest's checks, the host checks and the audit hold, and
/// the report records the options.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn beyond_upstream_options_pass_every_scenario_with_injection() {
    require_kvm!();
    let extra = ["--tdx-remove", "batched", "--prefault"];
    for scenario in ["explicit", "punch-hole", "implicit", "boundary", "random"] {
        check_with(scenario, 4, true, &extra);
    }
    let r = stress(&[
        "--scenario",
        "boundary",
        "--vcpus",
        "2",
        "--seconds",
        "0",
        "--no-measure",
        "--tdx-remove",
        "batched",
        "--prefault",
    ]);
    let beyond = &r.report["settings"]["beyond"];
    assert_eq!(beyond["tdx_remove"], "batched", "{beyond}");
    assert_eq!(beyond["prefault"], true, "{beyond}");
}

/// Every other page of all RAM private, the ones between shared: 65,024 separately reachable
/// pages in each alias, past vm.max_map_count's 65,530 VMAs had each changed a mapping's
/// protection. The memslot views stay one mapping each.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn alternating_pages_over_all_of_ram_never_split_the_memslot_views() {
    require_kvm!();
    let r = stress(&[
        "--scenario",
        "alternate",
        "--vcpus",
        "2",
        "--mem",
        "512M",
        "--no-measure",
    ]);
    let rep = &r.report;
    assert_eq!(r.code, Some(0), "{}\n{}", r.out, r.err);
    // (512 MiB − the 4 MiB boot area) / 2 vCPUs, in 2 MiB units, in pairs of pages.
    let pairs = ((512u64 - 4) << 20) / 2 / (2 << 20) * (2 << 20) / 8192 * 2;
    assert_eq!(u(rep, "implicit_conversions"), pairs, "{rep}");
    assert!(u(rep, "accepted_bytes") >= pairs * 4096, "{rep}");
    assert_eq!(u(rep, "memslot_vmas"), 2, "{rep}");
    assert_eq!(u(rep, "leaks"), 0, "audit: {}", rep["audit"]);
    assert_eq!(u(rep, "mismatches"), 0);
    assert!(u(rep, "host_checks") > 0);
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn two_megabyte_private_pages_accept_without_size_mismatch() {
    require_kvm!();
    // KVM today maps private memory at 4K: a 2M accept gets PAGE_SIZE_MISMATCH and falls
    // back. With 2M private mappings the same scenario accepts whole blocks.
    let base = ["--scenario", "boundary", "--vcpus", "1", "--seconds", "0"];
    let small = stress(&[&base[..], &["--no-measure"]].concat());
    let big = stress(
        &[
            &base[..],
            &["--no-measure", "--inject", "private-page-size=2m"],
        ]
        .concat(),
    );
    assert_eq!(small.code, Some(0), "{}", small.out);
    assert_eq!(big.code, Some(0), "{}", big.out);
    let mm = |r: &Run| u(&r.report, "accept_2m_fallbacks");
    assert!(mm(&small) > 0, "4K mappings must refuse 2M accepts");
    // Converting part of a 2 MiB private mapping splits it first (TDH.MEM.PAGE.DEMOTE).
    assert_eq!(u(&small.report, "demotes"), 0);
    assert!(u(&big.report, "demotes") > 0, "no DEMOTE with 2M mappings");
    assert!(
        mm(&big) < mm(&small),
        "2M mappings: {} mismatches vs {} at 4K",
        mm(&big),
        mm(&small)
    );
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn strict_stops_the_implicit_scenario_with_the_mismatch_diagnostic() {
    require_kvm!();
    let r = stress(&[
        "--scenario",
        "implicit",
        "--vcpus",
        "1",
        "--seconds",
        "0",
        "--no-measure",
        "--strict",
    ]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.out, r.err);
    assert!(r.out.contains("FAILED"));
    assert!(
        r.out.contains("--strict forbids implicit conversion"),
        "{}",
        r.out
    );
    assert_eq!(r.report["passed"], false);
    assert_eq!(u(&r.report, "implicit_conversions"), 0);
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_planted_leak_is_caught_by_the_host_check_and_the_audit() {
    require_kvm!();
    let args = [
        "stress",
        "--timeout",
        "600",
        "--scenario",
        "explicit",
        "--vcpus",
        "1",
        "--seconds",
        "0",
        "--no-measure",
    ];
    let r = run_with_report_env(&args, &[(tdxlab::cmd::TEST_PLANT_LEAK_ENV, "1")]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.out, r.err);
    assert!(u(&r.report, "mismatches") >= 1, "{}", r.out);
    assert!(
        u(&r.report, "leaks") >= 1,
        "the audit must see the leaked byte"
    );
    let audit = r.report["audit"].to_string();
    assert!(audit.contains("shared backing of private"), "{audit}");
    assert!(r.out.contains("SYNC_PRIVATE"), "{}", r.out);
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn the_same_seed_replays_the_same_operation_sequences() {
    require_kvm!();
    let run = |seed: &str| {
        let r = stress(&[
            "--scenario",
            "random",
            "--vcpus",
            "2",
            "--seconds",
            "600",
            "--ops",
            "150",
            "--seed",
            seed,
            "--no-measure",
        ]);
        assert_eq!(r.code, Some(0), "{}\n{}", r.out, r.err);
        let mut v: Vec<(u64, u64, u64)> = r.report["vcpu_results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let hash = x["hash"].as_str().expect("hashes are hex strings");
                let hash = u64::from_str_radix(hash.trim_start_matches("0x"), 16).unwrap();
                (u(x, "vcpu"), u(x, "ops"), hash)
            })
            .collect();
        v.sort();
        v
    };
    let (a, b, c) = (run("7"), run("7"), run("8"));
    assert_eq!(a, b, "same seed, same sequences");
    assert!(a.iter().all(|(_, ops, _)| *ops == 150), "{a:?}");
    assert_ne!(a[0].2, a[1].2, "vCPUs run different sequences");
    assert_ne!(a[0].2, c[0].2, "another seed, another sequence");
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn measured_round_trips_are_reported_next_to_the_doorbell_floor() {
    require_kvm!();
    let r = stress(&["--vcpus", "1", "--seconds", "0.5"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.out, r.err);
    let floor = r.report["doorbell_floor_us"].as_f64().expect("floor");
    let m = &r.report["measured"];
    let rt4k = m["round_trip_4k_us"].as_f64().expect("4k");
    let rt2m = m["round_trip_2m_us"].as_f64().expect("2m");
    // A round trip is at least four TDCALLs (two MapGPAs, an accept, the touch's exit).
    assert!(
        floor > 0.0 && rt4k > 2.0 * floor,
        "floor {floor}, 4K {rt4k}"
    );
    assert!(rt2m > rt4k, "2M {rt2m} vs 4K {rt4k}");
    let (min4, p904) = (
        m["round_trip_4k_min_us"].as_f64().unwrap(),
        m["round_trip_4k_p90_us"].as_f64().unwrap(),
    );
    assert!(min4 <= rt4k && rt4k <= p904, "{m}");
    assert_eq!(
        (m["samples_4k"].as_u64(), m["samples_2m"].as_u64()),
        (Some(32), Some(4))
    );
    assert!(r.out.contains("doorbell floor") && r.out.contains("4K round trip"));
    assert!(r.out.contains("(projected: "), "{}", r.out);
    // The phases: measuring first, then the scenario window the rates are over.
    let ph = &r.report["phases"];
    let (measure, window) = (ph["measure_s"].as_f64(), ph["scenario_s"].as_f64().unwrap());
    assert!(measure.is_some_and(|m| m > 0.0), "{ph}");
    let ran = r.report["vcpus_ran_s"].as_f64().unwrap();
    assert!(
        window > 0.0 && window + measure.unwrap() <= ran,
        "{ph}, ran {ran}"
    );
    let conv = r.report["guest_conversions"].as_f64().unwrap();
    let rate = r.report["conversions_per_s"].as_f64().unwrap();
    assert!(
        (rate - conv / window).abs() < 1e-6 * rate.max(1.0),
        "{rate} vs {conv}/{window}"
    );
    assert!(r.out.contains("over the scenario window") && r.out.contains("  phases "));
}

#[test]
fn bad_stress_flags_are_one_line_usage_errors() {
    for (args, needle) in [
        (vec!["--inject", "bogus=1"], "unknown"),
        (vec!["--inject", "retry=2"], "probability"),
        (vec!["--inject", "private-page-size=1g"], "4k or 2m"),
        (vec!["--inject", "retry"], "NAME=VALUE"),
        (vec!["--scenario", "sideways"], "not a scenario"),
        (vec!["--seconds=-1"], "duration"),
        (
            vec!["--mem", "16M", "--vcpus", "4", "--scenario", "boundary"],
            "too small",
        ),
    ] {
        let mut all = vec!["stress"];
        all.extend(args.iter());
        let o = tdxlab(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `stress --html`: the map of a run on KVM has one region per vCPU — the random scenario's
/// 32 MiB chunks from 4 MiB on (docs/stress.md), not the default workload's 4 MiB strides —
/// and its timeline counts the conversions the VMM served, as the report does.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn stress_writes_a_map_of_the_run() {
    require_kvm!();
    let path = std::env::temp_dir().join(format!("tdxlab-stress-map-{}.html", std::process::id()));
    let p = path.to_str().unwrap();
    let run = stress(&[
        "--vcpus",
        "2",
        "--seconds",
        "2",
        "--no-measure",
        "--html",
        p,
    ]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.out, run.err);
    let page = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let data = common::map_data(&page);
    assert_eq!(
        data["regions"],
        serde_json::json!([[1024, 9216], [9216, 17408]])
    );
    let converted = common::map_conversions(&data);
    assert!(converted > 0, "{data}");
    assert_eq!(
        common::map_total_conversions(&data),
        u(&run.report, "conversions")
    );
    assert!(page.contains("<td>scenario</td>"));
}

/// A report that cannot be written (a full disk) comes after the verdict, never instead of
/// it: `stress` prints its summary with PASSED, then one line naming the report, exit 3;
/// `run` prints its summary line first too.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_report_that_cannot_be_written_keeps_the_verdict() {
    require_kvm!();
    let o = tdxlab(&[
        "stress",
        "--scenario",
        "explicit",
        "--vcpus",
        "1",
        "--seconds",
        "0",
        "--no-measure",
        "--report",
        "/dev/full",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    assert!(out.contains(": PASSED in "), "the verdict is shown: {out}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("cannot write report /dev/full"), "{err}");
    let o = tdxlab(&["run", "--vcpus", "1", "--report", "/dev/full"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    let n = lines.len();
    assert!(n >= 2, "{err}");
    assert!(
        lines[n - 2].starts_with("tdxlab: guest (guest reported success)"),
        "{err}"
    );
    assert!(
        lines[n - 1].contains("cannot write report /dev/full"),
        "{err}"
    );
}

/// `--prefault`'s mappings are counted apart from EPT violations (none caused them), so
/// prefault shows fewer EPT violations than upstream for the same one-vCPU pass, not more;
/// and the header and summary name the beyond-upstream options that shaped the counters.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn prefault_mappings_are_not_ept_violations_and_the_summary_names_the_options() {
    require_kvm!();
    let pass = |extra: &[&str]| {
        let base = ["--scenario", "boundary", "--vcpus", "1", "--seconds", "0"];
        stress(&[&base[..], &["--no-measure"], extra].concat())
    };
    let (up, pre) = (pass(&[]), pass(&["--prefault", "--tdx-remove", "batched"]));
    assert_eq!(
        (up.code, pre.code),
        (Some(0), Some(0)),
        "{}\n{}",
        up.err,
        pre.err
    );
    assert_eq!(u(&up.report, "prefault_maps"), 0, "{}", up.report);
    assert!(u(&pre.report, "prefault_maps") > 0, "{}", pre.report);
    assert!(u(&pre.report, "prefaulted_pages") > 0, "{}", pre.report);
    let (ept_up, ept_pre) = (
        u(&up.report, "ept_violations"),
        u(&pre.report, "ept_violations"),
    );
    assert!(ept_pre < ept_up, "prefault {ept_pre} vs upstream {ept_up}");
    let named = ", beyond upstream: --tdx-remove batched --prefault";
    assert!(
        pre.out.lines().next().unwrap_or_default().contains(named),
        "{}",
        pre.out
    );
    assert!(
        pre.err.lines().next().unwrap_or_default().contains(named),
        "{}",
        pre.err
    );
    assert!(pre.out.contains(" prefault mappings, "), "{}", pre.out);
    assert!(!up.out.contains("beyond upstream") && !up.err.contains("beyond upstream"));
}

/// `-v` shows the guest's console (not echoed on a stress run) and the TD's life on
/// stderr; `-q` leaves stderr empty on a passing run (no header, no progress lines).
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn verbose_shows_the_guest_and_quiet_shows_nothing() {
    require_kvm!();
    let args = ["stress", "--vcpus", "1", "--no-measure", "--seconds", "2.5"];
    let v = tdxlab(&[&["-v"][..], &args].concat());
    let err = String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(0), "{err}");
    assert!(
        err.contains("INFO guest: stress-phase vcpu=0 phase=scenario"),
        "{err}"
    );
    assert!(
        err.contains("INFO td: TD built") && err.contains("end-of-run audit"),
        "{err}"
    );
    let q = tdxlab(&[&["-q"][..], &args].concat());
    let err = String::from_utf8_lossy(&q.stderr);
    assert_eq!(q.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    assert!(String::from_utf8_lossy(&q.stdout).contains(": PASSED in "));
}

/// `stress --json | head -1`: stdout's reader leaves before the report is written, and the
/// summary (on stderr under --json) is already out: the verdict is not lost, and the run
/// ends as a closed pipe does (141).
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_closed_stdout_under_json_keeps_the_summary() {
    require_kvm!();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tdxlab"))
        .args(["stress", "--json", "--scenario", "explicit", "--vcpus", "1"])
        .args(["--seconds", "0", "--no-measure"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(": PASSED in "), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}
