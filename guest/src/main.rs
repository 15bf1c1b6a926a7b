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
mod bare;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod convert;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
mod paging;
#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod stress;
#[cfg(target_os = "none")]
mod workload;

/// What every vCPU runs once in long mode.
#[cfg(target_os = "none")]
fn main(vcpu: u32) -> ! {
    idt::init();
    let info = match bare::tdx().tdg_vp_info() {
        Ok(i) => i,
        Err(e) => panic!("TDG.VP.INFO: {e}"),
    };
    println!(
        "vCPU {vcpu}: online (TDG.VP.INFO: index {}, {} vCPUs, GPAW {})",
        info.vcpu_index,
        info.num_vcpus,
        info.gpaw.bits()
    );
    if vcpu == 0 {
        heap::init_log();
        heap::init();
        paging::map_shared_window(bare::ram_size(), info.gpaw.shared_bit());
        bare::heap_ready();
        workload::misbehave_if_asked(bare::flags());
        if bare::flags() & shared_abi::layout::hob::config::ACCEPT_ALL != 0 {
            workload::accept_all_ram();
        }
        if bare::workload() == layout::WORKLOAD_BENCH_DOORBELL {
            workload::bench_doorbell();
            bare::exit(0);
        }
        if bare::workload() == layout::WORKLOAD_BENCH_CONVERT {
            stress::bench_convert(info.gpaw);
            bare::exit(0);
        }
    }
    bare::wait_heap_ready();
    let what = if bare::workload() == layout::WORKLOAD_STRESS {
        stress::run(vcpu, info.num_vcpus, info.gpaw);
        "the stress scenario"
    } else {
        workload::conversion_round_trip(vcpu, &info);
        "the conversion round trip"
    };
    let n = bare::arrive();
    if vcpu != 0 {
        bare::park();
    }
    while bare::arrived() < info.num_vcpus {
        core::hint::spin_loop();
    }
    println!(
        "all {} vCPUs passed {what} ({n} arrived when vCPU 0 finished); exiting",
        info.num_vcpus
    );
    bare::exit(0)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("tdxlab-guest runs only inside a TD: build it with --target x86_64-unknown-none");
    std::process::exit(2);
}
