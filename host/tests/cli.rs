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
    assert!(
        usable,
        "a host with KVM and userfaultfd can run emulated TDs: {v}"
    );
    assert_eq!(out.status.code(), Some(0));
    // The GPAW follows MAXPHYADDR: 52, 48, or the host's own width below 48.
    let gpaw = match maxphy {
        52.. => 52,
        48..=51 => 48,
        n => n,
    };
    assert_eq!(v["td_gpaw"], gpaw, "{v}");
    assert_eq!(v["shared_bit"], gpaw - 1, "{v}");
    assert_eq!(v["gpaw_non_architectural"], gpaw < 48, "{v}");
    assert!(
        v["enforcement"]
            .as_str()
            .unwrap()
            .starts_with("userfaultfd"),
        "{v}"
    );
    assert_eq!(v["userfaultfd_error"], serde_json::Value::Null, "{v}");
    let text = tdxlab(&["caps"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("KVM API version 12"), "{text}");
    assert!(
        text.contains(&format!("host MAXPHYADDR            {maxphy} bits")),
        "{text}"
    );
    assert!(
        text.contains(&format!("TD GPAW                    {gpaw} ")),
        "{text}"
    );
    assert!(
        text.contains(
            "enforcement                userfaultfd (MISSING+MINOR on the memslot views): ok"
        ),
        "{text}"
    );
}

#[test]
fn gpaw_flags_outside_the_range_or_the_host_are_refused() {
    let out = tdxlab(&["run", "--gpaw", "35"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("'35' is not a GPA width (36..=52)"), "{err}");
    let out = tdxlab(&["sim", "--gpaw", "53"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_gpaw_wider_than_the_host_is_one_line_and_exit_3() {
    require_kvm!();
    let caps = tdxlab(&["caps", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&caps.stdout).unwrap();
    let maxphy = v["maxphyaddr"].as_u64().unwrap();
    if maxphy >= 52 {
        println!("SKIPPED: this host addresses 52 bits, every GPAW fits");
        return;
    }
    let want = maxphy + 1;
    let out = tdxlab(&["run", "--gpaw", &want.to_string()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "--gpaw {want} needs a host MAXPHYADDR of at least {want} bits (this host: {maxphy})"
        )),
        "{err}"
    );
}

#[test]
fn sim_runs_clean_at_every_gpaw() {
    for gpaw in ["36", "39", "46", "48", "52"] {
        let out = tdxlab(&[
            "sim", "--vcpus", "2", "--ops", "300", "--gpaw", gpaw, "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "GPAW {gpaw}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["private_leaks"], 0, "GPAW {gpaw}: {v}");
        assert_eq!(v["data_mismatches"], 0, "GPAW {gpaw}: {v}");
        assert!(v["conversions"].as_u64().unwrap() > 0, "GPAW {gpaw}: {v}");
        assert_eq!(v["gpaw"].to_string(), gpaw, "{v}");
    }
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
