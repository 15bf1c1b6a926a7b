//! The emulated TD on real KVM: the built-in guest image boots on 1 and 4 vCPUs, every vCPU
//! reaches Rust and talks to the TDX module model through the doorbell; bad input is refused
//! in one line.

mod common;
use common::{run_with_report, run_with_report_env, tdxlab};

fn boot(vcpus: u32) {
    for gpaw in common::test_gpaws() {
        boot_at(vcpus, gpaw);
    }
}

fn boot_at(vcpus: u32, gpaw: u32) {
    let run = run_with_report(&[
        "run",
        "--vcpus",
        &vcpus.to_string(),
        "--timeout",
        "60",
        "--gpaw",
        &gpaw.to_string(),
    ]);
    let (stdout, r) = (&run.out, &run.report);
    assert_eq!(run.code, Some(0), "GPAW {gpaw}: {stdout}\n{}", run.err);
    assert_eq!(r["gpaw"], gpaw, "{r}");
    assert_eq!(r["shared_bit"], gpaw - 1, "{r}");
    assert_eq!(r["gpaw_non_architectural"], gpaw != 48 && gpaw != 52, "{r}");
    assert!(run.err.contains(&format!("GPAW {gpaw}")), "{}", run.err);
    assert_eq!(r["exit"]["kind"], "guest", "{r}");
    assert_eq!(r["exit"]["code"], 0);
    assert_eq!(r["vcpus"], vcpus);
    assert_eq!(
        r["tdcalls"]["TDG.VP.INFO"], vcpus,
        "each vCPU asked the module who it is: {r}"
    );
    assert!(r["tdvmcalls"]["Instruction.IO"].as_u64().unwrap() > 0);
    assert!(r["boot_ms"].as_f64().unwrap() > 0.0);
    // MAX_VCPUS is KVM 6.16's: the host's present CPUs (`tdx_vm_init`), raised to the vCPU
    // count where tdxlab runs more.
    let present = std::fs::read_to_string("/sys/devices/system/cpu/present").unwrap();
    let max = present.trim().split(',').fold(0, |n, r| {
        let (lo, hi) = r.split_once('-').unwrap_or((r, r));
        n + hi.parse::<u32>().unwrap() - lo.parse::<u32>().unwrap() + 1
    });
    let max = max.min(1024).max(vcpus);
    for i in 0..vcpus {
        let line = format!(
            "[guest] vCPU {i}: online (TDG.VP.INFO: index {i}, {vcpus} of at most {max} vCPUs, GPAW {gpaw})"
        );
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    // TDG.VP.INFO offered TDG.SYS.RD (module 1.5), and vCPU 0 read TDX_FEATURES0 with it:
    // the value module 1.5 reports (`md_sys_get_first_element_val_and_ptr`).
    assert!(
        stdout.contains("[guest] TDX module: TDX_FEATURES0 0xf0ebf (TDG.SYS.RD)"),
        "{stdout}"
    );
    assert_eq!(r["tdcalls"]["TDG.SYS.RD"], 1, "{r}");
    for i in 0..vcpus {
        let line = format!("[guest] vCPU {i}: accepted 2052 KiB");
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains(&format!(
            "[guest] all {vcpus} vCPUs passed the conversion round trip"
        )),
        "{stdout}"
    );
    // The default workload converted 16 pages per vCPU both ways through the whole path.
    assert_eq!(r["conversions_to_shared"], vcpus);
    assert_eq!(r["conversions_to_private"], vcpus);
    assert_eq!(r["zaps"]["mirror"], 16 * vcpus, "{r}");
    assert_eq!(r["zaps"]["direct"], 16 * vcpus, "{r}");
    assert_eq!(r["tdvmcalls"]["MapGPA"], 2 * vcpus);
    assert_eq!(
        r["host_checks"],
        2 * vcpus,
        "SYNC_SHARED and SYNC_PRIVATE per vCPU: {r}"
    );
    assert_eq!(r["host_check_mismatches"], 0);
    assert_eq!(
        r["exits_on_mapped_private"], 0,
        "every accepted page is mapped for the guest: {r}"
    );
    let window = format!(
        "[guest] INFO: shared window: 256 MiB of RAM in 4 ranges at 0xffff800000000000 (shared bit {})",
        gpaw - 1
    );
    assert!(stdout.contains(&window), "{stdout}");
    assert!(
        stdout.contains("[guest] INFO: heap: 1024 KiB at 0x300000"),
        "the heap is accepted and logged: {stdout}"
    );
    assert!(r["accepted_bytes"].as_u64().unwrap() >= vcpus as u64 * ((2 << 20) + 4096 + 16 * 4096));
    assert!(r["ept_violations"].as_u64().unwrap() > 0 && r["kicks"].as_u64().unwrap() > 0);
}

fn misbehave(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tdxlab(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn touching_unaccepted_private_memory_stops_the_td() {
    require_kvm!();
    let (code, out, err) = misbehave(&["run", "--vcpus", "2", "--misbehave", "touch-unaccepted"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("vCPU 0: access before accept: private gpa 0x4000000 is PENDING (RIP 0x"),
        "{err}"
    );
    assert!(!out.contains("host let it happen"), "{out}");
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn strict_alias_mismatch_stops_the_td_and_non_strict_converts() {
    require_kvm!();
    let (code, out, err) = misbehave(&[
        "run",
        "--vcpus",
        "2",
        "--strict",
        "--misbehave",
        "alias-mismatch",
    ]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    let gpa = (1u64 << (common::host_gpaw() - 1)) | 0x600_0000;
    let want = format!("vCPU 0: shared access to gpa {gpa:#x} whose attribute is private (--strict forbids implicit conversion) (RIP 0x");
    assert!(err.contains(&want), "{err}");
    let (code, out, err) = misbehave(&["run", "--vcpus", "2", "--misbehave", "alias-mismatch"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("[guest] implicit conversion to shared: read back 0x1234"),
        "{out}"
    );
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn boots_on_one_vcpu() {
    require_kvm!();
    boot(1);
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn boots_on_four_vcpus() {
    require_kvm!();
    boot(4);
}

#[test]
fn bad_run_flags_are_refused_before_boot_with_exit_2() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["run", "--mem", "8M"],
            "is not a multiple of 2 MiB from 16 MiB to 16384 MiB",
        ),
        (&["run", "--mem", "101M"], "is not a multiple of 2 MiB"),
        (&["run", "--mem", "64G"], "is not a multiple of 2 MiB"),
        (&["run", "--mem", "lots"], "is not a size"),
        (&["run", "--vcpus", "0"], "0 is not in 1..=64"),
        (
            &["run", "--timeout", "0"],
            "'0' is not a number of seconds of at least 1",
        ),
        (
            &["run", "--vcpus", "4", "--mem", "16M"],
            "--mem 16 MiB is too small for 4 vCPUs of the default workload (needs 20 MiB)",
        ),
    ];
    for (args, want) in cases {
        common::assert_usage_error(args, want);
    }
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_bad_image_is_one_line_and_exit_3() {
    require_kvm!();
    let bad = std::env::temp_dir().join(format!("tdxlab-bad-{}.bin", std::process::id()));
    std::fs::write(&bad, vec![0u8; 64 << 10]).unwrap();
    let out = tdxlab(&["run", "--image", bad.to_str().unwrap()]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a loadable TDVF image"), "{err}");
    std::fs::remove_file(&bad).ok();
}

#[test]
fn the_built_in_image_passes_qemus_checks() {
    let info = tdxlab::image::describe(tdxlab::GUEST_IMAGE).unwrap();
    let kinds: Vec<&str> = info.sections.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, ["BFV", "TEMP_MEM", "TD_HOB"]);
    assert_eq!(info.image_size as u64, tdxlab::pack::IMAGE_SIZE);
    assert_eq!(info.sections[0].attributes, 1, "the BFV is measured");
    let img = tdxlab::GUEST_IMAGE;
    assert_eq!(
        img[img.len() - 16],
        0xE9,
        "reset vector: jmp rel32 at 0xFFFFFFF0"
    );
    let rel = i32::from_le_bytes(img[img.len() - 15..img.len() - 11].try_into().unwrap());
    let target = 0xFFFF_FFF5u32.wrapping_add(rel as u32) as u64;
    assert!(
        (tdxlab::pack::IMAGE_BASE..tdxlab::pack::METADATA_PAGE).contains(&target),
        "{target:#x}"
    );
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn bench_doorbell_reports_both_round_trips() {
    require_kvm!();
    let out = tdxlab(&["bench", "doorbell", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["samples"], 1000);
    let spread = |k: &str| {
        let s = &v[k];
        let f = |q: &str| s[q].as_u64().unwrap_or_else(|| panic!("{k}.{q}: {v}"));
        (f("min_cycles"), f("median_cycles"), f("p90_cycles"))
    };
    let ((t0, t, t9), (b0, b, b9)) = (spread("tdcall"), spread("bare_exit"));
    assert!(0 < t0 && t0 <= t && t <= t9, "{v}");
    assert!(0 < b0 && b0 <= b && b <= b9, "{v}");
    assert!(v["tsc_hz"].as_f64().unwrap() > 1e8, "{v}");
    let ratio = v["tdcall_vs_bare_exit"].as_f64().unwrap();
    assert!((ratio - t as f64 / b as f64).abs() < 1e-6);
    // --samples reaches the guest.
    let out = tdxlab(&["bench", "doorbell", "--samples", "37", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["samples"], 37);
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn accept_all_accepts_every_unaccepted_byte_and_times_it() {
    require_kvm!();
    let run = run_with_report(&["run", "--vcpus", "1", "--mem", "32M", "--accept-all"]);
    let (stdout, r) = (&run.out, &run.report);
    assert_eq!(run.code, Some(0), "{stdout}");
    // 32 MiB minus the 1 MiB TEMP_MEM and 8 KiB TD_HOB the host added before boot and the
    // 1 MiB heap the guest accepted first.
    let expect = (32u64 << 20) - (1 << 20) - 8192 - (1 << 20);
    assert!(
        stdout.contains(&format!("[guest] accepted all RAM: {expect} bytes in ")),
        "{stdout}"
    );
    assert!(r["accept_all_s"].as_f64().unwrap() > 0.0, "{r}");
    // The default workload then finds its region already accepted, and still converts.
    assert!(
        stdout.contains("[guest] vCPU 0: accepted 0 KiB"),
        "{stdout}"
    );
    assert_eq!(r["exit"]["kind"], "guest");
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_hung_guest_times_out_naming_each_vcpus_rip() {
    require_kvm!();
    let (code, out, err) = misbehave(&[
        "run",
        "--vcpus",
        "2",
        "--misbehave",
        "hang",
        "--timeout",
        "2",
    ]);
    assert_eq!(code, Some(4), "{out}\n{err}");
    assert!(
        err.contains("the guest did not finish within 2 s; vCPU 0 at RIP 0x"),
        "{err}"
    );
    assert!(err.contains(", vCPU 1 at RIP 0x"), "{err}");
    // Every vCPU was stopped somewhere in the guest's code (the firmware window below 4 GiB),
    // not reported as RIP 0 (a vCPU whose RIP the host never read).
    assert!(
        !err.contains("at RIP 0x0,") && !err.contains("at RIP 0x0)"),
        "{err}"
    );
}

/// Without isa-debug-exit (QEMU without `-device isa-debug-exit`), the guest loads QEMU's
/// ACPI tables from fw_cfg, finds PM1a_CNT and `_S5`, and powers off: exit code 0. A failing
/// guest reports a fatal error instead.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn without_the_exit_device_the_guest_powers_off_through_acpi() {
    require_kvm!();
    let run = run_with_report(&["run", "--vcpus", "3", "--no-debug-exit"]);
    let (code, out, err, r) = (run.code, &run.out, &run.err, &run.report);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(r["exit"]["kind"], "power_off", "{r}");
    assert_eq!(r["settings"]["debug_exit"], false, "{r}");
    assert!(
        out.contains(
            "[guest] ACPI: 3 CPUs in the MADT; powering off: S5 (SLP_TYP 0) to PM1a_CNT 0x604"
        ),
        "{out}"
    );
    let failed = run_with_report(&[
        "run",
        "--vcpus",
        "1",
        "--no-debug-exit",
        "--misbehave",
        "fault",
    ]);
    assert_eq!(failed.code, Some(1), "{}", failed.err);
    assert_eq!(failed.report["exit"]["kind"], "fatal", "{}", failed.report);
}

/// `run --trace`: the guest sends its conversion steps over the console, which the tree shows
/// as the guest's (not as console output), beside the host's steps and the console lines.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_traced_run_shows_the_guests_steps_and_names_each_call() {
    require_kvm!();
    let path = std::env::temp_dir().join(format!("tdxlab-kvm-trace-{}.txt", std::process::id()));
    let p = path.to_str().unwrap();
    let run = run_with_report(&["run", "--vcpus", "1", "--trace", "--trace-out", p]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.out, run.err);
    let t = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    for want in [
        "v0   guest: PTEs get the shared bit; INVLPG each page gpa=0x",
        "v0   guest: TDG.VP.VMCALL<MapGPA> to shared",
        "v0   tdx_emulate_vmcall sub=MapGPA r12=0x",
        "v0   tdx_emulate_vmcall sub=tdxlab host check op=SYNC_SHARED",
        "v0   console (COM1): vCPU 0: accepted",
    ] {
        assert!(t.contains(want), "missing {want:?}");
    }
    assert!(
        !run.out.contains("trace: "),
        "guest steps are not console output"
    );
}

/// A raw HLT is not executed in a TD: the module makes it a #VE (reason 12), the guest's
/// handler asks for TDVMCALL<HLT> with interrupts blocked, and KVM blocks the vCPU for good.
/// The idle vCPU 1 parks the same way (at most one #VE each).
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_raw_hlt_is_a_ve_and_blocks_in_tdvmcall_hlt() {
    require_kvm!();
    let run = run_with_report(&[
        "run",
        "--vcpus",
        "2",
        "--misbehave",
        "halt",
        "--timeout",
        "3",
    ]);
    let (code, out, err, r) = (run.code, &run.out, &run.err, &run.report);
    assert_eq!(code, Some(4), "{out}\n{err}");
    assert!(
        out.contains("[guest] halting with interrupts off, as asked"),
        "{out}"
    );
    // The guest's handler refuses a HLT #VE whose RIP is not on the HLT or whose length is 0
    // (`check_hlt_at_rip`): module 1.5 reports it fault-like, as the host now does.
    assert!(err.contains("the guest did not finish within 3 s"), "{err}");
    let hlt = r["ves_hlt"].as_u64().unwrap();
    assert!((1..=2).contains(&hlt), "one HLT #VE per halted vCPU: {r}");
    assert_eq!(
        r["tdvmcalls"]["Instruction.HLT"], hlt,
        "each #VE became a TDVMCALL<HLT>: {r}"
    );
    assert_eq!(r["exits"]["other"], hlt, "and no HLT exit came back: {r}");
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_guest_exception_is_reported_with_vector_and_rip() {
    require_kvm!();
    let (code, out, err) = misbehave(&["run", "--vcpus", "2", "--misbehave", "fault"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("[guest] EXCEPTION vector 6 (#UD invalid opcode) at RIP 0x"),
        "{out}"
    );
    assert!(
        err.contains("vCPU 0 reported a fatal error: exception 6 at RIP 0x"),
        "{err}"
    );
    // The guest's own line in full on stderr, with its vCPU and the RIP named.
    assert!(
        err.contains("[guest vCPU 0] EXCEPTION vector 6 (#UD invalid opcode) at RIP 0x")
            && err.contains("(tdxlab_guest::workloads::round_trip::misbehave_if_asked+0x"),
        "{err}"
    );
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn raw_port_io_is_served_through_the_ve_handler() {
    require_kvm!();
    let run = run_with_report(&["run", "--vcpus", "2", "--misbehave", "raw-io"]);
    let (code, out, err, r) = (run.code, &run.out, &run.err, &run.report);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("[guest] raw OUT to COM1 through #VE"), "{out}");
    assert!(
        out.contains("[guest] raw IN through #VE: COM1 LSR 0x60, port 0x80 0xff"),
        "{out}"
    );
    let ves = r["ves_injected"].as_u64().unwrap();
    // vCPU 1 may have parked with a HLT (#VE) before the TD ended.
    let io_ves = ves - r["ves_hlt"].as_u64().unwrap();
    assert_eq!(
        io_ves,
        "raw OUT to COM1 through #VE\n".len() as u64 + 3,
        "{r}"
    );
    assert_eq!(
        r["tdcalls"]["TDG.VP.VEINFO.GET"], ves,
        "one VEINFO.GET per #VE: {r}"
    );
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_triple_fault_is_reported_with_the_vcpu() {
    require_kvm!();
    let (code, out, err) = misbehave(&["run", "--vcpus", "2", "--misbehave", "triple-fault"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("triple_fault (vCPU 0 triple-faulted (RIP 0x")
            || err.contains(AMD_SHUTDOWN_RESET),
        "{err}"
    );
}

/// What a triple fault says on AMD, where KVM INITs the vCPU at the shutdown intercept.
const AMD_SHUTDOWN_RESET: &str = "triple-faulted (RIP unknown: KVM reset the vCPU at the shutdown";

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_planted_private_leak_fails_the_host_check_and_the_run() {
    require_kvm!();
    let run = run_with_report_env(
        &["run", "--vcpus", "1"],
        &[(tdxlab::cmd::TEST_PLANT_LEAK_ENV, "1")],
    );
    let (code, out, err, r) = (run.code, &run.out, &run.err, &run.report);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("reported a fatal error: SYNC_PRIVATE: host sees 0x33"),
        "{err}"
    );
    assert_eq!(r["host_check_mismatches"], 1, "{r}");
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn injected_map_gpa_retries_are_resumed_by_the_guest() {
    require_kvm!();
    // The explicit scenario converts 4 MiB at once: two 2 MiB chunks, and KVM's only RETRY
    // point between them. With an event always pending, every such call is cut there.
    let run = run_with_report(&[
        "stress",
        "--scenario",
        "explicit",
        "--vcpus",
        "1",
        "--seconds",
        "0",
        "--no-measure",
        "--inject",
        "retry=1.0",
    ]);
    let (code, out, err, r) = (run.code, &run.out, &run.err, &run.report);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let retries = r["map_gpa_retries_injected"].as_u64().unwrap();
    assert!(retries > 0, "{r}");
    // Each RETRY costs the guest exactly one more MapGPA call (it resumes from R11).
    let calls = r["vcpu_results"][0]["conversions"].as_u64().unwrap();
    assert_eq!(
        r["tdvmcalls"]["MapGPA"].as_u64().unwrap(),
        calls + retries,
        "{r}"
    );
    assert_eq!(r["host_check_mismatches"], 0);
    assert_eq!(r["exits_on_mapped_private"], 0);
}

/// The built-in image with its reset vector replaced: 32-bit code in the free middle of the
/// last page copies `out dx, al; hlt` to TEMP_MEM (GPA 0x100000), loads an empty IDT and a
/// GDT with a code segment based at `base`, and far-jumps to EIP 0 in it. With base
/// 0x100000 the vCPU executes a raw OUT at RIP 0 whose linear address is not its RIP (the
/// host must not read guest memory at RIP); with base 0 it fetches from GPA 0, unaccepted.
fn out_at_rip_zero_image(base: u32) -> Vec<u8> {
    let mut img = tdxlab::GUEST_IMAGE.to_vec();
    let end = img.len();
    let code_off = end - 4096 + 0x400;
    let code_addr = ((1u64 << 32) - 4096 + 0x400) as u32;
    let (idtr, gdtr, gdt) = (code_addr + 0x40, code_addr + 0x48, code_addr + 0x50);
    let mut code = Vec::new();
    // mov dword [0x100000], 0xF4F4F4EE  (out dx, al; hlt; hlt; hlt)
    code.extend([0xC7, 0x05, 0x00, 0x00, 0x10, 0x00, 0xEE, 0xF4, 0xF4, 0xF4]);
    // mov dx, 0x80
    code.extend([0x66, 0xBA, 0x80, 0x00]);
    // lidt [idtr]; lgdt [gdtr]
    code.extend([0x0F, 0x01, 0x1D]);
    code.extend(idtr.to_le_bytes());
    code.extend([0x0F, 0x01, 0x15]);
    code.extend(gdtr.to_le_bytes());
    // jmp far 0x08:0
    code.extend([0xEA, 0, 0, 0, 0, 0x08, 0x00]);
    img[code_off..code_off + code.len()].copy_from_slice(&code);
    // IDTR: limit 0 (every vector faults, ending in a triple fault); GDTR: two entries.
    img[code_off + 0x40..code_off + 0x46].fill(0);
    img[code_off + 0x48..code_off + 0x4A].copy_from_slice(&15u16.to_le_bytes());
    img[code_off + 0x4A..code_off + 0x4E].copy_from_slice(&gdt.to_le_bytes());
    // GDT: null, then a flat-limit 32-bit code segment at `base`.
    let b = base.to_le_bytes();
    let desc = [0xFF, 0xFF, b[0], b[1], b[2], 0x9A, 0xCF, b[3]];
    img[code_off + 0x50..code_off + 0x58].fill(0);
    img[code_off + 0x58..code_off + 0x60].copy_from_slice(&desc);
    // Reset vector: jmp rel32 to the code.
    let rel = code_addr.wrapping_sub(0xFFFF_FFF0 + 5);
    img[end - 16] = 0xE9;
    img[end - 15..end - 11].copy_from_slice(&rel.to_le_bytes());
    img
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn a_raw_out_at_rip_zero_is_a_clean_guest_failure() {
    require_kvm!();
    for (base, want, ves) in [
        // The OUT runs at RIP 0; its #VE meets an empty IDT (RIP 1: after KVM's completion;
        // on AMD the RIP is lost to KVM's reset at the shutdown, the #VE count still shows it).
        (0x10_0000, "vCPU 0 triple-faulted (RIP 0x1", 1),
        // The fetch from GPA 0 is refused before anything runs there.
        (0, "access before accept: private gpa 0x0 is", 0),
    ] {
        let path =
            std::env::temp_dir().join(format!("tdxlab-rip0-{base:x}-{}.bin", std::process::id()));
        std::fs::write(&path, out_at_rip_zero_image(base)).unwrap();
        let p = path.to_str().unwrap();
        let run = run_with_report(&["run", "--image", p, "--vcpus", "1", "--timeout", "30"]);
        std::fs::remove_file(&path).ok();
        assert_eq!(run.code, Some(1), "base {base:#x}: {}", run.err);
        let amd_reset = ves == 1 && run.err.contains(AMD_SHUTDOWN_RESET);
        assert!(
            run.err.contains(want) || amd_reset,
            "base {base:#x}: {}",
            run.err
        );
        assert!(!run.err.contains("panicked"), "{}", run.err);
        assert_eq!(run.report["ves_injected"], ves, "{}", run.report);
    }
}

#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn an_image_with_a_huge_td_hob_is_refused_in_one_line() {
    require_kvm!();
    use shared_abi::layout::tdvf::{write_descriptor, SectionType};
    let mut img = tdxlab::GUEST_IMAGE.to_vec();
    let mut sections = tdxlab::pack::sections();
    let hob = sections
        .iter_mut()
        .find(|s| s.section_type == SectionType::TdHob as u32)
        .unwrap();
    hob.memory_size = 2 << 20;
    write_descriptor(&mut img, tdxlab::pack::DESCRIPTOR_OFFSET, &sections).unwrap();
    let err = common::refused_image_error("bighob", &img);
    assert!(
        err.contains(
            "the image's TD_HOB section is 2048 KiB; tdxlab builds a TD HOB of at most 1024 KiB"
        ),
        "{err}"
    );
}

/// A TDVF image that does not speak the emulation doorbell (no tdxlab entry in its OVMF
/// table, like every real TDVF) is refused before anything boots: exit 3, one line.
#[test]
fn an_image_without_the_doorbell_is_refused_before_boot() {
    use shared_abi::layout::{guid, ovmf::write_table};
    let mut img = tdxlab::GUEST_IMAGE.to_vec();
    let end = img.len();
    let dist = (end - tdxlab::pack::DESCRIPTOR_OFFSET) as u32;
    write_table(
        &mut img[end - 4096..],
        &[(guid::TDX_METADATA_OFFSET, &dist.to_le_bytes())],
    )
    .unwrap();
    assert_eq!(tdxlab::image::doorbell_abi(&img), None);
    assert_eq!(
        tdxlab::image::doorbell_abi(tdxlab::GUEST_IMAGE),
        Some(shared_abi::doorbell::DOORBELL_ABI_VERSION)
    );
    let err = common::refused_image_error("nodoorbell", &img);
    assert!(
        err.contains("only doorbell-aware guests run on the emulated host"),
        "{err}"
    );
}

/// A TD without SEPT_VE_DISABLE is refused by the guest as Linux refuses it (`tdx_early_init`):
/// a panic through ReportFatalError, exit 1; a debug TD only gets the warning and runs.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn the_guest_refuses_a_td_without_sept_ve_disable_unless_it_is_a_debug_td() {
    require_kvm!();
    let msg = "TD misconfiguration: SEPT_VE_DISABLE attribute must be set.";
    let env = tdxlab::td::TEST_TD_ATTRIBUTES_ENV;
    let run = run_with_report_env(&["run", "--vcpus", "1"], &[(env, "0")]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.out, run.err);
    assert!(run.err.contains(msg), "{}", run.err);
    assert_eq!(run.report["exit"]["kind"], "fatal", "{}", run.report);
    let debug = run_with_report_env(&["run", "--vcpus", "1"], &[(env, "0x1")]);
    assert_eq!(debug.code, Some(0), "{}\n{}", debug.out, debug.err);
    let console = debug.report["console"].to_string();
    assert!(console.contains(&format!("WARNING: {msg}")), "{console}");
}

/// More vCPUs than the guest has stacks for: the extra ones park in the boot code before
/// they touch memory, the guest's own maximum (16) runs the workload, and the TD passes.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn vcpus_beyond_the_guests_maximum_park_and_the_rest_run() {
    require_kvm!();
    let run = run_with_report(&["run", "--vcpus", "17", "--mem", "512M"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.out, run.err);
    let console = run.report["console"].as_array().unwrap();
    let has = |s: &str| console.iter().any(|l| l.as_str().unwrap().contains(s));
    assert!(
        has("1 vCPUs (index 16 and up) parked at boot"),
        "{console:?}"
    );
    assert!(
        has("all 16 vCPUs passed the conversion round trip"),
        "{console:?}"
    );
    let online = (console.iter())
        .filter(|l| l.as_str().unwrap().contains(": online (TDG.VP.INFO"))
        .count();
    assert_eq!(online, 16, "vCPU 16 never reached Rust");
    assert_eq!(run.report["vcpus"], 17);
    // The report carries the image's MRTD, as `tdxlab inspect` computes it.
    let mrtd = run.report["mrtd"].as_str().unwrap();
    assert_eq!(mrtd.len(), 96, "{mrtd}");
}

/// The host builds the TD as QEMU does: every page of every section goes in
/// with TDH.MEM.PAGE.ADD — the firmware window too — and the MR_EXTEND ones are measured
/// chunk by chunk; the module's MRTD then equals what `tdxlab inspect` computes from the
/// image alone (what real hardware reports for it).
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn the_module_measures_the_td_as_inspect_computes_it() {
    use shared_abi::layout::tdvf::{TdvfMetadata, ATTR_MR_EXTEND};
    require_kvm!();
    let run = run_with_report(&["run", "--vcpus", "1"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.out, run.err);
    let meta = TdvfMetadata::parse(tdxlab::GUEST_IMAGE).unwrap();
    let (mut added, mut extended) = (0, 0);
    for s in meta.sections() {
        let pages = s.memory_size.div_ceil(4096);
        added += pages;
        if s.attributes & ATTR_MR_EXTEND != 0 {
            assert!(
                s.memory_address >= 0xF000_0000,
                "the BFV is in the firmware window"
            );
            extended += 16 * pages;
        }
    }
    assert!(extended > 0);
    assert_eq!(run.report["pages_added"], added, "{}", run.report);
    assert_eq!(run.report["mr_extends"], extended, "{}", run.report);
    let expect = tdxlab::mrtd::hex(&tdxlab::mrtd::mrtd(&meta).unwrap());
    assert_eq!(run.report["mrtd"], expect.as_str());
}

/// 16 GiB, the most `--mem` takes, laid out as QEMU's q35 lays it out: 2 GiB below 4 GiB
/// and 14 GiB from 4 GiB, one TD HOB resource set per range. The guest maps the shared alias
/// of exactly those ranges (more page directories than its boot pool holds) and passes.
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn sixteen_gib_split_around_the_pci_hole_boots_and_maps_its_ram_ranges() {
    require_kvm!();
    let run = run_with_report(&["run", "--vcpus", "2", "--mem", "16G"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.out, run.err);
    assert_eq!(run.report["mem_bytes"].as_u64(), Some(16 << 30));
    let console = run.report["console"].as_array().unwrap();
    let window = (console.iter())
        .filter_map(|l| l.as_str())
        .find(|l| l.contains("shared window:"))
        .expect("the window line");
    assert!(window.contains("16384 MiB of RAM"), "{window}");
    assert_eq!(run.report["audit"].as_array().map(Vec::len), Some(0));
}
