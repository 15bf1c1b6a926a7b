//! QEMU's fw_cfg device at its q35 I/O ports (`hw/nvram/fw_cfg.c`): a guest writes an item's
//! key to the selector port and reads the item byte by byte from the data port, or hands the
//! DMA port the address of an `FWCfgDmaAccess` (in a TD, in memory it converted to shared, as
//! TDVF does) and the device copies a whole run of the item there. A TD reaches the ports
//! through TDVMCALL<Instruction.IO>. tdxlab publishes what a q35 guest needs to shut down:
//! the ACPI files (`acpi::build_q35`).

use super::acpi::build_q35;
use super::SharedView;
use shared_abi::fw_cfg::dma::{self, Access};
use shared_abi::fw_cfg::{
    file, key, DIR_ENTRY_SIZE, FILE_NAME_SIZE, ID_DMA, ID_TRADITIONAL, SIGNATURE,
};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The device: its items, and the one selector every vCPU shares (as on QEMU).
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    /// The selected key and the read offset inside its item.
    cursor: Mutex<(u16, usize)>,
    /// The DMA address register (`dma_addr`): its high half waits for the low one.
    dma_addr: Mutex<u64>,
}

/// The most a DMA transfer copies per step: a guest-chosen length up to 4 GiB is served in
/// steps, so the host never allocates for it.
const DMA_STEP: usize = 64 << 10;

