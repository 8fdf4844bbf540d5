//! The fuzzing corpus, replayed by every `cargo test` (docs/security.md):
//! each saved input of `fuzz/corpus/<target>/` goes through the decoders of
//! its target (`fuzz/decoders.rs`, the code the `cargo fuzz` targets run),
//! then a bounded proptest pass mutates the saved inputs (bit flips, byte
//! overwrites, truncations, insertions) and runs them again. A decoder that
//! panics on any of them fails the test, so a regression fails CI without
//! a nightly toolchain.

use proptest::prelude::*;
use std::path::PathBuf;

#[path = "../../fuzz/decoders.rs"]
mod decoders;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

#[test]
fn the_saved_corpus_replays_without_panics() {
    let mut total = 0;
    for target in decoders::TARGETS {
        let inputs = corpus(target);
        assert!(!inputs.is_empty(), "no saved corpus for {target}");
        for input in &inputs {
            decoders::run(target, input);
        }
        total += inputs.len();
    }
    eprintln!("replayed {total} saved inputs");
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
    ]
}

fn mutate(mut data: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let len = data.len();
        match m {
            Mutation::Flip(i, b) if len > 0 => data[i % len] ^= 1 << b,
            Mutation::Set(i, v) if len > 0 => data[i % len] = *v,
            Mutation::Truncate(i) => data.truncate(i % (len + 1)),
            Mutation::Insert(i, v) => {
                let at = i % (len + 1);
                data.splice(at..at, v.iter().copied());
            }
            _ => {}
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_inputs_never_panic(
        target in 0..decoders::TARGETS.len(),
        pick in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..8),
    ) {
        let target = decoders::TARGETS[target];
        let inputs = corpus(target);
        prop_assume!(!inputs.is_empty());
        let input = mutate(inputs[pick % inputs.len()].clone(), &ms);
        decoders::run(target, &input);
    }
}
