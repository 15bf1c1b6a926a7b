//! The `tdxlab` binary as a user runs it.

mod common;
use common::tdxlab;

#[test]
fn caps_reports_kvm_and_maxphyaddr() {
    require_kvm!();
    let out = tdxlab(&["caps", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("caps --json prints JSON");
    assert_eq!(v["kvm"]["api_version"], 12, "{v}");
    let maxphy = v["maxphyaddr"].as_u64().unwrap();
    let usable = v["problems"].as_array().unwrap().is_empty();
    assert_eq!(usable, maxphy >= 48, "verdict follows MAXPHYADDR: {v}");
    assert_eq!(out.status.code(), Some(if usable { 0 } else { 3 }));
    let text = tdxlab(&["caps"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("KVM API version 12"), "{text}");
    assert!(
        text.contains(&format!("host MAXPHYADDR            {maxphy} bits")),
        "{text}"
    );
}

#[test]
fn bad_usage_is_one_line_and_exit_2() {
    for args in [&["bogus"][..], &["caps", "--nope"][..]] {
        let out = tdxlab(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("tdxlab: "), "{err}");
    }
}

#[test]
fn help_lists_exit_codes() {
    let out = tdxlab(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("Exit codes:") && s.contains("caps"), "{s}");
}

#[test]
fn sim_trace_prints_each_removal_as_a_nested_tree() {
    let out = tdxlab(&[
        "sim",
        "--vcpus",
        "1",
        "--ops",
        "3",
        "--region-pages",
        "4",
        "--seed",
        "5",
        "--trace",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("tdx_sept_remove_private_spte"))
        .expect(&err);
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(lines[at]);
    let steps: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| indent(l) > base)
        .map(|l| l.trim_start())
        .collect();
    let names: Vec<&str> = steps
        .iter()
        .map(|s| s.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "TDH.MEM.RANGE.BLOCK",
            "TDH.MEM.TRACK",
            "kick",
            "TDH.MEM.PAGE.REMOVE",
            "TDH.PHYMEM.PAGE.WBINVD"
        ],
        "{err}"
    );
    assert!(err.contains("kvm_tdp_mmu_unmap_gfn_range"), "{err}");
}

#[test]
fn sim_json_reports_the_required_fields_and_zap_table_json_has_every_row() {
    let out = tdxlab(&["sim", "--vcpus", "2", "--ops", "100", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "conversions",
        "accepts",
        "zaps",
        "invariant_checks",
        "invariant_violations",
        "stale_tlb_reads",
        "data_mismatches",
        "private_leaks",
        "elapsed_s",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    assert!(v["conversions"].as_u64().unwrap() > 0);
    let out = tdxlab(&["zap-table", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 30);
    let row = rows
        .iter()
        .find(|r| r["policy"] == "v19" && r["caller"] == "mmu_notifier" && r["vm"] == "td")
        .unwrap();
    assert_eq!(row["roots_zapped"], serde_json::json!(["direct"]));
    assert_eq!(row["flush_preserved"], false);
}

#[test]
fn sim_rejects_bad_flags_in_one_line() {
    for args in [
        &["sim", "--vcpus", "0"][..],
        &["sim", "--zap-policy", "nope"][..],
        &["sim", "--inject-retry", "1.5"][..],
        &["sim", "--private-page-size", "1g"][..],
    ] {
        let out = tdxlab(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
