//! Link the bare-metal guest with its linker script, whose addresses come from `layout.rs`
//! (the one place the guest, this script and the host's packer take them from); host builds
//! need nothing.

#[allow(dead_code)]
mod layout {
    include!("layout.rs");
}

fn main() {
    println!("cargo:rerun-if-changed=linker.ld.in");
    println!("cargo:rerun-if-changed=layout.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let template = std::fs::read_to_string(format!("{dir}/linker.ld.in")).expect("linker.ld.in");
    let mut script = template;
    for (name, value) in [
        ("IMAGE_BASE", layout::IMAGE_BASE),
        ("METADATA_PAGE", layout::METADATA_PAGE),
        ("BSS_BASE", layout::BSS_BASE),
        ("PT_BASE", layout::PT_BASE),
    ] {
        script = script.replace(&format!("{{{name}}}"), &format!("{value:#x}"));
    }
    if let Some(at) = script
        .find('{')
        .filter(|i| script[i + 1..].starts_with(char::is_uppercase))
    {
        panic!(
            "linker.ld.in names a constant build.rs does not fill in: {}",
            &script[at..]
        );
    }
    let path = format!("{out}/linker.ld");
    std::fs::write(&path, script).expect("writing the linker script");
    println!("cargo:rustc-link-arg-bins=-T{path}");
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
