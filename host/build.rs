//! Build the guest for x86_64-unknown-none and pack it into the TDVF image the host embeds.

use std::path::PathBuf;
use std::process::Command;

#[path = "src/guest_layout.rs"]
#[allow(dead_code)]
mod guest_layout;
#[path = "src/pack.rs"]
#[allow(dead_code)]
mod pack;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    for p in [
        "guest/src",
        "guest/layout.rs",
        "guest/linker.ld.in",
        "guest/build.rs",
        "guest/Cargo.toml",
        "tdcall/src",
        "shared-abi/src",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-changed=src/pack.rs");
    ensure_target_installed();
    // A separate target dir: the outer build holds the lock on the main one.
    let target_dir = root.join("target").join("guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "tdxlab-guest",
            "--target",
            "x86_64-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir)
        // The outer build's flags and wrappers (clippy, coverage) are not the guest's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo to build the guest");
    if !status.success() {
        panic!("building the guest for x86_64-unknown-none failed (is the target installed? scripts/setup.sh installs it)");
    }
    let elf_path = target_dir.join("x86_64-unknown-none/release/tdxlab-guest");
    let elf = std::fs::read(&elf_path).expect("read the guest ELF");
    let image = pack::pack(&elf).unwrap_or_else(|e| panic!("packing the guest image: {e}"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("tdxlab-guest.bin"), image).expect("write tdxlab-guest.bin");
    std::fs::write(out_dir.join("guest-symbols.txt"), symbols(&elf))
        .expect("write guest-symbols.txt");
}

/// The guest's function symbols, one `ADDRESS SIZE NAME` line each (hex), sorted by
/// address, for the host to name guest RIPs with.
fn symbols(elf: &[u8]) -> String {
    use object::{Object, ObjectSymbol, SymbolKind};
    let file = object::File::parse(elf).expect("the guest ELF parses (pack checked it)");
    let mut v: Vec<(u64, u64, String)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
        .collect();
    v.sort();
    v.iter()
        .map(|(a, n, name)| format!("{a:x} {n:x} {name}\n"))
        .collect()
}

/// `cargo run` on a fresh machine must need nothing else: add the bare-metal target through
/// rustup when the toolchain lacks it (rust-toolchain.toml names it, but an already-installed
/// toolchain is not always topped up).
fn ensure_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output();
    let Ok(out) = sysroot else { return };
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if root.join("lib/rustlib/x86_64-unknown-none").exists() {
        return;
    }
    // Said once the target is there: cargo repeats a build script's warnings whenever it
    // compiles the package again, so the words must stay true afterwards.
    let added = Command::new("rustup")
        .args(["target", "add", "x86_64-unknown-none"])
        .status()
        .is_ok_and(|s| s.success());
    if added {
        println!("cargo:warning=the guest's target x86_64-unknown-none was missing from this toolchain: added it (rustup target add)");
    }
}
