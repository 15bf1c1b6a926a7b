//! The VMM role (QEMU's part): what userspace does with KVM's exits for a TD — converting
//! memory on MapGPA, implicit conversion on memory-fault exits — and the loop that serves one
//! TDCALL through the TDX module, KVM and the VMM.

mod audit;
mod backing;
pub mod bench;
mod contain;
mod convert;
mod exits;
mod io;
mod kvm_backend;
pub mod machine;
mod td_setup;
mod uffd;
mod vcpu;
mod ve;

pub use backing::Backing;
pub use contain::{install_panic_hook, TEST_PANIC_ENV};
pub use convert::{Injector, Vmm};
pub use exits::{handle_tdcall, resolve_ept_violation, TdcallError, FAULT_PROGRESS_TIMEOUT};
pub use io::{GuestExit, GuestIo};
pub use uffd::open_userfaultfd;
