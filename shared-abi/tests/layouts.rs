//! Layout round-trips (TDVF descriptor, sections, OVMF table, HOBs) and malformed inputs.

use proptest::prelude::*;
use shared_abi::convert::{ConversionTarget, MapGpaRangeArgs, MapGpaRangeError};
use shared_abi::layout::guid::{self, Guid};
use shared_abi::layout::hob::{
    self, Hob, HobError, HobList, HobWriter, ResourceDescriptor, TdxlabHob,
};
use shared_abi::layout::ovmf::{self, OvmfTable, OvmfTableError};
use shared_abi::layout::tdvf::{
    self, SectionType, TdvfDescriptor, TdvfError, TdvfMetadata, TdvfSection,
};
use shared_abi::td::VpInfo;
use shared_abi::ve::{IoQualification, VeInfo};
use shared_abi::{Gpa, Gpaw, PageLevel};

const IMG: usize = 256 << 10;

fn section(ty: SectionType, data_offset: u32, raw: u32, addr: u64, size: u64) -> TdvfSection {
    TdvfSection {
        data_offset,
        raw_size: raw,
        memory_address: addr,
        memory_size: size,
        section_type: ty as u32,
        attributes: if ty == SectionType::Bfv {
            tdvf::ATTR_MR_EXTEND
        } else {
            0
        },
    }
}

fn good_sections() -> Vec<TdvfSection> {
    vec![
        section(
            SectionType::Bfv,
            0,
            IMG as u32,
            (1 << 32) - IMG as u64,
            IMG as u64,
        ),
        section(SectionType::TdHob, 0, 0, 0x80_0000, 0x2000),
        section(SectionType::TempMem, 0, 0, 0x80_2000, 0x1000),
    ]
}

/// An image laid out as tdxlab and OVMF do: metadata GUID, descriptor, sections near the end,
/// then the OVMF table pointing at the descriptor.
fn image(sections: &[TdvfSection]) -> Vec<u8> {
    let mut img = vec![0u8; IMG];
    let desc = IMG - 0x1000;
    img[desc - 16..desc].copy_from_slice(&guid::TDX_METADATA.0);
    tdvf::write_descriptor(&mut img, desc, sections).unwrap();
    let dist = ((IMG - desc) as u32).to_le_bytes();
    let tail = IMG - 0x200;
    ovmf::write_table(
        &mut img[tail..],
        &[
            (guid::SEV_SECRET, &[1, 2, 3, 4, 5, 6, 7, 8]),
            (guid::TDX_METADATA_OFFSET, &dist),
        ],
    )
    .unwrap();
    img
}

#[test]
fn a_good_image_parses_with_its_sections() {
    let img = image(&good_sections());
    let table = OvmfTable::parse(&img).unwrap();
    let entries: Vec<_> = table.entries().map(Result::unwrap).collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0].guid,
        guid::TDX_METADATA_OFFSET,
        "walked last entry first"
    );
    assert_eq!(entries[1].data, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(table.tdx_descriptor_offset(), Some(IMG - 0x1000));
    let meta = TdvfMetadata::parse(&img).unwrap();
    assert_eq!(meta.descriptor_offset, IMG - 0x1000);
    assert_eq!(meta.sections().collect::<Vec<_>>(), good_sections());
}

