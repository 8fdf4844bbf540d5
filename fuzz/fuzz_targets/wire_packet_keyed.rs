#![no_main]
//! cargo fuzz target `wire_packet_keyed` (see fuzz/decoders.rs).
use libfuzzer_sys::fuzz_target;

include!("../decoders.rs");

fuzz_target!(|data: &[u8]| {
    run("wire_packet_keyed", data);
});