impl FwCfg {
    /// A device with `files` (name, contents), numbered from `key::FILE_FIRST` in order.
    pub fn with_files(files: &[(&str, Vec<u8>)]) -> FwCfg {
        let mut items = BTreeMap::new();
        items.insert(key::SIGNATURE, SIGNATURE.to_vec());
        // `fw_cfg_common_realize`: FW_CFG_VERSION, | FW_CFG_VERSION_DMA with DMA enabled, as
        // q35's `fw_cfg_arch_create` asks (`fw_cfg_init_io_dma` with a DMA port).
        items.insert(key::ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        let mut dir = (files.len() as u32).to_be_bytes().to_vec();
        for (i, (name, data)) in files.iter().enumerate() {
            let select = key::FILE_FIRST + i as u16;
            let mut entry = [0u8; DIR_ENTRY_SIZE];
            entry[0..4].copy_from_slice(&(data.len() as u32).to_be_bytes());
            entry[4..6].copy_from_slice(&select.to_be_bytes());
            let n = name.len().min(FILE_NAME_SIZE - 1);
            entry[8..8 + n].copy_from_slice(&name.as_bytes()[..n]);
            dir.extend_from_slice(&entry);
            items.insert(select, data.clone());
        }
        items.insert(key::FILE_DIR, dir);
        FwCfg {
            items,
            cursor: Mutex::new((key::SIGNATURE, 0)),
            dma_addr: Mutex::new(0),
        }
    }

    /// The device of a q35 machine with `vcpus` vCPUs: QEMU's ACPI files.
    pub fn q35(vcpus: u32) -> FwCfg {
        let acpi = build_q35(vcpus);
        FwCfg::with_files(&[
            (file::ACPI_RSDP, acpi.rsdp),
            (file::ACPI_TABLES, acpi.tables),
            (file::TABLE_LOADER, acpi.loader),
        ])
    }

    /// A write of the selector port: select `key`, from its first byte.
    pub fn select(&self, key: u16) {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = (key, 0);
    }

    /// A read of the data port: the selected item's next byte; past its end, or for a key
    /// with no item, 0 (`fw_cfg_read`).
    pub fn read(&self) -> u8 {
        let mut c = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let byte = (self.items.get(&c.0))
            .and_then(|item| item.get(c.1))
            .copied();
        if byte.is_some() {
            c.1 += 1;
        }
        byte.unwrap_or(0)
    }

    /// An access to the DMA address register, `offset` bytes into it (`fw_cfg_dma_mem_read`
    /// and `_write`, a big-endian device: an x86 `out` of EAX hands QEMU EAX byte-swapped).
    /// Reads give the signature's bytes; a 4-byte write of the high half latches it, of the
    /// low half runs the transfer through `mem`, QEMU's view of guest memory. Other writes
    /// do nothing, as in QEMU.
    pub fn dma_io(
        &self,
        offset: u16,
        size: u8,
        write: bool,
        data: u32,
        mem: &dyn SharedView,
    ) -> u32 {
        if !write {
            let at = offset as usize;
            let bytes = dma::SIGNATURE.get(at..at + size as usize).unwrap_or(&[]);
            return bytes.iter().rev().fold(0, |v, b| v << 8 | *b as u32);
        }
        let value = data.swap_bytes() as u64;
        let mut addr = self.dma_addr.lock().unwrap_or_else(|e| e.into_inner());
        match (offset, size) {
            (0, 4) => *addr = value << 32,
            (4, 4) => {
                let at = std::mem::take(&mut *addr) | value;
                drop(addr);
                self.fw_cfg_dma_transfer(at, mem);
            }
            _ => {}
        }
        0
    }

    /// `fw_cfg_dma_transfer`: read the `FWCfgDmaAccess` at `at`, select if asked, then read
    /// (zeros past the item's end), skip, or fail a write (no item is writable); write the
    /// control word back as 0 or ERROR. An unreadable access structure gets ERROR written to
    /// its control word.
    fn fw_cfg_dma_transfer(&self, at: u64, mem: &dyn SharedView) {
        let mut raw = [0u8; dma::ACCESS_SIZE];
        let control = if mem.read(at, &mut raw) {
            self.dma_run(Access::decode(&raw), mem)
        } else {
            dma::CTL_ERROR
        };
        mem.write(at, &control.to_be_bytes());
    }

    /// Run one decoded transfer; returns the control word to write back.
    fn dma_run(&self, mut a: Access, mem: &dyn SharedView) -> u32 {
        let mut c = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        if a.control & dma::CTL_SELECT != 0 {
            *c = ((a.control >> 16) as u16, 0);
        }
        let (read, write) = if a.control & dma::CTL_READ != 0 {
            (true, false)
        } else if a.control & dma::CTL_WRITE != 0 {
            (false, true)
        } else if a.control & dma::CTL_SKIP != 0 {
            (false, false)
        } else {
            a.length = 0;
            (false, false)
        };
        let item = self.items.get(&c.0).map_or(&[][..], Vec::as_slice);
        let mut zeros = Vec::new();
        while a.length > 0 {
            let data = item.get(c.1..).unwrap_or(&[]);
            let step = (a.length as usize).min(DMA_STEP);
            let (len, ok) = if write {
                (step, false) // no item is writable
            } else if data.is_empty() {
                // No item, or past its end: a read gives zeros, a skip moves on.
                zeros.resize(step, 0);
                (step, !read || mem.write(a.address, &zeros))
            } else {
                let len = step.min(data.len());
                c.1 += len;
                (len, !read || mem.write(a.address, &data[..len]))
            };
            if !ok {
                return dma::CTL_ERROR;
            }
            a.address = a.address.wrapping_add(len as u64);
            a.length -= len as u32;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_abi::fw_cfg::{apply_loader, pm, LoaderError, LoaderFiles};

    fn read_item(d: &FwCfg, key: u16, len: usize) -> Vec<u8> {
        d.select(key);
        (0..len).map(|_| d.read()).collect()
    }

    /// The guest's side, on the host: files read from the device into an arena below 4 GiB
    /// (the tables hold 32-bit pointers), whose addresses serve as "physical" ones (the
    /// handler below maps identity).
    struct Files<'d>(
        &'d FwCfg,
        Vec<(Vec<u8>, &'static mut [u8])>,
        &'static mut [u8],
    );

    fn arena() -> &'static mut [u8] {
        const LEN: usize = 1 << 18;
        // SAFETY: a fresh anonymous mapping, leaked for the test's life.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            std::slice::from_raw_parts_mut(p as *mut u8, LEN)
        }
    }

    impl LoaderFiles for Files<'_> {
        fn allocate(&mut self, name: &[u8], align: u32, _: u8) -> Result<u64, LoaderError> {
            let dir = read_item(self.0, key::FILE_DIR, 4 + 3 * DIR_ENTRY_SIZE);
            let entry = (dir[4..].chunks(DIR_ENTRY_SIZE))
                .find(|e| e[8..].starts_with(name) && e[8 + name.len()] == 0)
                .ok_or(LoaderError::UnknownFile)?;
            let size = u32::from_be_bytes(entry[0..4].try_into().unwrap()) as usize;
            let select = u16::from_be_bytes(entry[4..6].try_into().unwrap());
            let skip = self.2.as_ptr().align_offset(align.max(1) as usize);
            let rest = std::mem::take(&mut self.2);
            let (buf, rest) = rest[skip..].split_at_mut(size);
            self.2 = rest;
            buf.copy_from_slice(&read_item(self.0, select, size));
            let at = buf.as_ptr() as u64;
            self.1.push((name.to_vec(), buf));
            Ok(at)
        }
        fn file(&mut self, name: &[u8]) -> Option<(u64, &mut [u8])> {
            let f = self.1.iter_mut().find(|f| f.0 == name)?;
            Some((f.1.as_ptr() as u64, &mut f.1[..]))
        }
    }

