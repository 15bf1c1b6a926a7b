//! The IDT: every exception (vectors 0–31) lands in one handler. A #VE (vector 20) is served
//! like Linux's `tdx_handle_virt_exception`: TDG.VP.VEINFO.GET, then the instruction the TDX
//! module refused (I/O, CPUID, HLT, RDMSR, WRMSR) is done through TDG.VP.VMCALL and RIP skips
//! it; an EPT-violation #VE is fatal. Every other exception is
//! reported (vector, RIP, error code, CR2) on the console and through ReportFatalError, and
//! the TD stops.

use core::sync::atomic::{AtomicU64, Ordering};

/// What the stubs push, lowest address first.
#[repr(C)]
pub struct Frame {
    /// General registers saved by the common stub (R15 first).
    pub regs: [u64; 15],
    /// Vector number.
    pub vector: u64,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// Faulting RIP.
    pub rip: u64,
    /// CS.
    pub cs: u64,
    /// RFLAGS.
    pub rflags: u64,
}

// Stubs: vectors with a CPU-pushed error code (8, 10-14, 17, 21, 29, 30) push only the
// vector; the others push a 0 first so every frame looks the same.
core::arch::global_asm!(
    r#"
    .section .text.tdxlab_exc, "ax"
    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
tdxlab_exc_\v:
    push 0
    push \v
    jmp tdxlab_exc_common
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
tdxlab_exc_\v:
    push \v
    jmp tdxlab_exc_common
    .endr
tdxlab_exc_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    call {handler}
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

    .section .rodata.tdxlab_exc_table, "a"
    .p2align 3
    .global tdxlab_exc_table
tdxlab_exc_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad tdxlab_exc_\v
    .endr
"#,
    handler = sym exception,
);

unsafe extern "C" {
    static tdxlab_exc_table: [u64; 32];
}

/// 32 interrupt gates of 16 bytes.
static IDT: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// Fill the IDT (idempotent, every vCPU may call it) and load it on this vCPU.
pub fn init() {
    for v in 0..32 {
        // SAFETY: the table is emitted by the assembly above.
        let addr = unsafe { tdxlab_exc_table[v] };
        let low = (addr & 0xFFFF) | 0x08 << 16 | 0x8E << 40 | ((addr >> 16) & 0xFFFF) << 48;
        IDT[2 * v].store(low, Ordering::Relaxed);
        IDT[2 * v + 1].store(addr >> 32, Ordering::Relaxed);
    }
    let ptr: [u16; 5] = {
        let base = IDT.as_ptr() as u64;
        [
            32 * 16 - 1,
            base as u16,
            (base >> 16) as u16,
            (base >> 32) as u16,
            (base >> 48) as u16,
        ]
    };
    // SAFETY: the IDT is static and fully built above.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) ptr.as_ptr(), options(readonly, nostack)) };
}

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD",
    "#VE virtualization exception",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV",
    "#VC",
    "#SX security",
    "reserved",
];

const RAX: usize = 14;
const RBX: usize = 13;
const RCX: usize = 12;
const RDX: usize = 11;

/// Why a #VE cannot be served (the guest then panics with it).
enum VeError {
    /// A TDCALL or TDVMCALL the handler made failed.
    Call(tdcall::Error),
    /// String I/O (INS/OUTS): the handler serves single transfers only.
    StringIo(u16),
    /// An EPT-violation #VE: the host took away private memory (SEPT_VE_DISABLE is set, so
    /// an unaccepted access never gets here).
    EptViolation(u64),
    /// A reason this handler does not serve.
    Unsupported(u32),
    /// A HLT #VE whose RIP and length do not span a HLT: the module reports it fault-like,
    /// RIP on the instruction and its length (`tdx_inject_ve`), which Linux's
    /// `ve_instr_len` relies on to resume after it.
    HltNotAtRip(u64, u32),
}

impl From<tdcall::Error> for VeError {
    fn from(e: tdcall::Error) -> Self {
        VeError::Call(e)
    }
}

impl core::fmt::Display for VeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VeError::Call(e) => write!(f, "{e}"),
            VeError::StringIo(port) => write!(f, "string I/O on port {port:#x}"),
            VeError::EptViolation(gpa) => write!(
                f,
                "EPT-violation #VE at gpa {gpa:#x}: private memory the host took away"
            ),
            VeError::Unsupported(reason) => write!(f, "#VE for exit reason {reason}"),
            VeError::HltNotAtRip(rip, len) => {
                write!(
                    f,
                    "HLT #VE with RIP {rip:#x} and length {len}: not on a HLT"
                )
            }
        }
    }
}

