#![no_main]
//! cargo fuzz target `wire_packet` (see fuzz/decoders.rs).
use libfuzzer_sys::fuzz_target;

include!("../decoders.rs");

fuzz_target!(|data: &[u8]| {
    run("wire_packet", data);
});
