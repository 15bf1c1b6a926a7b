//! The I/O APIC of QEMU's q35 with a split irqchip (`hw/intc/ioapic.c`): in userspace, at
//! 0xFEC00000, 24 pins, version 0x20. A TD reaches it through MMIO on its shared alias (Linux
//! maps it decrypted). Only the registers are played — IOREGSEL, IOWIN, the ID, version,
//! arbitration and redirection-table registers — because nothing in the emulated platform
//! raises a pin: the guest can program it (Linux does, for the ACPI SCI) and read it back.

use std::sync::Mutex;

/// Its guest-physical base (`IO_APIC_DEFAULT_ADDRESS`).
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Its MMIO window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Pins (`IOAPIC_NUM_PINS`).
const PINS: usize = 24;
/// The version QEMU's I/O APIC reports (`IOAPIC_VER_DEF`).
const VERSION: u32 = 0x20;
/// IOREGSEL and IOWIN offsets.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// The redirection table's first register, and a masked entry (QEMU's reset value).
const IOREDTBL: u32 = 0x10;
const MASKED: u64 = 1 << 16;

/// The I/O APIC's registers.
pub struct IoApic {
    state: Mutex<State>,
}

struct State {
    select: u32,
    id: u32,
    redtbl: [u64; PINS],
}

impl Default for IoApic {
    fn default() -> Self {
        IoApic {
            state: Mutex::new(State {
                select: 0,
                id: 0,
                redtbl: [MASKED; PINS],
            }),
        }
    }
}

impl IoApic {
    /// A guest read of `size` bytes at `offset` in the window (`ioapic_mem_read`).
    pub fn read(&self, offset: u64) -> u32 {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match offset {
            IOREGSEL => s.select,
            IOWIN => s.register(),
            _ => 0,
        }
    }

    /// A guest write at `offset` (`ioapic_mem_write`).
    pub fn write(&self, offset: u64, value: u32) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match offset {
            IOREGSEL => s.select = value & 0xFF,
            IOWIN => s.set_register(value),
            _ => {}
        }
    }
}

impl State {
    fn register(&self) -> u32 {
        match self.select {
            0 => self.id,
            1 => ((PINS as u32 - 1) << 16) | VERSION,
            2 => 0,
            r => self.pin(r).map_or(0, |(p, high)| {
                (self.redtbl[p] >> if high { 32 } else { 0 }) as u32
            }),
        }
    }

    fn set_register(&mut self, v: u32) {
        match self.select {
            0 => self.id = v & 0x0F00_0000,
            r => {
                if let Some((p, high)) = self.pin(r) {
                    let e = &mut self.redtbl[p];
                    *e = if high {
                        (*e & 0xFFFF_FFFF) | (u64::from(v) << 32)
                    } else {
                        // Delivery status and remote IRR are read-only (bits 12, 14).
                        let ro = *e & (1 << 12 | 1 << 14);
                        (*e & !0xFFFF_FFFF) | (u64::from(v) & !(1 << 12 | 1 << 14)) | ro
                    };
                }
            }
        }
    }

    /// The pin and half of redirection register `r`.
    fn pin(&self, r: u32) -> Option<(usize, bool)> {
        let i = r.checked_sub(IOREDTBL)? as usize;
        (i / 2 < PINS).then_some((i / 2, i % 2 == 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_and_pins_read_as_qemus() {
        let a = IoApic::default();
        a.write(IOREGSEL, 1);
        assert_eq!(a.read(IOWIN), 0x17_0020);
        a.write(IOREGSEL, 0x10 + 2 * 9);
        assert_eq!(a.read(IOWIN), MASKED as u32, "every pin starts masked");
    }

    #[test]
    fn a_programmed_pin_reads_back() {
        let a = IoApic::default();
        a.write(IOREGSEL, 0x10 + 2 * 9);
        a.write(IOWIN, 0xA039);
        a.write(IOREGSEL, 0x10 + 2 * 9 + 1);
        a.write(IOWIN, 0x0100_0000);
        a.write(IOREGSEL, 0x10 + 2 * 9);
        assert_eq!(a.read(IOWIN), 0xA039 & !(1 << 12 | 1 << 14));
        a.write(IOREGSEL, 0x10 + 2 * 9 + 1);
        assert_eq!(a.read(IOWIN), 0x0100_0000);
        a.write(IOREGSEL, 0x10 + 2 * 24);
        assert_eq!(a.read(IOWIN), 0, "past the last pin");
    }
}
