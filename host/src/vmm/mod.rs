//! The VMM role (QEMU's part), the same for the KVM runner (`td`) and the simulator (`sim`):
//! what userspace does with KVM's exits for a TD — converting memory on MapGPA, implicit
//! conversion on memory-fault exits, the console and exit devices — and the loop that serves
//! one TDCALL through the TDX module, KVM and the VMM.

mod acpi;
mod acpi_link;
mod convert;
mod exits;
mod fw_cfg;
mod io;
mod ioapic;
mod tdx;

pub use acpi::{build_q35, AcpiBlobs};
pub use acpi_link::{link as link_acpi, LinkedAcpi};
pub use convert::{ConvertError, Injector, MarkSink, SharedView, Vmm};
pub use exits::{handle_tdcall, resolve_ept_violation, TdcallError, FAULT_PROGRESS_TIMEOUT};
pub use fw_cfg::FwCfg;
pub use io::{GuestExit, GuestIo};
pub use ioapic::{IoApic, IOAPIC_BASE, IOAPIC_SIZE};
pub use tdx::{
    GET_QUOTE_HDR_SIZE, GET_QUOTE_MAX_BUF_LEN, GET_QUOTE_QGS_UNAVAILABLE,
    GET_QUOTE_STRUCTURE_VERSION, TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT,
};