#[test]
fn malformed_images_get_qemus_errors() {
    type Case = (&'static str, Vec<u8>, fn(&TdvfError) -> bool);
    let mut cases: Vec<Case> = Vec::new();
    cases.push(("empty", vec![], |e| matches!(e, TdvfError::BadImageSize(0))));
    cases.push(("not 64K multiple", vec![0; IMG + 4096], |e| {
        matches!(e, TdvfError::BadImageSize(_))
    }));
    cases.push(("no footer", vec![0; IMG], |e| {
        matches!(e, TdvfError::Table(OvmfTableError::BadFooter))
    }));
    let mut bad_len = image(&good_sections());
    bad_len[IMG - 0x32..IMG - 0x30].copy_from_slice(&5u16.to_le_bytes());
    cases.push(("table length < 18", bad_len, |e| {
        matches!(e, TdvfError::Table(OvmfTableError::BadLength(5)))
    }));
    let mut sig = image(&good_sections());
    sig[IMG - 0x1000] = b'X';
    cases.push(("signature", sig, |e| {
        matches!(e, TdvfError::BadSignature(_))
    }));
    let mut ver = image(&good_sections());
    ver[IMG - 0x1000 + 8] = 2;
    cases.push(("version", ver, |e| matches!(e, TdvfError::BadVersion(2))));
    let mut dlen = image(&good_sections());
    dlen[IMG - 0x1000 + 4] = 17;
    cases.push(("descriptor length", dlen, |e| {
        matches!(e, TdvfError::BadDescriptorLength { .. })
    }));
    cases.push(("one section", image(&good_sections()[1..2]), |e| {
        matches!(e, TdvfError::TooFewSections(1))
    }));
    let mut s = good_sections();
    s[2].section_type = 4;
    cases.push(("PERM_MEM", image(&s), |e| {
        matches!(
            e,
            TdvfError::UnsupportedSectionType {
                index: 2,
                section_type: 4
            }
        )
    }));
    let mut s = good_sections();
    s[2].memory_address += 0x800;
    cases.push(("misaligned", image(&s), |e| {
        matches!(e, TdvfError::MisalignedSection { index: 2, .. })
    }));
    let mut s = good_sections();
    s[1].raw_size = 0x1000;
    cases.push(("TD_HOB with raw data", image(&s), |e| {
        matches!(
            e,
            TdvfError::BadRawSize {
                index: 1,
                kind: SectionType::TdHob,
                ..
            }
        )
    }));
    let mut s = good_sections();
    s[0].raw_size = 0;
    cases.push(("BFV without raw data", image(&s), |e| {
        matches!(e, TdvfError::BadRawSize { index: 0, .. })
    }));
    let mut s = good_sections();
    s[0].memory_size = 0x1000;
    cases.push(("memory < raw", image(&s), |e| {
        matches!(e, TdvfError::MemorySmallerThanRaw { index: 0 })
    }));
    let mut s = good_sections();
    s[0].data_offset = 0x10;
    s[0].raw_size = 0x1000;
    s[0].memory_size = 0x1000;
    cases.push(("data offset misaligned", image(&s), |e| {
        matches!(e, TdvfError::BadDataOffset { index: 0, .. })
    }));
    let mut s = good_sections();
    s[2].memory_address = !0xFFF;
    s[2].memory_size = 0x2000;
    cases.push(("address + size wraps", image(&s), |e| {
        matches!(e, TdvfError::SectionWraps { index: 2, .. })
    }));
    let mut s = good_sections();
    s[1].section_type = SectionType::TempMem as u32;
    cases.push(("no TD_HOB", image(&s), |e| {
        matches!(e, TdvfError::MissingTdHob)
    }));
    let mut nometa = vec![0u8; IMG];
    ovmf::write_table(&mut nometa[IMG - 0x100..], &[(guid::SEV_SECRET, &[0; 4])]).unwrap();
    cases.push(("no metadata entry", nometa, |e| {
        matches!(e, TdvfError::NoMetadataOffset)
    }));
    let mut far = vec![0u8; IMG];
    ovmf::write_table(
        &mut far[IMG - 0x100..],
        &[(guid::TDX_METADATA_OFFSET, &(IMG as u32 + 16).to_le_bytes())],
    )
    .unwrap();
    cases.push(("descriptor outside", far, |e| {
        matches!(e, TdvfError::DescriptorOutOfBounds(_))
    }));
    for (name, img, check) in cases {
        let err = TdvfMetadata::parse(&img).expect_err(name);
        assert!(check(&err), "{name}: {err:?}");
        assert!(!err.to_string().contains('\n'), "one-line error for {name}");
    }
}

#[test]
fn a_malformed_entry_stops_the_walk_with_an_error() {
    let mut img = image(&good_sections());
    // Corrupt the length of the last entry (the TDX one) to 3.
    let len_at = IMG - 0x32 - 18;
    img[len_at..len_at + 2].copy_from_slice(&3u16.to_le_bytes());
    let t = OvmfTable::parse(&img).unwrap();
    let all: Vec<_> = t.entries().collect();
    assert_eq!(all.len(), 1);
    assert!(matches!(
        all[0],
        Err(OvmfTableError::BadEntry { len: 3, .. })
    ));
    assert_eq!(t.find(guid::TDX_METADATA_OFFSET), None);
}

#[test]
fn hob_list_round_trips_as_qemu_lays_it_out() {
    let mut buf = vec![0xAAu8; 0x1000];
    let base = 0x80_0000;
    let res = [
        ResourceDescriptor {
            owner: Guid([0; 16]),
            resource_type: hob::resource_type::MEMORY_UNACCEPTED,
            attributes: 7,
            start: 0,
            length: 0x80_0000,
        },
        ResourceDescriptor {
            owner: Guid([0; 16]),
            resource_type: hob::resource_type::SYSTEM_MEMORY,
            attributes: 7,
            start: 0x80_0000,
            length: 0x3000,
        },
    ];
    let tdxlab = TdxlabHob {
        version: 1,
        doorbell_port: 0xDB0,
        flags: hob::config::ACCEPT_ALL,
        workload: 3,
        param: 10_000,
        seed: 42,
        duration_tsc: 1 << 40,
        ops: 77,
        options: 5,
    };
    let mut w = HobWriter::new(&mut buf, base).unwrap();
    for r in &res {
        w.resource(r).unwrap();
    }
    w.guid_extension(guid::TDXLAB_HOB, &tdxlab.encode())
        .unwrap();
    let len = w.finish().unwrap();
    assert_eq!(len, 56 + 2 * 48 + 8 + 16 + 40 + 8);
    let list = HobList::parse(&buf).unwrap();
    assert_eq!(list.phit.version, 9);
    assert_eq!(
        list.phit.end_of_hob_list,
        base + len as u64,
        "EfiEndOfHobList points past End"
    );
    assert_eq!(list.resources().collect::<Vec<_>>(), res);
    assert_eq!(list.tdxlab(), Some(tdxlab));
    assert_eq!(list.hobs().last(), Some(Hob::End));
}

#[test]
fn hob_writer_reports_overrun() {
    let mut buf = [0u8; 100];
    let mut w = HobWriter::new(&mut buf, 0).unwrap();
    let r = ResourceDescriptor {
        owner: Guid([0; 16]),
        resource_type: 0,
        attributes: 7,
        start: 0,
        length: 1,
    };
    assert_eq!(w.resource(&r), Err(hob::HobOverrun(100)));
}

#[test]
fn malformed_hob_lists_are_rejected() {
    let mut buf = vec![0u8; 256];
    let len = HobWriter::new(&mut buf, 0).unwrap().finish().unwrap();
    assert!(HobList::parse(&buf[..len]).is_ok());
    assert_eq!(
        HobList::parse(&buf[..len - 8]).unwrap_err(),
        HobError::NoEnd
    );
    let mut odd = buf.clone();
    odd[2] = 57; // PHIT length not a multiple of 8
    assert!(matches!(
        HobList::parse(&odd),
        Err(HobError::BadLength {
            offset: 0,
            len: 57,
            ..
        })
    ));
    let mut zero = buf.clone();
    zero[56 + 2] = 0; // End HOB length 0 would loop forever
    assert!(matches!(
        HobList::parse(&zero),
        Err(HobError::BadLength { .. })
    ));
    let mut nophit = buf.clone();
    nophit[0] = 3;
    assert_eq!(
        HobList::parse(&nophit[56..len]).unwrap_err(),
        HobError::NoPhit
    );
}

#[test]
fn map_gpa_range_args_reject_malformed_triples() {
    assert_eq!(
        MapGpaRangeArgs::decode([0, 1, 1 << 5]),
        Err(MapGpaRangeError::ReservedAttributes(1 << 5))
    );
    assert_eq!(
        MapGpaRangeArgs::decode([0, 1, 3]),
        Err(MapGpaRangeError::PageSize(3))
    );
    assert_eq!(
        MapGpaRangeArgs::decode([0x1000, 1, 1]),
        Err(MapGpaRangeError::Unaligned(0x1000))
    );
    assert_eq!(
        MapGpaRangeArgs::decode([!0xFFF, 2, 0]),
        Err(MapGpaRangeError::Overflow)
    );
    let a = MapGpaRangeArgs::for_range(
        shared_abi::GpaRange::new(Gpa(0x8000_0020_0000), 0x20_0000),
        ConversionTarget::Shared,
        Gpaw::GPAW_48,
    );
    assert_eq!(
        a.encode(),
        [0x20_0000, 512, 0],
        "shared bit stripped, 4K pages, DECRYPTED"
    );
}

proptest! {
    #[test]
    fn descriptor_and_sections_round_trip(n in 0u32..100, d in any::<u32>(), r in any::<u32>(), a in any::<u64>(), s in any::<u64>(), t in any::<u32>(), at in any::<u32>()) {
        let desc = TdvfDescriptor::new(n);
        prop_assert_eq!(TdvfDescriptor::decode(&desc.encode(), 0), Some(desc));
        prop_assert_eq!(desc.length, 16 + 32 * n);
        let sec = TdvfSection { data_offset: d, raw_size: r, memory_address: a, memory_size: s, section_type: t, attributes: at };
        prop_assert_eq!(TdvfSection::decode(&sec.encode(), 0), Some(sec));
    }

    #[test]
    fn tdxlab_hob_round_trips(v: u16, p: u16, f: u32, w: u32, pa: u32, seed: u64, d: u64, ops: u32, o: u32) {
        let h = TdxlabHob { version: v, doorbell_port: p, flags: f, workload: w, param: pa, seed, duration_tsc: d, ops, options: o };
        prop_assert_eq!(TdxlabHob::decode(&h.encode()), Some(h));
    }

    #[test]
    fn ovmf_table_round_trips(datas in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
        let mut img = vec![0u8; 8192];
        let entries: Vec<(Guid, &[u8])> = datas.iter().enumerate().map(|(i, d)| (Guid([i as u8; 16]), &d[..])).collect();
        ovmf::write_table(&mut img[4096..], &entries).unwrap();
        let t = OvmfTable::parse(&img).unwrap();
        let got: Vec<_> = t.entries().map(Result::unwrap).collect();
        prop_assert_eq!(got.len(), entries.len());
        for (g, (guid, data)) in got.iter().zip(entries.iter().rev()) {
            prop_assert_eq!(g.guid, *guid);
            prop_assert_eq!(g.data, *data);
        }
    }

    /// The parsers never panic on arbitrary bytes.
    #[test]
    fn parsers_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..4096), footer: bool) {
        let _ = HobList::parse(&bytes);
        for h in hob::iter(&bytes) { let _ = h; }
        bytes.resize(64 << 10, 0);
        if footer {
            let n = bytes.len();
            bytes[n - 48..n - 32].copy_from_slice(&guid::OVMF_TABLE_FOOTER.0);
        }
        let _ = TdvfMetadata::parse(&bytes);
        if let Ok(t) = OvmfTable::parse(&bytes) { for e in t.entries() { let _ = e; } }
    }

    #[test]
    fn veinfo_vpinfo_io_round_trip(reason: u32, q: u64, gla: u64, gpa: u64, len: u32, info: u32, port: u16, size in 1u8..=4, is_in: bool) {
        let ve = VeInfo { exit_reason: reason, exit_qualification: q, gla, gpa, instr_len: len, instr_info: info };
        let (a, b, c, d, e) = ve.encode();
        prop_assert_eq!(VeInfo::decode(a, b, c, d, e), ve);
        let io = IoQualification { size, is_in, is_string: false, port };
        prop_assert_eq!(IoQualification::decode(io.encode()), io);
        let vp = VpInfo { gpaw: Gpaw::GPAW_52, attributes: q, num_vcpus: len, max_vcpus: info, vcpu_index: reason, sys_rd_available: is_in };
        let (a, b, c, d, e) = vp.encode();
        prop_assert_eq!(VpInfo::decode(a, b, c, d, e), Some(vp));
        prop_assert_eq!(VpInfo::decode_emulated(a, b, c, d, e), Some(vp));
    }

    #[test]
    fn emulated_vpinfo_carries_any_host_width(bits in 36u8..=52) {
        let vp = VpInfo { gpaw: Gpaw::emulated(bits).unwrap(), attributes: 0, num_vcpus: 1, max_vcpus: 1, vcpu_index: 0, sys_rd_available: false };
        let (a, b, c, d, e) = vp.encode();
        prop_assert_eq!(VpInfo::decode_emulated(a, b, c, d, e), Some(vp));
        // Real TDX never reports a width other than 48 or 52: a guest that is not emulated
        // refuses it.
        prop_assert_eq!(VpInfo::decode(a, b, c, d, e).is_some(), bits == 48 || bits == 52);
    }

    #[test]
    fn shared_bit_rule(bits in 36u8..=52, gpa in 0u64..(1 << 35)) {
        let g = Gpaw::emulated(bits).unwrap();
        let s = g.to_shared(Gpa(gpa));
        prop_assert_eq!(s.0, gpa | 1 << (bits - 1));
        prop_assert!(g.is_shared(s) && g.is_valid(s));
        prop_assert_eq!(g.to_private(s), Gpa(gpa));
        prop_assert!(!g.is_shared(Gpa(gpa)));
        prop_assert_eq!(PageLevel::from_tdx_level(PageLevel::Size2M.tdx_level()), Some(PageLevel::Size2M));
    }
}
