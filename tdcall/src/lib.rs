//! The guest's API to the TDX module.
//!
//! Layers, bottom up:
//! - [`Regs`] and the [`Transport`] trait: one TDCALL with every register in place. Two
//!   transports: [`transport::TdcallInsn`] (the real `TDCALL`, 66 0F 01 CC) and
//!   [`transport::Doorbell`] (tdxlab's emulation on stock KVM, see `shared_abi::doorbell`).
//!   Nothing above the transport knows which one ran.
//! - [`Tdx`]: typed leaves returning typed errors (TDG.VP.INFO, TDG.VP.VEINFO.GET,
//!   TDG.MEM.PAGE.ACCEPT, TDG.VP.VMCALL and its sub-functions).
//! - The two loops every guest needs, written once: [`Tdx::map_gpa`] (the MapGPA RETRY loop)
//!   and [`Tdx::accept`] (1G → 2M → 4K with fallbacks). The host's simulator drives the same
//!   code, so what it proves holds for the guest.
#![no_std]

mod accept;
mod calls;
mod error;
mod map_gpa;
mod regs;
pub mod transport;

pub use accept::{AcceptStats, ACCEPT_MAX_BUSY_RETRIES};
pub use calls::{HostCheck, Tdx, VmcallOut};
pub use error::{AcceptError, Error, MapGpaError};
pub use map_gpa::MapGpaStats;
pub use regs::Regs;
pub use transport::Transport;
