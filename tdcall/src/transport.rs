//! How one TDCALL reaches the TDX module: the real instruction, or tdxlab's doorbell.

use crate::Regs;

/// Executes one TDCALL: `regs` holds every input register and receives every output.
pub trait Transport {
    /// Run the call. Must not interpret any register.
    fn call(&mut self, regs: &mut Regs);
    /// True when the module behind this transport is tdxlab's emulation (the emulation HOB
    /// named it), which may report what real TDX never does (a non-architectural GPAW).
    fn emulated(&self) -> bool {
        false
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn call(&mut self, regs: &mut Regs) {
        (**self).call(regs)
    }
    fn emulated(&self) -> bool {
        (**self).emulated()
    }
}

/// The real `TDCALL` instruction (66 0F 01 CC). Only valid inside a TD; elsewhere it #UDs.
#[derive(Clone, Copy, Debug, Default)]
pub struct TdcallInsn;

/// tdxlab's emulation doorbell: `out dx, al` on `port`, RDX carried in RBP
/// (`shared_abi::doorbell`). Only valid in a TD run by the tdxlab host.
#[derive(Clone, Copy, Debug)]
pub struct Doorbell {
    /// The port from the tdxlab HOB.
    pub port: u16,
}

/// Either transport, chosen at boot from the TD HOB.
#[derive(Clone, Copy, Debug)]
pub enum AnyTransport {
    /// Real hardware.
    Tdcall(TdcallInsn),
    /// Emulated TD.
    Doorbell(Doorbell),
}

impl Transport for AnyTransport {
    fn call(&mut self, regs: &mut Regs) {
        match self {
            AnyTransport::Tdcall(t) => t.call(regs),
            AnyTransport::Doorbell(t) => t.call(regs),
        }
    }
    fn emulated(&self) -> bool {
        matches!(self, AnyTransport::Doorbell(_))
    }
}

// Both transports load every register from `Regs` (pointer in RDI), run the trapping
// instruction, and store every register back. RBX and RBP cannot be asm operands in Rust, so
// they are saved and restored by hand; the pointer is kept on the stack across the call.
#[cfg(target_arch = "x86_64")]
macro_rules! load_store_asm {
    ($load_rdx:literal, $insn:literal, $store_rdx:literal, $($extra:tt)*) => {
        core::arch::asm!(
            "push rbx",
            "push rbp",
            "push rdi",
            $load_rdx,
            "mov rax, [rdi + 0]",
            "mov rcx, [rdi + 8]",
            "mov rbx, [rdi + 24]",
            "mov rsi, [rdi + 32]",
            "mov r8,  [rdi + 48]",
            "mov r9,  [rdi + 56]",
            "mov r10, [rdi + 64]",
            "mov r11, [rdi + 72]",
            "mov r12, [rdi + 80]",
            "mov r13, [rdi + 88]",
            "mov r14, [rdi + 96]",
            "mov r15, [rdi + 104]",
            "mov rdi, [rdi + 40]",
            $insn,
            "xchg rdi, [rsp]",
            "mov [rdi + 0], rax",
            "mov [rdi + 8], rcx",
            $store_rdx,
            "mov [rdi + 24], rbx",
            "mov [rdi + 32], rsi",
            "pop rax",
            "mov [rdi + 40], rax",
            "mov [rdi + 48], r8",
            "mov [rdi + 56], r9",
            "mov [rdi + 64], r10",
            "mov [rdi + 72], r11",
            "mov [rdi + 80], r12",
            "mov [rdi + 88], r13",
            "mov [rdi + 96], r14",
            "mov [rdi + 104], r15",
            "pop rbp",
            "pop rbx",
            $($extra)*
            out("rax") _, out("rcx") _, out("rsi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        )
    };
}

#[cfg(target_arch = "x86_64")]
impl Transport for TdcallInsn {
    fn call(&mut self, regs: &mut Regs) {
        // SAFETY: TDCALL reads and writes only the registers listed and the memory the leaf's
        // operands name (owned by the caller); every clobbered register is declared or restored.
        unsafe {
            load_store_asm!(
                "mov rdx, [rdi + 16]",
                ".byte 0x66, 0x0f, 0x01, 0xcc",
                "mov [rdi + 16], rdx",
                inout("rdi") regs as *mut Regs => _, out("rdx") _,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Transport for Doorbell {
    fn emulated(&self) -> bool {
        true
    }
    fn call(&mut self, regs: &mut Regs) {
        // SAFETY: as for TDCALL; the host's doorbell handler writes only the register block.
        unsafe {
            load_store_asm!(
                "mov rbp, [rdi + 16]",
                "out dx, al",
                "mov [rdi + 16], rbp",
                inout("rdi") regs as *mut Regs => _, inout("edx") self.port as u32 => _,
            );
        }
    }
}
