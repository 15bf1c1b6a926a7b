//! Helpers shared by the tests that run the `tdxlab` binary.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Run `tdxlab` with `args`.
pub fn tdxlab(args: &[&str]) -> Output {
    tdxlab_env(args, &[])
}

/// Run `tdxlab` with `args` and extra environment variables (the test-only switches).
pub fn tdxlab_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tdxlab"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run tdxlab")
}

/// True when /dev/kvm can be opened read-write.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The GPAW `tdxlab caps` says an emulated TD gets on this host (52 or 48, or the host's
/// MAXPHYADDR below 48): what every run without `--gpaw` uses.
pub fn host_gpaw() -> u32 {
    let out = tdxlab(&["caps", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("caps --json");
    v["td_gpaw"].as_u64().expect("caps names the TD's GPAW") as u32
}

/// The GPAWs a KVM test covers: the host's own, and the non-architectural widths of the
/// small-MAXPHYADDR Intel hosts (39: clients, 46: many Xeons) that this host can address.
pub fn test_gpaws() -> Vec<u32> {
    let host = host_gpaw();
    let mut v = vec![host];
    v.extend([39, 46].into_iter().filter(|g| *g < host));
    v
}

/// The KVM tests are `#[ignore]`d, so a host without a usable /dev/kvm counts them as
/// skipped; `--include-ignored` runs them, and then a missing /dev/kvm is a failure, not a
/// silent pass.
#[macro_export]
macro_rules! require_kvm {
    () => {
        assert!(
            common::kvm_usable(),
            "this test needs a usable /dev/kvm (run it with --include-ignored only where there is one)"
        );
    };
}

/// What a `tdxlab run` left behind: exit code, stdout, stderr and its JSON report.
pub struct Run {
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
    pub report: serde_json::Value,
}

/// Run `tdxlab` with `args` plus `--report <temp file>`, and read the report back
/// (`Null` when the run wrote none).
pub fn run_with_report(args: &[&str]) -> Run {
    run_with_report_env(args, &[])
}

/// [`run_with_report`] with extra environment variables.
pub fn run_with_report_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("tdxlab-test-{}-{n}.json", std::process::id()));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--report", path.to_str().expect("temp paths are UTF-8")]);
    let o = tdxlab_env(&all, env);
    let report = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    std::fs::remove_file(&path).ok();
    Run {
        code: o.status.code(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
        report,
    }
}

/// Boot `image` (written to a temporary file named after `tag`) with `tdxlab run --image`
/// on one vCPU and expect a refusal before boot: exit 3 and one line, which is returned.
pub fn refused_image_error(tag: &str, image: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("tdxlab-{tag}-{}.bin", std::process::id()));
    std::fs::write(&path, image).unwrap();
    let out = tdxlab(&["run", "--image", path.to_str().unwrap(), "--vcpus", "1"]);
    std::fs::remove_file(&path).ok();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// `tdxlab ARGS` is a usage error: exit 2, one line on stderr containing `want`, nothing on
/// stdout (nothing booted).
pub fn assert_usage_error(args: &[&str], want: &str) {
    let out = tdxlab(args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "nothing booted: {args:?}");
}

/// The data an `--html` map page embeds (`const DATA = {…};`), parsed.
pub fn map_data(page: &str) -> serde_json::Value {
    let data = page
        .split("const DATA = ")
        .nth(1)
        .and_then(|r| r.split(";\n").next())
        .expect("the page embeds its data");
    serde_json::from_str(data).expect("the data is JSON")
}

/// Conversions counted over every cell and column of a map's data.
pub fn map_conversions(data: &serde_json::Value) -> u64 {
    (data["cols"].as_array().expect("columns").iter())
        .flat_map(|c| c["c"].as_array().expect("counts").clone())
        .map(|x| x[1].as_u64().unwrap() + x[2].as_u64().unwrap())
        .sum()
}

/// Conversions in a map's timeline: each conversion the VMM served, counted once.
pub fn map_total_conversions(data: &serde_json::Value) -> u64 {
    (data["cols"].as_array().expect("columns").iter())
        .map(|c| c["n"][0].as_u64().unwrap() + c["n"][1].as_u64().unwrap())
        .sum()
}
