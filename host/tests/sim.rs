//! The simulator end to end: the correct policies stay clean under concurrency and injection;
//! v19's dropped flush shows as stale TLB use, reproducibly for a fixed seed.

use shared_abi::PageLevel;
use tdxlab::kvm::ZapPolicy;
use tdxlab::sim::{run, SimConfig, SimReport};

fn cfg(policy: ZapPolicy, vcpus: u32, ops: u64, seed: u64) -> SimConfig {
    SimConfig {
        vcpus,
        ops,
        seed,
        policy,
        region_pages: 1024,
        ..Default::default()
    }
}

fn assert_clean(r: &SimReport) {
    assert!(r.clean(), "{r:#?}");
    assert!(
        r.conversions > 0 && r.zaps.direct > 0 && r.zaps.mirror > 0 && r.host_invalidations > 0,
        "{r:#?}"
    );
    assert!(r.invariant_checks > 1);
}

#[test]
fn filter_and_exclude_are_clean_on_four_vcpus() {
    for policy in [ZapPolicy::Filter, ZapPolicy::Exclude] {
        for seed in [1, 2, 3] {
            let r = run(&cfg(policy, 4, 400, seed));
            assert_clean(&r);
            assert_eq!(r.flushes_dropped, 0);
        }
    }
}

#[test]
fn clean_with_retry_injection_and_2m_private_pages() {
    let mut c = cfg(ZapPolicy::Filter, 3, 400, 11);
    c.retry_p = 0.5;
    c.private_max_level = PageLevel::Size2M;
    let r = run(&c);
    assert_clean(&r);
    assert!(r.map_gpa_retries_injected > 0, "{r:#?}");
}

#[test]
fn v19_shows_stale_tlb_use_reproducibly_for_a_fixed_seed() {
    let c = cfg(ZapPolicy::V19, 1, 1000, 3);
    let a = run(&c);
    let b = run(&c);
    assert!(a.flushes_dropped > 0, "{a:#?}");
    assert!(
        a.stale_tlb_reads > 0,
        "the lost flush leaves stale shared translations: {a:#?}"
    );
    assert!(
        a.data_mismatches > 0,
        "writes through them are lost: {a:#?}"
    );
    assert!(
        a.errors.is_empty() && a.invariant_violations == 0 && a.private_leaks == 0,
        "{a:#?}"
    );
    assert_eq!(
        (
            a.stale_tlb_reads,
            a.data_mismatches,
            a.flushes_dropped,
            a.conversions
        ),
        (
            b.stale_tlb_reads,
            b.data_mismatches,
            b.flushes_dropped,
            b.conversions
        ),
        "one vCPU and a fixed seed replay exactly"
    );
    // Same seed, correct policy: nothing.
    let f = run(&cfg(ZapPolicy::Filter, 1, 1000, 3));
    assert_clean(&f);
}

#[test]
fn v19_drops_flushes_on_many_vcpus_too() {
    let r = run(&cfg(ZapPolicy::V19, 4, 600, 7));
    assert!(r.flushes_dropped > 0 && r.errors.is_empty(), "{r:#?}");
}

/// The soak's short version: 4 vCPUs for 2 s with MapGPA RETRY, accept BUSY, 2 MiB private
/// pages and the simulated host's page migrations — clean, and every injection happened.
#[test]
fn a_short_soak_with_every_injection_stays_clean() {
    let r = tdxlab::sim::run(&SimConfig {
        ops: u64::MAX,
        seconds: Some(2.0),
        retry_p: 0.1,
        busy_p: 0.1,
        private_max_level: PageLevel::Size2M,
        ..cfg(ZapPolicy::Filter, 4, 0, 7)
    });
    assert_clean(&r);
    assert!(r.accept_busy_injected > 0, "{r:#?}");
    assert!(r.map_gpa_retries_injected > 0, "{r:#?}");
    assert!(r.invariant_violations == 0 && r.errors.is_empty(), "{r:#?}");
}

#[test]
fn sim_inject_flags_are_parsed_and_checked() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tdxlab"))
        .args([
            "sim",
            "--ops",
            "200",
            "--inject",
            "busy=0.2,retry=0.1",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["accept_busy_injected"].as_u64().unwrap() > 0, "{v}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tdxlab"))
        .args(["sim", "--inject", "host-invalidate-hz=5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
