//! The devices a TD reaches through TDVMCALL<Instruction.IO> and <ReportFatalError>: COM1
//! (printed line by line with a `[guest]` prefix), the isa-debug-exit port 0xf4 (unless the
//! run leaves it out, as QEMU does without `-device isa-debug-exit`), fw_cfg with QEMU's
//! ACPI tables, and the ICH9 PM1a control register the guest powers off with.

use super::FwCfg;
use crate::exit::ExitKind;
use serde::Serialize;
use shared_abi::doorbell::{COM1_PORT, DEBUG_EXIT_PORT};
use shared_abi::fw_cfg::{pm, DATA_PORT, SELECTOR_PORT};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
use std::sync::Mutex;

/// How the TD ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuestExit {
    /// How it stopped.
    pub kind: ExitKind,
    /// The guest's exit value (exit port) or error code.
    pub code: u64,
    /// What happened, in one line.
    pub message: String,
}

/// How many vCPUs of a stress workload started their scenario, started their final sweep,
/// and reported their result (`shared_abi::stress` lines).
#[derive(Default)]
pub struct StressMarks {
    /// `stress-phase … phase=scenario` lines.
    pub started: AtomicU32,
    /// `stress-phase … phase=sweep` lines.
    pub sweeping: AtomicU32,
    /// `stress-result` lines.
    pub results: AtomicU32,
}

