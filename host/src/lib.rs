//! tdxlab host: emulated Intel TDX on stock Linux KVM.
//!
//! Three roles, each in its own module, under the real names:
//! - [`seam`] — the TDX module: TD state, the Secure EPT, TDCALL and SEAMCALL handlers;
//! - [`kvm`] — the hypervisor MMU: memory attributes, the mirror (private) and direct (shared)
//!   TDP roots, the fault path and the zap path with its attribute filter;
//! - [`vmm`] — the VMM (QEMU's part): userspace MapGPA handling, memory backings, the CLI.
//!
//! [`sim`] runs simulated vCPUs against `seam` + `kvm` in-process through the real `tdcall`
//! crate; [`zap_table`] prints the zap policies' decision table.

pub mod caps;
pub mod cmd;
pub mod exit;
pub mod fuzzing;
pub mod guest_layout;
pub mod image;
pub mod inject;
pub mod invariants;
pub mod kvm;
pub mod linux;
pub mod locks;
pub mod map;
pub mod mrtd;
pub mod output;
pub mod pack;
pub mod percpu;
pub mod seam;
pub mod sim;
pub mod symbols;
pub mod td;
pub mod trace;
pub mod vmm;
pub mod zap_table;

/// The built-in guest image (`tdxlab-guest.bin`), packed by the build script.
pub const GUEST_IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tdxlab-guest.bin"));
