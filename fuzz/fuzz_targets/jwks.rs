#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nats_callout_fuzz_targets::jwks(data));
