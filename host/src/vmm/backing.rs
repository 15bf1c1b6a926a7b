//! Guest memory on KVM: a memfd per alias, mapped twice — once for KVM's memslot, where
//! `mprotect` decides what the guest can reach (a page is mapped only while the MMU model has
//! a leaf for it), and once as the host's own view (always writable: the TDX module model
//! zeroes and clears pages through it, the VMM checks shared memory through it).

use anyhow::bail;
use std::ffi::CString;

/// One alias's backing.
pub struct Backing {
    fd: libc::c_int,
    /// The memslot's view (mprotect-controlled).
    slot: *mut u8,
    /// The host's view (always read-write).
    host: *mut u8,
    /// Bytes.
    pub len: usize,
}

// SAFETY: the mappings are plain shared memory; every access goes through raw pointers and
// races with the guest by design.
unsafe impl Send for Backing {}
// SAFETY: as above.
unsafe impl Sync for Backing {}

fn map(fd: libc::c_int, len: usize, prot: libc::c_int) -> anyhow::Result<*mut u8> {
    // SAFETY: mapping a memfd we own; checked for failure.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        bail!(
            "cannot map {} MiB of guest memory: {}",
            len >> 20,
            std::io::Error::last_os_error()
        );
    }
    Ok(p as *mut u8)
}

impl Backing {
    /// `len` bytes, the slot view initially inaccessible unless `accessible`.
    pub fn new(name: &str, len: u64, accessible: bool) -> anyhow::Result<Backing> {
        let cname = CString::new(name).expect("no NUL in backing names");
        // SAFETY: plain syscalls on a fresh fd; results checked.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            bail!("memfd_create: {}", std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            bail!(
                "cannot size {} MiB of guest memory: {}",
                len >> 20,
                std::io::Error::last_os_error()
            );
        }
        let prot = if accessible {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        let slot = map(fd, len as usize, prot)?;
        let host = map(fd, len as usize, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(Backing {
            fd,
            slot,
            host,
            len: len as usize,
        })
    }
    /// The address KVM's memslot uses.
    pub fn slot_addr(&self) -> u64 {
        self.slot as u64
    }
    fn check(&self, off: u64, len: u64) -> bool {
        off.checked_add(len).is_some_and(|e| e <= self.len as u64)
    }
    /// Let the guest reach `[off, off + len)` or not (coalesced into one mprotect).
    pub fn set_accessible(&self, off: u64, len: u64, accessible: bool) {
        if !self.check(off, len) {
            return;
        }
        let prot = if accessible {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        // SAFETY: page-aligned range inside the slot mapping.
        let r = unsafe {
            libc::mprotect(
                self.slot.add(off as usize) as *mut libc::c_void,
                len as usize,
                prot,
            )
        };
        assert_eq!(
            r,
            0,
            "mprotect of guest memory failed: {}",
            std::io::Error::last_os_error()
        );
    }
    /// Discard the contents (FALLOC_FL_PUNCH_HOLE): later reads see zeroes.
    pub fn punch_hole(&self, off: u64, len: u64) {
        if !self.check(off, len) {
            return;
        }
        // SAFETY: a range inside our memfd.
        unsafe {
            libc::fallocate(
                self.fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
    }
    /// Copy `bytes` in through the host view.
    pub fn write(&self, off: u64, bytes: &[u8]) {
        assert!(self.check(off, bytes.len() as u64));
        // SAFETY: in bounds of the host view.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.host.add(off as usize), bytes.len())
        }
    }
    /// Copy out through the host view.
    pub fn read(&self, off: u64, out: &mut [u8]) {
        assert!(self.check(off, out.len() as u64));
        // SAFETY: in bounds of the host view.
        unsafe {
            std::ptr::copy_nonoverlapping(self.host.add(off as usize), out.as_mut_ptr(), out.len())
        }
    }
    /// The offset of the first non-zero byte in `[off, off + len)`, reading only the
    /// extents that hold data (SEEK_DATA / SEEK_HOLE skip punched and never-written pages, so
    /// an audit of a mostly empty 2 GiB backing allocates nothing).
    pub fn first_nonzero(&self, off: u64, len: u64) -> Option<u64> {
        let end = (off + len).min(self.len as u64);
        let mut at = off;
        while at < end {
            // SAFETY: lseek on our own fd.
            let data = unsafe { libc::lseek(self.fd, at as libc::off_t, libc::SEEK_DATA) };
            if data < 0 || data as u64 >= end {
                return None; // ENXIO: no data up to EOF.
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(self.fd, data, libc::SEEK_HOLE) };
            let stop = if hole < 0 {
                end
            } else {
                (hole as u64).min(end)
            };
            let data = data as u64;
            // SAFETY: [data, stop) lies in the host view (stop <= end <= len); the audit runs
            // with every vCPU stopped, so nothing writes it meanwhile.
            let bytes = unsafe {
                std::slice::from_raw_parts(self.host.add(data as usize), (stop - data) as usize)
            };
            if let Some(i) = bytes.iter().position(|b| *b != 0) {
                return Some(data + i as u64);
            }
            at = stop.max(at + 1);
        }
        None
    }
    /// Zero through the host view.
    pub fn zero(&self, off: u64, len: u64) {
        if self.check(off, len) {
            // SAFETY: in bounds of the host view.
            unsafe { std::ptr::write_bytes(self.host.add(off as usize), 0, len as usize) }
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: unmapping and closing what `new` created.
        unsafe {
            libc::munmap(self.slot as *mut libc::c_void, self.len);
            libc::munmap(self.host as *mut libc::c_void, self.len);
            libc::close(self.fd);
        }
    }
}
