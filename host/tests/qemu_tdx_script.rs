//! `scripts/qemu-tdx.sh`: the QEMU command it runs (`--dry-run`), and on a host without TDX
//! (every development and CI machine) a refusal per failed preflight check, one line each,
//! exit 3, nothing started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn script(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("bash")
        .arg(root().join("scripts/qemu-tdx.sh"))
        .args(args)
        .env("TDXLAB", env!("CARGO_BIN_EXE_tdxlab"))
        .envs(env.iter().copied())
        .output()
        .expect("run bash")
}

#[test]
fn dry_run_prints_qemus_tdx_command_with_the_exit_device() {
    let out = script(
        &["--dry-run", "--mem", "4G", "--smp", "4", "-d", "int"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let cmd = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        cmd.trim_end(),
        "qemu-system-x86_64 -accel kvm -cpu host -object tdx-guest,id=tdx0 \
         -machine q35,kernel-irqchip=split,confidential-guest-support=tdx0 \
         -bios target/tdxlab-guest.fd -m 4G -smp 4 -nographic \
         -device isa-debug-exit,iobase=0xf4,iosize=0x04 -d int"
    );
}

/// Without the exit device, QEMU's own command stays as its documentation has it; the guest
/// then powers off through ACPI.
#[test]
fn dry_run_without_the_exit_device_leaves_it_out() {
    let out = script(&["--dry-run", "--no-debug-exit", "-d", "int"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let cmd = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        cmd.trim_end(),
        "qemu-system-x86_64 -accel kvm -cpu host -object tdx-guest,id=tdx0 \
         -machine q35,kernel-irqchip=split,confidential-guest-support=tdx0 \
         -bios target/tdxlab-guest.fd -m 2G -smp 2 -nographic -d int"
    );
}

fn refusals(out: &Output) -> Vec<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines().map(str::to_string).collect()
}

#[test]
fn without_qemu_every_failed_check_is_one_line_and_exit_3() {
    let out = script(&["--qemu", "/nonexistent/qemu-system-x86_64"], &[]);
    assert_eq!(out.status.code(), Some(3), "{:?}", refusals(&out));
    assert!(out.stdout.is_empty(), "nothing ran");
    let lines = refusals(&out);
    assert!(
        lines.iter().all(|l| l.starts_with("qemu-tdx: ")),
        "{lines:?}"
    );
    assert!(
        lines[0].contains("no /nonexistent/qemu-system-x86_64"),
        "{lines:?}"
    );
    if !Path::new("/sys/module/kvm_intel/parameters/tdx").exists() {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("kvm_intel is not loaded with TDX support")),
            "{lines:?}"
        );
    }
}

/// A QEMU that is too old, and one without TDX, each named on its own line.
#[test]
fn an_old_qemu_or_one_without_tdx_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("tdxlab-fake-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, version, objects, want) in [
        (
            "old",
            "9.2.0",
            "tdx-guest",
            "is version 9.2; TDX guests need QEMU 10.1 or newer",
        ),
        ("notdx", "10.1.0", "sev-guest", "has no tdx-guest object"),
    ] {
        let fake = dir.join(name);
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version {version}';; \
                 -object) echo 'List of user creatable objects:'; echo '  {objects}';; esac\n"
            ),
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
        let out = script(&["--qemu", fake.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(3));
        let lines = refusals(&out);
        assert!(lines.iter().any(|l| l.contains(want)), "{name}: {lines:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_smp_is_a_usage_error() {
    let out = script(&["--smp", "many"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(refusals(&out), ["qemu-tdx: --smp many is not a number"]);
}

/// A flag without its value is the documented usage error (exit 2, one line naming what it
/// needs), not bash's own `${2:?}` message and exit 1.
#[test]
fn a_flag_without_its_value_is_a_usage_error() {
    for (flag, want) in [
        ("--mem", "qemu-tdx: --mem needs a size"),
        ("--smp", "qemu-tdx: --smp needs a count"),
        ("--qemu", "qemu-tdx: --qemu needs a path"),
    ] {
        let out = script(&["--dry-run", flag], &[]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert_eq!(refusals(&out), [want]);
    }
}
