//! The fuzz targets (`tdxlab::fuzzing`, run coverage-guided by scripts/fuzz.sh) on stable:
//! every input of their corpora and every crash reproducer in `fuzz/artifacts` must run
//! without a panic, and so must a few thousand seeded random inputs per target.

use std::path::Path;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_corpus_input_and_reproducer_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (name, target) in tdxlab::fuzzing::TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(!corpus.is_empty(), "the {name} corpus is in the repository");
        for (path, data) in corpus
            .iter()
            .chain(inputs(&root.join("artifacts").join(name)).iter())
        {
            let r = std::panic::catch_unwind(|| target(data));
            assert!(r.is_ok(), "{name} panicked on {path}");
        }
    }
}

#[test]
fn seeded_random_inputs_run_clean() {
    // splitmix64: the same inputs on every run.
    let mut x = 0x7d78_6c61u64;
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for (name, target) in tdxlab::fuzzing::TARGETS {
        let runs = if name.starts_with("tdvf") || name.starts_with("td_hob") || name == "ve_info" {
            2000
        } else {
            200
        };
        for i in 0..runs {
            let len = (next() % 512) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(
                r.is_ok(),
                "{name} panicked on random input {i}: {data:02x?}"
            );
        }
    }
}
