#![no_main]
//! cargo fuzz target `mi_frame` (see fuzz/decoders.rs).
use libfuzzer_sys::fuzz_target;

include!("../decoders.rs");

fuzz_target!(|data: &[u8]| {
    run("mi_frame", data);
});
