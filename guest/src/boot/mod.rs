//! Reset-vector target: 32-bit protected mode (the TD start state) → long mode.
//!
//! Every vCPU starts here at once (EBX = GPAW, ECX = R8 = TD HOB, ESI = vCPU index). A vCPU
//! whose index is beyond the layout's `MAX_VCPUS` parks at once in a PAUSE loop, touching no
//! memory (its stack would overwrite the mailbox and the page tables; a HLT would be a #VE
//! with no handler yet, and 32-bit code cannot reach R10–R15 for TDVMCALL<HLT>). The BSP
//! builds identity page tables for the low 4 GiB with 2 MiB pages (the shared window is added
//! later, in Rust, by `paging`) and raises the mailbox flag;
//! the APs wait for it. All then enable paging (EFER.LME is already set in a TD), load a 64-bit
//! GDT, and call `rust_main(vcpu_index, hob)` on their own stack.

pub mod info;

use crate::layout::{MAILBOX, MAX_VCPUS, PT_BASE, STACK_SIZE, STACK_TOP};

/// Page-table entry bits: present, writable, and (in a PD entry) a 2 MiB page.
const PTE_PRESENT: u32 = 1 << 0;
const PTE_WRITABLE: u32 = 1 << 1;
const PTE_PAGE_SIZE: u32 = 1 << 7;
/// CR4.PAE (required for long mode) and CR0.PG (paging on: with EFER.LME, long mode).
const CR4_PAE: u32 = 1 << 5;
const CR0_PG: u32 = 1 << 31;
/// Selectors of the boot GDT below: the 64-bit code segment (entry 1) and data (entry 2).
const CODE64_SELECTOR: u32 = 0x08;
const DATA_SELECTOR: u32 = 0x10;

core::arch::global_asm!(
    r#"
    .section .text.entry32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cmp esi, {max_vcpus}
    jb 0f
9:  pause
    jmp 9b
0:  mov edi, ecx
    test esi, esi
    jnz 3f
    mov dword ptr [{pt}], {pt} + 0x1000 + {pte_rw}
    mov dword ptr [{pt} + 4], 0
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 12
    add eax, {pt} + 0x2000 + {pte_rw}
    mov dword ptr [{pt} + 0x1000 + ecx * 8], eax
    mov dword ptr [{pt} + 0x1000 + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 4
    jne 1b
    xor ecx, ecx
2:  mov eax, ecx
    shl eax, 21
    or eax, {pde_2m}
    mov dword ptr [{pt} + 0x2000 + ecx * 8], eax
    mov eax, ecx
    shr eax, 11
    mov dword ptr [{pt} + 0x2000 + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jne 2b
    mov byte ptr [{mailbox}], 1
    jmp 4f
3:  pause
    cmp byte ptr [{mailbox}], 1
    jne 3b
4:  mov eax, {pt}
    mov cr3, eax
    mov eax, cr4
    or eax, {cr4_pae}
    mov cr4, eax
    mov eax, cr0
    or eax, {cr0_pg}
    mov cr0, eax
    lgdt [tdxlab_gdt_ptr]
    mov eax, offset tdxlab_start64
    push {code64}
    push eax
    retf

    .code64
tdxlab_start64:
    mov ax, {data}
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov eax, esi
    imul rax, rax, {stack_size}
    mov rsp, {stack_top}
    sub rsp, rax
    mov r8d, edi
    mov edi, esi
    mov esi, r8d
    call {rust_main}
5:  hlt
    jmp 5b

    .section .rodata.tdxlab_gdt, "a"
    .p2align 4
tdxlab_gdt:
    .quad 0                     /* null */
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code, present, DPL 0 (L=1) */
    .quad 0x00CF92000000FFFF    /* 0x10: flat 4 GiB data, present, DPL 0 */
tdxlab_gdt_ptr:
    .word 23
    .long tdxlab_gdt
"#,
    pt = const PT_BASE,
    pte_rw = const PTE_PRESENT | PTE_WRITABLE,
    pde_2m = const PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE,
    cr4_pae = const CR4_PAE,
    cr0_pg = const CR0_PG,
    code64 = const CODE64_SELECTOR,
    data = const DATA_SELECTOR,
    mailbox = const MAILBOX,
    stack_size = const STACK_SIZE,
    stack_top = const STACK_TOP,
    max_vcpus = const MAX_VCPUS,
    rust_main = sym rust_main,
);

/// Called by the boot code on every vCPU, on its own stack: the BSP parses the TD HOB once
/// and picks the transport, the others wait for it; then every vCPU runs `main`.
extern "C" fn rust_main(vcpu: u32, hob: u32) -> ! {
    if vcpu == 0 {
        let info = info::init(hob as u64);
        crate::arch::tdx::set_transport(info.tdxlab.map(|h| h.doorbell_port));
        crate::smp::boot_done();
    } else {
        crate::smp::wait_boot_done();
    }
    crate::main(vcpu)
}
