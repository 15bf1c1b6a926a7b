//! tdxlab's TDCALL emulation ABI: the "doorbell" a guest uses on stock KVM instead of `TDCALL`.
//!
//! An emulated TD finds a GUID-extension HOB ([`crate::layout::hob::TdxlabHob`]) naming a
//! doorbell port. Its transport then executes `out dx, al` with DX = port and every TDCALL
//! register in place, except that RDX (which must carry the port) travels in **RBP**; the host
//! reads all registers with KVM_GET_REGS, runs the leaf, and writes the outputs back the same
//! way (output RDX in RBP). RBP is free because the TDCALL ABI never uses it.

/// Default doorbell I/O port (unused by q35 devices; "DB" for doorbell).
pub const DEFAULT_DOORBELL_PORT: u16 = 0x0DB0;
/// Version of the doorbell ABI and of [`crate::layout::hob::TdxlabHob`].
pub const DOORBELL_ABI_VERSION: u16 = 2;
/// The isa-debug-exit-compatible exit port: the host exits with status `(v << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// COM1, the guest's console, reached through TDVMCALL<Instruction.IO>.
pub const COM1_PORT: u16 = 0x3F8;
