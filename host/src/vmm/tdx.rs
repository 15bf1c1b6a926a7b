//! QEMU's answers to the TDVMCALLs KVM hands to userspace as KVM_EXIT_TDX (QEMU 10.1
//! `target/i386/kvm/tdx.c`): GetQuote, GetTdVmCallInfo leaf 1, SetupEventNotifyInterrupt.
//! tdxlab's QEMU runs without `quote-generation-socket`, so GetQuote finds no quote service.

use super::Vmm;
use shared_abi::{Gpa, VmcallStatus};

/// `TDX_GET_QUOTE_HDR_SIZE`: `struct tdx_get_quote_header` (version, error code, in_len,
/// out_len).
pub const GET_QUOTE_HDR_SIZE: usize = 24;
/// `TDX_GET_QUOTE_STRUCTURE_VERSION`.
pub const GET_QUOTE_STRUCTURE_VERSION: u64 = 1;
/// `TDX_GET_QUOTE_MAX_BUF_LEN`: QEMU refuses larger buffers.
pub const GET_QUOTE_MAX_BUF_LEN: u64 = 128 * 1024;
/// `TDX_VP_GET_QUOTE_QGS_UNAVAILABLE`: the header's error code when no quote service is
/// configured.
pub const GET_QUOTE_QGS_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;
/// `TDG_VP_VMCALL_SUBFUNC_SET_EVENT_NOTIFY_INTERRUPT`: GetTdVmCallInfo leaf 1, R11 bit 1.
pub const TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 1 << 1;

/// The GetQuote header as the guest wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GetQuoteHeader {
    structure_version: u64,
    error_code: u64,
    in_len: u32,
    out_len: u32,
}

impl GetQuoteHeader {
    fn decode(b: &[u8; GET_QUOTE_HDR_SIZE]) -> GetQuoteHeader {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        GetQuoteHeader {
            structure_version: u64_at(0),
            error_code: u64_at(8),
            in_len: u32_at(16),
            out_len: u32_at(20),
        }
    }

    fn encode(&self) -> [u8; GET_QUOTE_HDR_SIZE] {
        let mut b = [0u8; GET_QUOTE_HDR_SIZE];
        b[0..8].copy_from_slice(&self.structure_version.to_le_bytes());
        b[8..16].copy_from_slice(&self.error_code.to_le_bytes());
        b[16..20].copy_from_slice(&self.in_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.out_len.to_le_bytes());
        b
    }
}

impl Vmm {
    /// `tdx_handle_get_quote` with no quote service: an empty buffer or a bad header is
    /// INVALID_OPERAND (QEMU's preset answer), an unaligned one ALIGN_ERROR; a good request
    /// gets GET_QUOTE_SERVICE_UNAVAILABLE in the header's error code and SUCCESS. The
    /// buffer is read and written through QEMU's view of guest memory (the shared backing
    /// at `gpa`, the shared bit already stripped by KVM).
    pub(crate) fn tdx_handle_get_quote(&self, gpa: Gpa, len: u64) -> VmcallStatus {
        if len == 0 {
            return VmcallStatus::INVALID_OPERAND;
        }
        if !gpa.0.is_multiple_of(4096) || !len.is_multiple_of(4096) {
            return VmcallStatus::ALIGN_ERROR;
        }
        let Some(view) = &self.shared_view else {
            return VmcallStatus::INVALID_OPERAND;
        };
        let mut raw = [0u8; GET_QUOTE_HDR_SIZE];
        if !view.read(gpa.0, &mut raw) {
            return VmcallStatus::INVALID_OPERAND;
        }
        let mut hdr = GetQuoteHeader::decode(&raw);
        if hdr.structure_version != GET_QUOTE_STRUCTURE_VERSION
            || len > GET_QUOTE_MAX_BUF_LEN
            || hdr.in_len as u64 > len - GET_QUOTE_HDR_SIZE as u64
        {
            return VmcallStatus::INVALID_OPERAND;
        }
        hdr.error_code = GET_QUOTE_QGS_UNAVAILABLE;
        if !view.write(gpa.0, &hdr.encode()) {
            return VmcallStatus::INVALID_OPERAND;
        }
        VmcallStatus::SUCCESS
    }

    /// `tdx_handle_setup_event_notify_interrupt`: remember the vector and the asking vCPU's
    /// APIC ID (QEMU would raise it when a quote completes, which here never happens).
    pub(crate) fn tdx_handle_setup_event_notify_interrupt(
        &self,
        vcpu: u32,
        vector: u8,
    ) -> VmcallStatus {
        if vector < 32 {
            return VmcallStatus::INVALID_OPERAND;
        }
        *self.event_notify.lock().unwrap_or_else(|e| e.into_inner()) = Some((vector, vcpu));
        VmcallStatus::SUCCESS
    }

    /// The vector and APIC ID SetupEventNotifyInterrupt registered, if any.
    pub fn event_notify(&self) -> Option<(u8, u32)> {
        *self.event_notify.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips() {
        let h = GetQuoteHeader {
            structure_version: 1,
            error_code: 2,
            in_len: 3,
            out_len: 4,
        };
        assert_eq!(GetQuoteHeader::decode(&h.encode()), h);
    }
}