    #[derive(Clone)]
    struct Identity;

    impl acpi::AcpiHandler for Identity {
        unsafe fn map_physical_region<T>(
            &self,
            at: usize,
            size: usize,
        ) -> acpi::PhysicalMapping<Self, T> {
            let p = std::ptr::NonNull::new(at as *mut T).expect("tables are never at 0");
            // SAFETY: `at` is inside a live buffer of the test (the loader's files).
            unsafe { acpi::PhysicalMapping::new(at, p, size, size, Identity) }
        }
        fn unmap_physical_region<T>(_: &acpi::PhysicalMapping<Self, T>) {}
    }

    #[test]
    fn the_signature_and_id_read_as_qemus() {
        let d = FwCfg::q35(1);
        assert_eq!(read_item(&d, key::SIGNATURE, 4), b"QEMU");
        // The port interface and DMA, as QEMU's q35 (`fw_cfg_common_realize`).
        assert_eq!(read_item(&d, key::ID, 4), [3, 0, 0, 0]);
        // Past the end, and for an unknown key: zeros.
        assert_eq!(read_item(&d, key::SIGNATURE, 6)[4..], [0, 0]);
        assert_eq!(read_item(&d, 0x7777, 2), [0, 0]);
    }

    /// The loader places and links the tables so that the `acpi` crate validates every
    /// checksum and finds the FADT's PM1a control block, the DSDT's `_S5` and one local APIC
    /// per vCPU in the MADT.
    #[test]
    fn the_acpi_tables_load_and_parse_as_a_guest_finds_them() {
        let d = FwCfg::q35(3);
        let mut files = Files(&d, Vec::new(), arena());
        let dir = read_item(&d, key::FILE_DIR, 4);
        assert_eq!(u32::from_be_bytes(dir.try_into().unwrap()), 3);
        files.allocate(file::TABLE_LOADER.as_bytes(), 1, 0).unwrap();
        let script = files.1[0].1.to_vec();
        apply_loader(&script, &mut files).unwrap();
        let (rsdp, _) = files.file(file::ACPI_RSDP.as_bytes()).unwrap();
        // SAFETY: the RSDP and every table it reaches live in `files` until the end.
        let tables = unsafe { acpi::AcpiTables::from_rsdp(Identity, rsdp as usize) }.unwrap();
        let fadt = tables.find_table::<acpi::fadt::Fadt>().unwrap();
        let cnt = fadt.pm1a_control_block().unwrap();
        assert_eq!(cnt.address, pm::PM1A_CNT_BLK as u64);
        assert_eq!(cnt.address_space, acpi::address::AddressSpace::SystemIo);
        // SMM is off for a TD: no SMI command port, no ACPI enable/disable values
        // (QEMU 10.1 `init_common_fadt_data`), so an OS does no SMI handshake.
        let (smi_cmd, enable, disable) = (fadt.smi_cmd_port, fadt.acpi_enable, fadt.acpi_disable);
        assert_eq!((smi_cmd, enable, disable), (0, 0, 0));
        let dsdt = tables.dsdt().unwrap();
        // SAFETY: as above.
        let aml =
            unsafe { std::slice::from_raw_parts(dsdt.address as *const u8, dsdt.length as usize) };
        assert_eq!(
            shared_abi::fw_cfg::find_s5_slp_typ(aml),
            Some(pm::S5_SLP_TYP)
        );
        let madt = tables.find_table::<acpi::madt::Madt>().unwrap();
        let lapics = (madt.get().entries())
            .filter(|e| matches!(e, acpi::madt::MadtEntry::LocalApic(_)))
            .count();
        assert_eq!(lapics, 3);
    }