/// Serve a #VE; `Err` names why it cannot be served.
fn handle_ve(f: &mut Frame) -> Result<(), VeError> {
    use shared_abi::ve::{exit_reason, IoQualification};
    let mut tdx = crate::arch::tdx();
    let ve = tdx.tdg_vp_veinfo_get()?;
    match ve.exit_reason {
        exit_reason::IO => {
            let q = IoQualification::decode(ve.exit_qualification);
            if q.is_string {
                return Err(VeError::StringIo(q.port));
            }
            let mask = (1u64 << (8 * q.size as u32)) - 1;
            let rax = f.regs[RAX];
            if q.is_in {
                let v = tdx.io_read(q.size, q.port)? as u64 & mask;
                // A 32-bit IN zero-extends into RAX; narrower ones keep the upper bytes.
                f.regs[RAX] = if q.size == 4 { v } else { (rax & !mask) | v };
            } else {
                tdx.io_write(q.size, q.port, (rax & mask) as u32)?;
            }
        }
        exit_reason::CPUID => {
            // Only the hypervisor range goes to the host; any other leaf reads as zeros, as on
            // a CPU without it (Linux's handle_cpuid in arch/x86/coco/tdx/tdx.c).
            let leaf = f.regs[RAX] as u32;
            let r = if (0x4000_0000..=0x4FFF_FFFF).contains(&leaf) {
                tdx.cpuid(leaf, f.regs[RCX] as u32)?
            } else {
                [0; 4]
            };
            (f.regs[RAX], f.regs[RBX], f.regs[RCX], f.regs[RDX]) =
                (r[0] as u64, r[1] as u64, r[2] as u64, r[3] as u64);
        }
        exit_reason::HLT => {
            check_hlt_at_rip(f.rip, ve.instr_len)?;
            let irqs_disabled = f.rflags & (1 << 9) == 0;
            tdx.hlt(irqs_disabled)?;
        }
        exit_reason::RDMSR => {
            let v = tdx.rdmsr(f.regs[RCX] as u32)?;
            (f.regs[RAX], f.regs[RDX]) = (v & 0xFFFF_FFFF, v >> 32);
        }
        exit_reason::WRMSR => {
            let v = (f.regs[RDX] & 0xFFFF_FFFF) << 32 | (f.regs[RAX] & 0xFFFF_FFFF);
            tdx.wrmsr(f.regs[RCX] as u32, v)?;
        }
        exit_reason::EPT_VIOLATION => return Err(VeError::EptViolation(ve.gpa)),
        other => return Err(VeError::Unsupported(other)),
    }
    f.rip += ve.instr_len as u64;
    Ok(())
}

/// The instruction a HLT #VE names ends in HLT (0xF4): RIP is on it and the length covers it.
fn check_hlt_at_rip(rip: u64, len: u32) -> Result<(), VeError> {
    let last = rip.wrapping_add(u64::from(len)).wrapping_sub(1);
    // SAFETY: with a nonzero length, [rip, rip + len) is the instruction that just ran, so
    // its last byte is mapped guest code.
    let on_hlt = len != 0 && unsafe { core::ptr::read_volatile(last as *const u8) } == 0xF4;
    if !on_hlt {
        return Err(VeError::HltNotAtRip(rip, len));
    }
    Ok(())
}

extern "C" fn exception(f: &mut Frame) {
    if f.vector == shared_abi::ve::X86_TRAP_VE as u64 {
        match handle_ve(f) {
            Ok(()) => return,
            Err(why) => panic!("unhandled #VE at RIP {:#x}: {why}", f.rip),
        }
    }
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    let name = NAMES.get(f.vector as usize).copied().unwrap_or("?");
    println!(
        "EXCEPTION vector {} ({name}) at RIP {:#x}, error code {:#x}, CR2 {cr2:#x}",
        f.vector, f.rip, f.error_code
    );
    let mut msg = [0u8; 64];
    let mut w = crate::console::Buf(&mut msg, 0);
    let _ = core::fmt::Write::write_fmt(
        &mut w,
        format_args!("exception {} at RIP {:#x} CR2 {cr2:#x}", f.vector, f.rip),
    );
    // Error code 0 (the vector is in the message): QEMU refuses any of bits 15:0 set.
    let _ = crate::arch::tdx().report_fatal_error(0, None, &msg);
    crate::exit::exit(0xE0)
}
