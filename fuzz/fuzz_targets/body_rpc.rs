#![no_main]
//! cargo fuzz target `body_rpc` (see fuzz/decoders.rs).
use libfuzzer_sys::fuzz_target;

include!("../decoders.rs");

fuzz_target!(|data: &[u8]| {
    run("body_rpc", data);
});
