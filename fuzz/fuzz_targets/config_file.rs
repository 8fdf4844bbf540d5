#![no_main]
//! cargo fuzz target `config_file` (see fuzz/decoders.rs).
use libfuzzer_sys::fuzz_target;

include!("../decoders.rs");

fuzz_target!(|data: &[u8]| {
    run("config_file", data);
});
