//! `--trace` from the command line: each line names its vCPU and time, the guest's steps
//! appear, the filters keep whole steps of one vCPU or one range, and bad trace flags are
//! usage errors (exit 2, one line). On the simulator, so it runs on every host.

mod common;
use common::tdxlab;

fn trace_lines(extra: &[&str]) -> Vec<String> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("tdxlab-trace-{}-{n}.txt", std::process::id()));
    let p = path.to_str().unwrap();
    let mut args = vec![
        "sim",
        "--vcpus",
        "2",
        "--ops",
        "40",
        "--trace",
        "--trace-out",
        p,
    ];
    args.extend_from_slice(extra);
    let o = tdxlab(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    text.lines().map(str::to_string).collect()
}

/// A line: "<time>ms <vCPU> <indented step>".
fn vcpu_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or("")
}

#[test]
fn every_line_has_a_time_and_a_vcpu_and_the_guest_steps_show() {
    let lines = trace_lines(&[]);
    assert!(
        lines[0].contains("boot-time steps before the first MapGPA left out"),
        "{}",
        lines[0]
    );
    let steps = &lines[1..];
    assert!(steps.len() > 100);
    assert!(steps.iter().all(|l| l
        .split_whitespace()
        .next()
        .is_some_and(|t| t.ends_with("ms"))));
    assert!(steps.iter().any(|l| vcpu_of(l) == "v0") && steps.iter().any(|l| vcpu_of(l) == "v1"));
    assert!(steps
        .iter()
        .any(|l| l.contains("guest: TDG.VP.VMCALL<MapGPA> to shared")));
    assert!(steps
        .iter()
        .any(|l| l.contains("guest: PTEs get the shared bit; INVLPG")));
    assert!(steps.iter().any(|l| l.contains("level=4K")));
    assert!(!steps
        .iter()
        .any(|l| l.contains("sub=?") || l.contains(" hpa=")));
}

#[test]
fn filters_keep_one_vcpu_or_one_range_and_boot_on_request() {
    let v1 = trace_lines(&["--trace-vcpu", "1"]);
    assert!(v1[1..].iter().all(|l| vcpu_of(l) == "v1"), "{:?}", &v1[..5]);
    // vCPU 1 owns the second 4 MiB region: steps there are vCPU 1's alone.
    let range = trace_lines(&["--trace-gpa", "0x400000-0x800000"]);
    assert!(range.len() > 1 && range[1..].iter().all(|l| vcpu_of(l) == "v1"));
    let boot = trace_lines(&["--trace-boot"]);
    assert!(!boot[0].contains("left out"));
    assert!(boot.len() > v1.len());
}

#[test]
fn bad_trace_flags_are_usage_errors() {
    for args in [
        &["sim", "--trace-vcpu", "1"][..],
        &["sim", "--trace", "--trace-gpa", "0x4000-0x1000"],
        &[
            "sim",
            "--trace",
            "--trace-out",
            "/nonexistent/dir/trace.txt",
        ],
    ] {
        let o = tdxlab(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

/// `RUST_LOG`'s log lines spell a level as the `--trace` tree does (`level=4K`), never as
/// the raw number (`level=0`).
#[test]
fn log_lines_spell_levels_as_page_sizes_as_the_trace_does() {
    let o = common::tdxlab_env(
        &["sim", "--vcpus", "1", "--ops", "20"],
        &[("RUST_LOG", "kvm=debug,seam=trace")],
    );
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    let levels: Vec<&str> = (err.split("level=").skip(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .collect();
    assert!(!levels.is_empty(), "{err}");
    for l in levels {
        assert!(["4K", "2M", "1G", "512G"].contains(&l), "level={l}");
    }
}
