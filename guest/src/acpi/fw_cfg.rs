//! QEMU's fw_cfg device through its I/O ports — in a TD each access is a
//! TDVMCALL<Instruction.IO> — and the table loader's files, placed on the heap. Small items
//! are read a byte per port access; whole files, where the device offers DMA (QEMU's q35
//! does), with DMA through a shared bounce buffer, as TDVF reads QEMU's 128 KiB ACPI blob.

use alloc::vec::Vec;
use shared_abi::fw_cfg::dma::{self, Access};
use shared_abi::fw_cfg::{
    key, LoaderError, LoaderFiles, DATA_PORT, DIR_ENTRY_SIZE, ID_DMA, SELECTOR_PORT, SIGNATURE,
};
use shared_abi::{Gpa, GpaRange, Gpaw};

/// Select `key` and read `len` bytes of it (byte by byte: the data port is 8 bits wide).
fn read(key: u16, len: usize) -> Option<Vec<u8>> {
    crate::arch::tdx()
        .io_write(2, SELECTOR_PORT, key as u32)
        .ok()?;
    read_on(len)
}

/// Read the next `len` bytes of the selected item.
fn read_on(len: usize) -> Option<Vec<u8>> {
    let mut tdx = crate::arch::tdx();
    (0..len)
        .map(|_| tdx.io_read(1, DATA_PORT).ok().map(|b| b as u8))
        .collect()
}

/// True when the machine has fw_cfg (its signature item reads "QEMU").
pub fn present() -> bool {
    read(key::SIGNATURE, 4).is_some_and(|s| s == SIGNATURE)
}

/// The file directory, read once (every byte is a TDVMCALL): (name, size, selector).
pub struct Dir(Vec<(Vec<u8>, usize, u16)>);

impl Dir {
    /// Read the directory: its count, then that many entries, in one pass over the item.
    pub fn read() -> Option<Dir> {
        let count = u32::from_be_bytes(read(key::FILE_DIR, 4)?.try_into().ok()?) as usize;
        let entries = read_on(count.min(4096) * DIR_ENTRY_SIZE)?;
        let files = (entries.chunks_exact(DIR_ENTRY_SIZE))
            .map(|e| {
                let n = &e[8..];
                let n = &n[..n.iter().position(|c| *c == 0).unwrap_or(n.len())];
                let size = u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as usize;
                (n.to_vec(), size, u16::from_be_bytes([e[4], e[5]]))
            })
            .collect();
        Some(Dir(files))
    }

    /// A file's (size, selector).
    fn find(&self, name: &[u8]) -> Option<(usize, u16)> {
        (self.0.iter()).find(|f| f.0 == name).map(|f| (f.1, f.2))
    }

    /// Read a whole file: with DMA where the device has it, else byte by byte.
    pub fn read_file(&self, name: &[u8]) -> Option<Vec<u8>> {
        let (size, select) = self.find(name)?;
        if dma_available() {
            dma_read(select, size)
        } else {
            read(select, size)
        }
    }
}

/// The device's ID item offers the DMA interface.
fn dma_available() -> bool {
    read(key::ID, 4)
        .and_then(|id| id.try_into().ok())
        .is_some_and(|id| u32::from_le_bytes(id) & ID_DMA != 0)
}

/// Pages of the bounce buffer: the access structure's page, then the data pages.
const BOUNCE_PAGES: u64 = 16;

/// Memory the device can reach: heap pages converted to shared for as long as it lives, and
/// converted back before they return to the heap (leaked if that fails: the heap must only
/// hold private pages).
struct Bounce {
    range: GpaRange,
    gpaw: Gpaw,
}

