#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalr_core::fuzzing::websocket_frames(data));
