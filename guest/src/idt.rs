//! The IDT: every exception (vectors 0–31) lands in one handler that reports the vector, RIP,
//! error code and CR2 on the console and through TDVMCALL<ReportFatalError>, then stops the TD.
//! (A #VE handler — vector 20 on real TDX — is not written yet: the emulated host never
//! injects one.)

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
    and rsp, -16
    call {handler}
2:  hlt
    jmp 2b

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

extern "C" fn exception(f: &Frame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    let name = NAMES.get(f.vector as usize).copied().unwrap_or("?");
    println!(
        "EXCEPTION vector {} ({name}) at RIP {:#x}, error code {:#x}, CR2 {cr2:#x}",
        f.vector, f.rip, f.error_code
    );
    let mut msg = [0u8; 64];
    let mut w = crate::bare::Buf(&mut msg, 0);
    let _ = core::fmt::Write::write_fmt(
        &mut w,
        format_args!("exception {} at RIP {:#x} CR2 {cr2:#x}", f.vector, f.rip),
    );
    let _ = crate::bare::tdx().report_fatal_error(f.vector, None, &msg);
    crate::bare::exit(0xE0)
}
