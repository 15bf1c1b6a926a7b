//! The tdxlab confidential unikernel guest.
//!
//! Built for `x86_64-unknown-none` and packed into a TDVF image by the host's build. On any
//! other target this file builds a tiny host binary that only says so, which keeps
//! `cargo clippy --workspace --all-targets` and `cargo test --workspace` working from the root.
#![cfg_attr(target_os = "none", no_std, no_main)]

/// The memory layout the host's packer shares.
#[allow(dead_code)]
mod layout {
    include!("../layout.rs");
}

#[cfg(target_os = "none")]
#[macro_use]
mod console;
#[cfg(target_os = "none")]
mod acpi;
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod convert;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod mm;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod workloads;
#[cfg(target_os = "none")]
extern crate alloc;

/// What every vCPU runs once in long mode.
#[cfg(target_os = "none")]
fn main(vcpu: u32) -> ! {
    arch::idt::init();
    let info = match arch::tdx().tdg_vp_info() {
        Ok(i) => i,
        Err(e) => panic!("TDG.VP.INFO: {e}"),
    };
    println!(
        "vCPU {vcpu}: online (TDG.VP.INFO: index {}, {} of at most {} vCPUs, GPAW {})",
        info.vcpu_index,
        info.num_vcpus,
        info.max_vcpus,
        info.gpaw.bits()
    );
    check_td_attributes(info.attributes);
    // vCPUs beyond the layout's stacks parked in the boot code: the rest run the workload.
    let online = info.num_vcpus.min(layout::MAX_VCPUS as u32);
    let boot = boot::info::get();
    if vcpu == 0 {
        console::init_log();
        print_module_features(info.sys_rd_available);
        if online < info.num_vcpus {
            println!(
                "{} vCPUs (index {online} and up) parked at boot: this guest runs on at most {online}",
                info.num_vcpus - online
            );
        }
        mm::heap::init();
        mm::paging::map_shared_window(boot.ram_ranges(), info.gpaw.shared_bit());
        smp::heap_ready();
        workloads::round_trip::misbehave_if_asked(boot.flags());
        if boot.flags() & shared_abi::layout::hob::config::ACCEPT_ALL != 0 {
            workloads::round_trip::accept_all_ram();
        }
        if boot.workload() == layout::WORKLOAD_BENCH_DOORBELL {
            workloads::round_trip::bench_doorbell();
            exit::exit(0);
        }
        if boot.workload() == layout::WORKLOAD_BENCH_CONVERT {
            workloads::stress::bench_convert(info.gpaw);
            exit::exit(0);
        }
        if boot.workload() == layout::WORKLOAD_BENCH_ROUND_TRIPS {
            workloads::stress::bench_round_trips(info.gpaw);
            exit::exit(0);
        }
    }
    if boot.workload() == layout::WORKLOAD_BENCH_ROUND_TRIPS {
        // The other vCPUs stay busy in the TD, as a loaded TD's do: every kick of vCPU 0's
        // conversions has to interrupt them (and wait for them to leave).
        loop {
            core::hint::spin_loop();
        }
    }
    smp::wait_heap_ready();
    let what = if boot.workload() == layout::WORKLOAD_STRESS {
        workloads::stress::run(vcpu, online, info.gpaw);
        "the stress scenario"
    } else {
        workloads::round_trip::conversion_round_trip(vcpu, &info);
        "the conversion round trip"
    };
    let n = smp::arrive();
    if vcpu != 0 {
        exit::park();
    }
    while smp::arrived() < online {
        core::hint::spin_loop();
    }
    println!("all {online} vCPUs passed {what} ({n} arrived when vCPU 0 finished); exiting");
    exit::exit(0)
}

/// What the TDX module says it supports (TDG.SYS.RD TDX_FEATURES0, as Linux reads it), when
/// TDG.VP.INFO offers TDG.SYS.RD.
#[cfg(target_os = "none")]
fn print_module_features(sys_rd_available: bool) {
    if !sys_rd_available {
        println!("TDX module: no TDG.SYS.RD (module 1.0)");
        return;
    }
    match arch::tdx().tdg_sys_rd(shared_abi::td::sys_metadata::TDX_FEATURES0) {
        Ok(f) => println!("TDX module: TDX_FEATURES0 {f:#x} (TDG.SYS.RD)"),
        Err(e) => println!("TDX module: TDG.SYS.RD TDX_FEATURES0 failed: {e}"),
    }
}

/// A TD without SEPT_VE_DISABLE would take a #VE on any private page the host removes,
/// which this guest, like Linux, cannot handle for its own memory: refuse it (a debug TD
/// only gets a warning), as Linux's `tdx_early_init` does.
#[cfg(target_os = "none")]
fn check_td_attributes(attributes: u64) {
    use shared_abi::td::attributes::{DEBUG, SEPT_VE_DISABLE};
    const MSG: &str = "TD misconfiguration: SEPT_VE_DISABLE attribute must be set.";
    if attributes & SEPT_VE_DISABLE == 0 {
        if attributes & DEBUG == 0 {
            panic!("{MSG}");
        }
        println!("WARNING: {MSG}");
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("tdxlab-guest runs only inside a TD: build it with --target x86_64-unknown-none");
    std::process::exit(2);
}
