#![no_main]
//! cargo fuzz target `body_appgroup` (see fuzz/decoders.rs).
use libfuzzer_sys::fuzz_target;

include!("../decoders.rs");

fuzz_target!(|data: &[u8]| {
    run("body_appgroup", data);
});