impl StressMarks {
    fn note(&self, line: &str) {
        use shared_abi::stress::{PHASE_LINE, RESULT_LINE};
        let counter = if line.starts_with(RESULT_LINE) {
            &self.results
        } else if !line.starts_with(PHASE_LINE) {
            return;
        } else if line.ends_with("phase=scenario") {
            &self.started
        } else if line.ends_with("phase=sweep") {
            &self.sweeping
        } else {
            return;
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// Console and exit state shared by all vCPU threads.
pub struct GuestIo {
    lines: Mutex<Vec<Vec<u8>>>,
    /// Every complete console line, in order.
    pub output: Mutex<Vec<String>>,
    /// When each line of `output` arrived, and from which vCPU.
    pub output_at: Mutex<Vec<(std::time::Instant, u32)>>,
    /// The stress workload's markers seen so far (for live progress).
    pub marks: StressMarks,
    exit: Mutex<Option<GuestExit>>,
    /// Set once the TD must stop (exit, fatal error, timeout).
    pub stop: AtomicBool,
    /// Echo console lines to stdout (turned off when stdout fails).
    echo: AtomicBool,
    /// Stdout's reader went away while echoing (the CLI exits as a closed pipe does).
    pub stdout_closed: AtomicBool,
    /// The fw_cfg device (a machine TD has one; unit tests need none).
    fw_cfg: Option<FwCfg>,
    /// Whether the isa-debug-exit device is there.
    debug_exit: bool,
    /// PM1a_CNT: SCI_EN at reset, then as last written (SLP_EN reads back as 0).
    pm1_cnt: AtomicU32,
}

impl GuestIo {
    /// State for `vcpus` vCPUs.
    pub fn new(vcpus: u32, echo: bool) -> GuestIo {
        GuestIo {
            lines: Mutex::new(vec![Vec::new(); vcpus as usize]),
            output: Mutex::new(Vec::new()),
            output_at: Mutex::new(Vec::new()),
            marks: StressMarks::default(),
            exit: Mutex::new(None),
            stop: AtomicBool::new(false),
            echo: AtomicBool::new(echo),
            stdout_closed: AtomicBool::new(false),
            fw_cfg: None,
            debug_exit: true,
            // ICH9 in ACPI mode: with SMM off (a TD's) ICH9 registers PM1_CNT "acpi_only",
            // and QEMU 10.1's `acpi_pm1_cnt_reset` (`hw/acpi/core.c`) starts it with SCI_EN.
            pm1_cnt: AtomicU32::new(pm::SCI_EN as u32),
        }
    }

    /// Give the machine its q35 platform devices: fw_cfg with the ACPI tables for `vcpus`
    /// vCPUs, and the isa-debug-exit device if `debug_exit`.
    pub fn with_platform(mut self, vcpus: u32, debug_exit: bool) -> GuestIo {
        self.fw_cfg = Some(FwCfg::q35(vcpus));
        self.debug_exit = debug_exit;
        self
    }

    /// Record how the TD ended (the first report wins) and stop it.
    pub fn finish(&self, e: GuestExit) {
        let mut g = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
        self.stop.store(true, SeqCst);
    }

    /// How the TD ended, if it has.
    pub fn exit(&self) -> Option<GuestExit> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn put(&self, vcpu: u32, b: u8) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let Some(buf) = lines.get_mut(vcpu as usize) else {
            return;
        };
        if b != b'\n' {
            if buf.len() < 4096 {
                buf.push(b);
            }
            return;
        }
        let line = String::from_utf8_lossy(buf).into_owned();
        buf.clear();
        drop(lines);
        if let Some(step) = line.strip_prefix(shared_abi::layout::hob::TRACE_LINE) {
            return guest_trace(step);
        }
        // Not echoed (stress, --report -): `-v` shows it on stderr instead.
        if self.echo.load(Relaxed) {
            tracing::debug!(target: "vmm", vcpu, "console (COM1): {line}");
        } else {
            tracing::info!(target: "guest", vcpu, "{line}");
        }
        if self.echo.load(Relaxed) {
            // A vCPU thread cannot stop the TD over a console that nobody reads: stop echoing
            // and let the run finish (its report and verdict still count).
            if let Err(e) = crate::outln!("[guest] {line}") {
                self.echo.store(false, Relaxed);
                if e.is_closed_pipe() {
                    self.stdout_closed.store(true, Relaxed);
                } else {
                    eprintln!("tdxlab: {e}: {}; console echo stopped", e.0);
                }
            }
        }
        self.marks.note(&line);
        // Both under the output lock, so the two lists stay the same length.
        let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        out.push(line);
        self.output_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((std::time::Instant::now(), vcpu));
    }

    /// An I/O access; unknown ports read as all ones and ignore writes, as on a PC.
    pub fn io(&self, vcpu: u32, size: u8, write: bool, port: u16, data: u32) -> u32 {
        match (port, write) {
            (COM1_PORT, true) => {
                self.put(vcpu, data as u8);
                0
            }
            (p, false) if p == COM1_PORT + 5 => 0x60, // LSR: transmitter empty
            (SELECTOR_PORT, true) if size == 2 => {
                if let Some(f) = &self.fw_cfg {
                    f.select(data as u16);
                }
                0
            }
            (DATA_PORT, false) if size == 1 => {
                self.fw_cfg.as_ref().map_or(0xFF, |f| f.read() as u32)
            }
            (pm::PM1A_CNT_BLK, true) if size == 2 => {
                self.pm1_cnt_write(data as u16);
                0
            }
            (pm::PM1A_CNT_BLK, false) if size == 2 => self.pm1_cnt.load(SeqCst),
            (DEBUG_EXIT_PORT, true) if self.debug_exit => {
                let message = if data == 0 {
                    "guest reported success".into()
                } else {
                    format!("guest reported failure {data:#x}")
                };
                self.finish(GuestExit {
                    kind: ExitKind::Guest,
                    code: data as u64,
                    message,
                });
                0
            }
            (_, false) => u32::MAX >> (32 - 8 * size as u32),
            (_, true) => 0,
        }
    }

    /// An access to fw_cfg's DMA register, `offset` bytes into it, with `mem` the guest
    /// memory the device reaches; without fw_cfg, an unknown port.
    pub fn fw_cfg_dma(
        &self,
        offset: u16,
        size: u8,
        write: bool,
        data: u32,
        mem: &dyn super::SharedView,
    ) -> u32 {
        match &self.fw_cfg {
            Some(f) => f.dma_io(offset, size, write, data, mem),
            None if write => 0,
            None => u32::MAX >> (32 - 8 * size.clamp(1, 4) as u32),
        }
    }

    /// PM1a_CNT: SLP_EN with SLP_TYP 0 is a soft power-off (QEMU's `acpi_pm1_cnt_write`,
    /// whose q35 `_S5` is type 0). The other sleep types (QEMU: S3 suspend, S4) are not
    /// modelled: the write is kept and nothing happens.
    fn pm1_cnt_write(&self, v: u16) {
        self.pm1_cnt.store((v & !pm::SLP_EN) as u32, SeqCst);
        let typ = (v >> pm::SLP_TYP_SHIFT) & 7;
        if v & pm::SLP_EN != 0 && typ == pm::S5_SLP_TYP as u16 {
            self.finish(GuestExit {
                kind: ExitKind::PowerOff,
                code: 0,
                message: "the guest powered off (ACPI S5 through PM1a_CNT)".into(),
            });
        }
    }

    /// TDVMCALL<ReportFatalError> as QEMU 10.1's `tdx_handle_report_fatal_error`
    /// (`target/i386/kvm/tdx.c`). An error code with any of bits 15:0 set is refused with
    /// QEMU's words and nothing else is read. Otherwise the message is the registers RCX
    /// selects, in the order R14, R15, RBX, RDI, RSI, R8, R9, RDX, packed one after the other
    /// (a register RCX leaves out takes no room) and read up to its first NUL; with error-code
    /// bit 63 (GPA valid) R13 names a page with more information. Linux sends 0 ("0 is
    /// panic"). QEMU stops the VM either way (the handler returns -1: RUN_STATE_INTERNAL_ERROR
    /// for a refused code, after `qemu_system_guest_panicked` for a good one); tdxlab ends
    /// the run with exit kind `fatal` for both.
    pub(crate) fn report_fatal_error(&self, vcpu: u32, regs: &tdcall::Regs) {
        let code = regs.r12;
        if code & 0xffff != 0 {
            return self.finish(GuestExit {
                kind: ExitKind::Fatal,
                code,
                message: format!(
                    "vCPU {vcpu}: TDX: REPORT_FATAL_ERROR: invalid error code: {code:#x}"
                ),
            });
        }
        let mut message = format!(
            "vCPU {vcpu} reported a fatal error: {}",
            fatal_message(regs)
        );
        if code & shared_abi::vmcall::FATAL_ERROR_GPA_VALID != 0 {
            // QEMU reports the error code as 32 bits (`panic_info->u.tdx.error_code`).
            message += &format!(
                " (error code {:#x}; more at gpa page {:#x})",
                code as u32, regs.r13
            );
        }
        self.finish(GuestExit {
            kind: ExitKind::Fatal,
            code,
            message,
        });
    }
}

/// The fatal-error message: the registers RCX selects, packed (QEMU's `COPY_REG`), up to the
/// first NUL. No register selected: no message.
fn fatal_message(regs: &tdcall::Regs) -> String {
    let order = [
        (14, regs.r14),
        (15, regs.r15),
        (3, regs.rbx),
        (7, regs.rdi),
        (6, regs.rsi),
        (8, regs.r8),
        (9, regs.r9),
        (2, regs.rdx),
    ];
    let bytes: Vec<u8> = order
        .iter()
        .filter(|(bit, _)| regs.rcx & (1 << bit) != 0)
        .flat_map(|(_, w)| w.to_le_bytes())
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One of the guest's steps, sent over the console while the host traces: `<gpa> <bytes>
/// <what>`, traced as the guest's (not console output).
fn guest_trace(step: &str) {
    let mut parts = step.splitn(3, ' ');
    let gpa = parts
        .next()
        .and_then(|g| u64::from_str_radix(g.trim_start_matches("0x"), 16).ok());
    let bytes = parts.next().and_then(|b| b.parse::<u64>().ok());
    let what = parts.next().unwrap_or("");
    match (gpa, bytes) {
        (Some(g), Some(bytes)) => {
            tracing::debug!(target: "guest", gpa = %shared_abi::Gpa(g), bytes, "guest: {what}")
        }
        _ => tracing::debug!(target: "guest", "guest: {step}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fatal(r12: u64) -> GuestExit {
        let io = GuestIo::new(1, false);
        let regs = tdcall::Regs {
            rcx: 1 << 14,
            r12,
            r14: u64::from_le_bytes(*b"oops\0\0\0\0"),
            ..Default::default()
        };
        io.report_fatal_error(0, &regs);
        io.exit().expect("the TD stopped")
    }

    /// Only SLP_EN with SLP_TYP 0 (q35's `_S5`) powers off; other types and a write without
    /// SLP_EN change nothing. Without isa-debug-exit, port 0xf4 is an empty port.
    #[test]
    fn pm1a_cnt_powers_off_on_s5_only_and_debug_exit_can_be_absent() {
        let io = GuestIo::new(1, false).with_platform(1, false);
        // ICH9 with SMM off starts in ACPI mode.
        assert_eq!(io.io(0, 2, false, pm::PM1A_CNT_BLK, 0), pm::SCI_EN as u32);
        io.io(0, 4, true, DEBUG_EXIT_PORT, 0);
        io.io(
            0,
            2,
            true,
            pm::PM1A_CNT_BLK,
            1 << pm::SLP_TYP_SHIFT | pm::SLP_EN as u32,
        );
        io.io(0, 2, true, pm::PM1A_CNT_BLK, 1);
        assert_eq!(io.exit(), None);
        assert_eq!(io.io(0, 2, false, pm::PM1A_CNT_BLK, 0), 1);
        io.io(0, 2, true, pm::PM1A_CNT_BLK, pm::SLP_EN as u32);
        assert_eq!(io.exit().map(|e| e.kind), Some(ExitKind::PowerOff));
        // fw_cfg answers on its ports.
        io.io(0, 2, true, SELECTOR_PORT, 0);
        let sig: Vec<u32> = (0..4).map(|_| io.io(0, 1, false, DATA_PORT, 0)).collect();
        assert_eq!(sig, b"QEMU".map(u32::from));
    }

    /// QEMU copies only the registers RCX selects, packed, and names the GPA of bit 63.
    #[test]
    fn report_fatal_error_packs_the_selected_registers_and_names_the_gpa() {
        let io = GuestIo::new(1, false);
        let regs = tdcall::Regs {
            rcx: 1 << 14 | 1 << 3,
            r12: 1 << 63,
            r13: 0x5000,
            r14: u64::from_le_bytes(*b"abcdefgh"),
            r15: u64::from_le_bytes(*b"XXXXXXXX"),
            rbx: u64::from_le_bytes(*b"ij\0\0\0\0\0\0"),
            ..Default::default()
        };
        io.report_fatal_error(0, &regs);
        assert_eq!(
            io.exit().expect("stopped").message,
            "vCPU 0 reported a fatal error: abcdefghij (error code 0x0; more at gpa page 0x5000)"
        );
        // Nothing selected: no message.
        let io = GuestIo::new(1, false);
        io.report_fatal_error(
            0,
            &tdcall::Regs {
                r14: 0x41,
                ..Default::default()
            },
        );
        assert_eq!(
            io.exit().expect("stopped").message,
            "vCPU 0 reported a fatal error: "
        );
    }

    #[test]
    fn report_fatal_error_takes_what_qemu_takes() {
        // Linux's panic code, 0, carries the message.
        let e = fatal(0);
        assert_eq!(e.kind, ExitKind::Fatal);
        assert_eq!(e.message, "vCPU 0 reported a fatal error: oops");
        // Bits 15:0 set: QEMU refuses the call, and the message is lost.
        let e = fatal(1);
        assert_eq!(
            e.message,
            "vCPU 0: TDX: REPORT_FATAL_ERROR: invalid error code: 0x1"
        );
    }
}
