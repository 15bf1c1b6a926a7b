//! How a traced step's fields read: addresses in hex, levels as page sizes, zap filters by
//! name, frames called frames — one spelling for every room's events — and the GPAs a line
//! touches, for `--trace-gpa`.

use std::fmt::Write as _;
use tracing::field::{Field, Visit};

/// A step's fields, formatted, and the guest-physical ranges they name.
#[derive(Default)]
pub(super) struct Fields {
    pub(super) message: String,
    pub(super) rest: String,
    /// GPA ranges named by `gpa`, `gfn`, `start`/`end` fields (the private alias: a shared
    /// GPA with its shared bit cleared).
    pub(super) gpas: Vec<(u64, u64)>,
    start_gfn: Option<u64>,
}

/// A page-table level as its page size (TDX and KVM levels alike count 0 as 4 KiB here).
pub(super) fn level_name(level: u64) -> String {
    match level {
        0 => "4K".into(),
        1 => "2M".into(),
        2 => "1G".into(),
        3 => "512G".into(),
        l => format!("L{l}"),
    }
}

/// KVM's `enum kvm_gfn_range_filter` bits by name.
fn filter_name(bits: u64) -> String {
    match bits {
        1 => "SHARED".into(),
        2 => "PRIVATE".into(),
        3 => "SHARED|PRIVATE".into(),
        b => format!("{b:#x}"),
    }
}

/// A GPA with the shared bit of any GPAW cleared: tdxlab's RAM lies below 64 GiB, so a set
/// bit at 36 or above is the shared bit.
fn private_alias(gpa: u64) -> u64 {
    if gpa >> 36 == 0 {
        gpa
    } else {
        gpa & !(1u64 << (63 - gpa.leading_zeros()))
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

impl Fields {
    fn push(&mut self, name: &str, value: std::fmt::Arguments<'_>) {
        let _ = write!(self.rest, " {name}={value}");
    }

    fn number(&mut self, name: &str, v: u64) {
        match name {
            "level" => self.push(name, format_args!("{}", level_name(v))),
            "filter" => self.push(name, format_args!("{}", filter_name(v))),
            // The module and KVM say hpa/pfn; in tdxlab they index a backing: a frame.
            "hpa" | "pfn" => self.push("frame", format_args!("{v:#x}")),
            // Registers read as the specs print them.
            "r10" | "r11" | "r12" | "r13" | "r14" | "r15" | "rcx" | "rdx" => {
                self.push(name, format_args!("{v:#x}"))
            }
            "gfn" => {
                self.gpas.push((v << 12, (v + 1) << 12));
                self.push(name, format_args!("{v:#x}"));
            }
            "start" => {
                self.start_gfn = Some(v);
                self.push(name, format_args!("{v:#x}"));
            }
            "end" => {
                let start = self.start_gfn.take().unwrap_or(v);
                self.gpas.push((start << 12, v.max(start + 1) << 12));
                self.push(name, format_args!("{v:#x}"));
            }
            _ => self.push(name, format_args!("{v}")),
        }
    }
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field.name(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        match u64::try_from(value) {
            Ok(v) => self.number(field.name(), v),
            Err(_) => self.push(field.name(), format_args!("{value}")),
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.push(field.name(), format_args!("{value}"));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            name => {
                if matches!(name, "gpa" | "resume") {
                    if let Some(g) = parse_hex(&text) {
                        let g = private_alias(g);
                        self.gpas.push((g, g + 1));
                    }
                }
                self.push(name, format_args!("{text}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_filters_and_frames_read_by_name() {
        assert_eq!(level_name(0), "4K");
        assert_eq!(level_name(1), "2M");
        assert_eq!(filter_name(2), "PRIVATE");
        assert_eq!(filter_name(3), "SHARED|PRIVATE");
        let mut f = Fields::default();
        f.number("hpa", 512);
        f.number("start", 0x200);
        f.number("end", 0x202);
        f.number("level", 1);
        assert_eq!(f.rest, " frame=0x200 start=0x200 end=0x202 level=2M");
        assert_eq!(f.gpas, [(0x20_0000, 0x20_2000)]);
    }

    #[test]
    fn a_shared_gpa_counts_as_its_private_alias() {
        assert_eq!(private_alias(0x8000_0020_0000), 0x20_0000);
        assert_eq!(private_alias(0x20_0000), 0x20_0000);
        assert_eq!(private_alias(0x4_0000_0000_0000 | 0x1000), 0x1000);
    }
}
