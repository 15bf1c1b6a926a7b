//! The `tdxlab` binary as a user runs it.

use std::process::Command;

fn tdxlab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tdxlab"))
        .args(args)
        .output()
        .expect("run tdxlab")
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[test]
fn caps_reports_kvm_and_maxphyaddr() {
    if !kvm_usable() {
        println!("SKIPPED: no usable /dev/kvm");
        return;
    }
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