    /// Guest memory for DMA: 64 KiB at GPA 0.
    struct Mem(Mutex<Vec<u8>>);

    impl SharedView for Mem {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
            let m = self.0.lock().unwrap();
            let Some(src) = (gpa as usize)
                .checked_add(buf.len())
                .and_then(|e| m.get(gpa as usize..e))
            else {
                return false;
            };
            buf.copy_from_slice(src);
            true
        }
        fn write(&self, gpa: u64, buf: &[u8]) -> bool {
            let mut m = self.0.lock().unwrap();
            let Some(dst) = (gpa as usize)
                .checked_add(buf.len())
                .and_then(|e| m.get_mut(gpa as usize..e))
            else {
                return false;
            };
            dst.copy_from_slice(buf);
            true
        }
    }

    /// Run one DMA access at GPA 0 as a guest does (`out` of the byte-swapped halves);
    /// returns the control word the device left.
    fn dma(d: &FwCfg, mem: &Mem, a: Access) -> u32 {
        mem.write(0, &a.encode());
        d.dma_io(0, 4, true, 0, mem);
        d.dma_io(4, 4, true, 0, mem);
        let mut c = [0u8; 4];
        mem.read(0, &mut c);
        u32::from_be_bytes(c)
    }

    /// The DMA interface as QEMU's `fw_cfg_dma_transfer`: select and read a file, zeros
    /// past its end, skip, ERROR for a write and for memory the device cannot reach; the
    /// register reads as "QEMU CFG".
    #[test]
    fn dma_reads_selects_skips_and_fails_as_qemu() {
        let d = FwCfg::q35(2);
        let mem = Mem(Mutex::new(vec![0xEE; 1 << 16]));
        let sig: Vec<u8> = (0..2)
            .flat_map(|i| d.dma_io(i * 4, 4, false, 0, &mem).to_le_bytes())
            .collect();
        assert_eq!(sig, b"QEMU CFG");
        let tables = read_item(&d, key::FILE_FIRST + 1, 0x20000);
        let read = |select: bool, length: u32| Access {
            control: dma::CTL_READ
                | if select {
                    dma::CTL_SELECT | u32::from(key::FILE_FIRST + 1) << 16
                } else {
                    0
                },
            length,
            address: 0x100,
        };
        assert_eq!(dma(&d, &mem, read(true, 100)), 0);
        assert_eq!(mem.0.lock().unwrap()[0x100..0x100 + 100], tables[..100]);
        // The next access goes on where the last stopped; a skip moves on too.
        let skip = Access {
            control: dma::CTL_SKIP,
            length: 28,
            address: 0,
        };
        assert_eq!(dma(&d, &mem, skip), 0);
        assert_eq!(dma(&d, &mem, read(false, 72)), 0);
        assert_eq!(mem.0.lock().unwrap()[0x100..0x100 + 72], tables[128..200]);
        let write = Access {
            control: dma::CTL_WRITE,
            length: 4,
            address: 0x100,
        };
        assert_eq!(dma(&d, &mem, write), dma::CTL_ERROR);
        let outside = Access {
            address: 1 << 40,
            ..read(true, 16)
        };
        assert_eq!(dma(&d, &mem, outside), dma::CTL_ERROR);
        // An access structure the device cannot reach: nothing to write ERROR into either,
        // and nothing panics.
        d.dma_io(0, 4, true, 0x0000_0001u32.swap_bytes(), &mem);
        d.dma_io(4, 4, true, 0, &mem);
        // A guest-chosen length of 4 GiB - 1 past the end fails where memory ends.
        let huge = Access {
            control: dma::CTL_READ | dma::CTL_SELECT,
            length: u32::MAX,
            address: 0x100,
        };
        assert_eq!(dma(&d, &mem, huge), dma::CTL_ERROR);
    }
}
