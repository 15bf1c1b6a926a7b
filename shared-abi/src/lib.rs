//! The protocol both sides of tdxlab speak, as typed Rust.
//!
//! Every value here comes from the TDX module 1.5 ABI specification and source, the GHCI
//! specification, Linux v6.16 (`arch/x86/include/asm/shared/tdx.h`, `arch/x86/kvm/vmx/tdx.c`)
//! and QEMU (`target/i386/kvm/tdx.c`, `hw/i386/tdvf*.c`). The crate is `no_std` and allocation-free so
//! that the guest, the `tdcall` crate and the host all use the same definitions.
#![no_std]
#![forbid(unsafe_code)]

pub mod convert;
pub mod doorbell;
pub mod fw_cfg;
pub mod gpa;
pub mod hostcheck;
pub mod kvm;
pub mod layout;
pub mod seamcall;
pub mod sept;
pub mod status;
pub mod stress;
pub mod td;
pub mod tdcall;
pub mod ve;
pub mod vmcall;
pub mod workload;

pub use gpa::{Gfn, Gpa, GpaRange, Gpaw, PageLevel, PAGE_SIZE};
pub use status::TdxStatus;
pub use vmcall::VmcallStatus;
