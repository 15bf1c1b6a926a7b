//! KVM uAPI values the TDX path uses (include/uapi/linux/kvm.h, kvm_para.h, asm/vmx.h).
//!
//! The host gets most KVM definitions from `kvm-bindings`; these are the TDX-specific ones
//! kvm-bindings may lack, kept here so tests can pin them to the reference.

/// KVM_EXIT_IO.
pub const KVM_EXIT_IO: u32 = 2;
/// KVM_EXIT_HYPERCALL: MapGPA reaches userspace as KVM_HC_MAP_GPA_RANGE.
pub const KVM_EXIT_HYPERCALL: u32 = 3;
/// KVM_EXIT_HLT.
pub const KVM_EXIT_HLT: u32 = 5;
/// KVM_EXIT_MMIO.
pub const KVM_EXIT_MMIO: u32 = 6;
/// KVM_EXIT_MEMORY_FAULT: implicit-conversion exit.
pub const KVM_EXIT_MEMORY_FAULT: u32 = 39;
/// KVM_EXIT_TDX: GetQuote / GetTdVmCallInfo / SetupEventNotifyInterrupt.
pub const KVM_EXIT_TDX: u32 = 40;
/// `kvm_run.memory_fault.flags`: KVM_MEMORY_EXIT_FLAG_PRIVATE.
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
/// KVM_SYSTEM_EVENT_TDX_FATAL: ReportFatalError.
pub const KVM_SYSTEM_EVENT_TDX_FATAL: u32 = 7;
/// `kvm_run.hypercall.flags`: KVM_EXIT_HYPERCALL_LONG_MODE.
pub const KVM_EXIT_HYPERCALL_LONG_MODE: u64 = 1 << 0;
/// KVM_CAP_EXIT_HYPERCALL: enable with bit KVM_HC_MAP_GPA_RANGE set.
pub const KVM_CAP_EXIT_HYPERCALL: u32 = 201;
/// KVM_CAP_MEMORY_ATTRIBUTES.
pub const KVM_CAP_MEMORY_ATTRIBUTES: u32 = 233;
/// KVM_SET_MEMORY_ATTRIBUTES = _IOW(KVMIO, 0xD2, struct kvm_memory_attributes).
pub const KVM_SET_MEMORY_ATTRIBUTES: u64 = 0x4020_AED2;
/// VMX exit reason of a TDCALL as the host sees a TD exit.
pub const EXIT_REASON_TDCALL: u32 = 77;
/// VMCS field SHARED_EPT_POINTER.
pub const VMCS_SHARED_EPT_POINTER: u32 = 0x203C;
/// Extended exit qualification type (bits 3:0 of RDX after VP.ENTER): ACCEPT.
pub const TDX_EXT_EXIT_QUAL_TYPE_ACCEPT: u64 = 1;
/// Extended exit qualification type: access to a PENDING page with #VE disabled.
pub const TDX_EXT_EXIT_QUAL_TYPE_PENDING_EPT_VIOLATION: u64 = 6;
