//! QEMU's fw_cfg device, I/O-port interface only (`hw/nvram/fw_cfg.c`): a guest writes an
//! item's key to the selector port and reads the item byte by byte from the data port. A TD
//! reaches both through TDVMCALL<Instruction.IO>, as TDVF does. tdxlab publishes what a
//! q35 guest needs to shut down: the ACPI files (`acpi::build_q35`).

use super::acpi::build_q35;
use shared_abi::fw_cfg::{file, key, DIR_ENTRY_SIZE, FILE_NAME_SIZE, ID_TRADITIONAL, SIGNATURE};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The device: its items, and the one selector every vCPU shares (as on QEMU).
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    /// The selected key and the read offset inside its item.
    cursor: Mutex<(u16, usize)>,
}

impl FwCfg {
    /// A device with `files` (name, contents), numbered from `key::FILE_FIRST` in order.
    pub fn with_files(files: &[(&str, Vec<u8>)]) -> FwCfg {
        let mut items = BTreeMap::new();
        items.insert(key::SIGNATURE, SIGNATURE.to_vec());
        items.insert(key::ID, ID_TRADITIONAL.to_le_bytes().to_vec());
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
        const LEN: usize = 1 << 16;
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
        assert_eq!(read_item(&d, key::ID, 4), [1, 0, 0, 0]);
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
}
