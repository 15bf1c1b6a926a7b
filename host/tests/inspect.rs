//! `tdxlab inspect` on Debian's OVMF.fd and on a corpus of deliberately broken images.

mod common;
use common::tdxlab;

use shared_abi::layout::guid;
use shared_abi::layout::ovmf::write_table;
use shared_abi::layout::tdvf::{write_descriptor, SectionType, TdvfSection, ATTR_MR_EXTEND};

const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

#[test]
fn debian_ovmf_has_the_tdvf_sections_qemu_loads() {
    assert!(
        std::path::Path::new(DEBIAN_OVMF).exists(),
        "{DEBIAN_OVMF} is missing: install Debian's ovmf package (scripts/setup.sh does)"
    );
    let out = tdxlab(&["inspect", DEBIAN_OVMF, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let size = v["image_size"].as_u64().unwrap();
    assert_eq!(size % (64 << 10), 0);
    let kinds: Vec<&str> = v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["BFV", "CFV", "TEMP_MEM", "TEMP_MEM", "TD_HOB", "TEMP_MEM"]
    );
    let bfv = &v["sections"][0];
    assert_eq!(bfv["attributes"], 1, "only the BFV is measured (MR_EXTEND)");
    assert_eq!(
        bfv["memory_address"].as_u64().unwrap() + bfv["memory_size"].as_u64().unwrap(),
        1 << 32,
        "BFV ends at 4 GiB"
    );
    for s in v["sections"].as_array().unwrap() {
        assert_eq!(s["memory_address"].as_u64().unwrap() % 4096, 0);
    }
    let desc = v["descriptor_offset"].as_u64().unwrap();
    assert!(desc < size);
    // MRTD as the module would measure the BFV and add the rest: 48 bytes of hex.
    let mrtd = v["mrtd"].as_str().unwrap();
    assert!(
        mrtd.len() == 96 && mrtd.bytes().all(|b| b.is_ascii_hexdigit()),
        "{mrtd}"
    );
}

const SIZE: usize = 128 << 10;

fn sections() -> Vec<TdvfSection> {
    vec![
        TdvfSection {
            data_offset: 0,
            raw_size: SIZE as u32,
            memory_address: (1 << 32) - SIZE as u64,
            memory_size: SIZE as u64,
            section_type: SectionType::Bfv as u32,
            attributes: ATTR_MR_EXTEND,
        },
        TdvfSection {
            data_offset: 0,
            raw_size: 0,
            memory_address: 0x80_0000,
            memory_size: 0x2000,
            section_type: SectionType::TdHob as u32,
            attributes: 0,
        },
    ]
}

fn image(sections: &[TdvfSection], size: usize, footer: bool) -> Vec<u8> {
    let mut img = vec![0u8; size];
    let desc = SIZE - 0x1000;
    write_descriptor(&mut img, desc, sections).unwrap();
    if footer {
        let dist = ((SIZE - desc) as u32).to_le_bytes();
        let tail = SIZE - 0x100;
        write_table(&mut img[tail..SIZE], &[(guid::TDX_METADATA_OFFSET, &dist)]).unwrap();
    }
    img
}

#[test]
fn broken_images_get_one_line_errors_and_exit_3() {
    let dir = std::env::temp_dir().join(format!("tdxlab-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut corpus: Vec<(&str, Vec<u8>, &str)> = vec![
        ("good", image(&sections(), SIZE, true), ""),
        ("no-footer", image(&sections(), SIZE, false), "bad footer"),
        (
            "size",
            {
                let mut i = image(&sections(), SIZE, true);
                i.truncate(SIZE - 4096);
                i
            },
            "multiple of 64 KiB",
        ),
    ];
    let mut sig = image(&sections(), SIZE, true);
    sig[SIZE - 0x1000] ^= 0xFF;
    corpus.push(("signature", sig, "Invalid TDVF signature"));
    let mut ver = image(&sections(), SIZE, true);
    ver[SIZE - 0x1000 + 8] = 7;
    corpus.push(("version", ver, "Invalid TDVF version 7"));
    let mut s = sections();
    s[1].section_type = SectionType::Payload as u32;
    corpus.push((
        "section-type",
        image(&s, SIZE, true),
        "unsupported section type 5",
    ));
    let mut s = sections();
    s[1].memory_address += 8;
    corpus.push(("misaligned", image(&s, SIZE, true), "misaligned section 1"));
    let mut s = sections();
    s[1].section_type = SectionType::TempMem as u32;
    corpus.push(("no-td-hob", image(&s, SIZE, true), "missing TD_HOB"));
    let mut table_len = image(&sections(), SIZE, true);
    table_len[SIZE - 0x32..SIZE - 0x30].copy_from_slice(&5u16.to_le_bytes());
    corpus.push(("table-length", table_len, "bad OVMF table length 5"));
    for (name, bytes, want) in corpus {
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, bytes).unwrap();
        let out = tdxlab(&["inspect", path.to_str().unwrap()]);
        let err = String::from_utf8(out.stderr).unwrap();
        if want.is_empty() {
            assert_eq!(out.status.code(), Some(0), "{name}: {err}");
            assert!(String::from_utf8(out.stdout).unwrap().contains("TD_HOB"));
            continue;
        }
        assert_eq!(out.status.code(), Some(3), "{name}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
    let out = tdxlab(&["inspect", dir.join("absent.bin").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    std::fs::remove_dir_all(&dir).unwrap();
}