impl Bounce {
    fn new(gpaw: Gpaw) -> Option<Bounce> {
        let layout = Self::layout();
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { alloc::alloc::alloc(layout) };
        if p.is_null() {
            return None;
        }
        let range = GpaRange::new(Gpa(p as u64), BOUNCE_PAGES * 4096);
        crate::convert::to_shared(range, gpaw).ok()?;
        Some(Bounce { range, gpaw })
    }
    fn layout() -> core::alloc::Layout {
        core::alloc::Layout::from_size_align(BOUNCE_PAGES as usize * 4096, 4096)
            .unwrap_or(core::alloc::Layout::new::<u8>())
    }
    /// The access structure's address; the data follows a page later.
    fn gpa(&self) -> u64 {
        self.range.start.0
    }
    fn data_len() -> usize {
        (BOUNCE_PAGES as usize - 1) * 4096
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        if crate::convert::to_private(self.range, self.gpaw).is_ok() {
            // SAFETY: allocated in `new` with this layout, private again.
            unsafe { alloc::alloc::dealloc(self.range.start.0 as *mut u8, Self::layout()) };
        }
    }
}

/// Read `len` bytes of item `select` by DMA (`docs/specs/fw_cfg.rst`): for each run, write
/// an `FWCfgDmaAccess` into the bounce buffer, hand the device its big-endian address (the
/// high half, then the low one, which starts the transfer) and find control 0 when it is
/// done. The address is the plain GPA: the device (QEMU) sees guest memory without the
/// shared bit.
fn dma_read(select: u16, len: usize) -> Option<Vec<u8>> {
    let mut tdx = crate::arch::tdx();
    let gpaw = tdx.tdg_vp_info().ok()?.gpaw;
    let bounce = Bounce::new(gpaw)?;
    let at = bounce.gpa();
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = (len - out.len()).min(Bounce::data_len());
        let select = if out.is_empty() {
            dma::CTL_SELECT | (select as u32) << 16
        } else {
            0
        };
        let access = Access {
            control: dma::CTL_READ | select,
            length: n as u32,
            address: at + 4096,
        };
        // SAFETY: the bounce buffer's first page is ours and mapped (shared).
        unsafe { core::ptr::write_volatile(at as *mut [u8; dma::ACCESS_SIZE], access.encode()) };
        tdx.io_write(4, dma::PORT, ((at >> 32) as u32).swap_bytes())
            .ok()?;
        tdx.io_write(4, dma::PORT_LOW, (at as u32).swap_bytes())
            .ok()?;
        // SAFETY: as above; the device wrote the control word back.
        let control = unsafe { core::ptr::read_volatile(at as *const [u8; 4]) };
        if u32::from_be_bytes(control) != 0 {
            return None;
        }
        // SAFETY: the data pages follow the first, `n` bytes written by the device.
        let data = unsafe { core::slice::from_raw_parts((at + 4096) as *const u8, n) };
        out.extend_from_slice(data);
    }
    Some(out)
}

/// The loader's files, each read into heap memory that stays (the tables live on after
/// the loader: they are the machine's ACPI tables now). The heap is identity-mapped, so a
/// file's address is its guest-physical one.
pub struct HeapFiles {
    dir: Dir,
    files: Vec<(Vec<u8>, &'static mut [u8])>,
}

impl HeapFiles {
    /// No file placed yet; they come from `dir`.
    pub fn new(dir: Dir) -> HeapFiles {
        HeapFiles {
            dir,
            files: Vec::new(),
        }
    }
}

impl LoaderFiles for HeapFiles {
    fn allocate(&mut self, name: &[u8], align: u32, _zone: u8) -> Result<u64, LoaderError> {
        let data = self.dir.read_file(name).ok_or(LoaderError::UnknownFile)?;
        let size = data.len();
        let layout = core::alloc::Layout::from_size_align(size.max(1), (align as usize).max(1))
            .map_err(|_| LoaderError::NoMemory)?;
        // SAFETY: a non-zero-sized layout; the memory is never freed (see above).
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(LoaderError::NoMemory);
        }
        // SAFETY: `p` points at `size` fresh bytes owned by nobody else.
        let buf = unsafe { core::slice::from_raw_parts_mut(p, size) };
        buf.copy_from_slice(&data);
        self.files.push((name.into(), buf));
        Ok(p as u64)
    }

    fn file(&mut self, name: &[u8]) -> Option<(u64, &mut [u8])> {
        let f = self.files.iter_mut().find(|f| f.0 == name)?;
        Some((f.1.as_ptr() as u64, &mut *f.1))
    }
}
