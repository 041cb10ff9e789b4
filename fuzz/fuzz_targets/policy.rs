//! Any bytes as a policy document (native or AWS shape): reading, validating and compiling
//! must return a result or clear problems — never panic, hang or grow without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match sg_agent::policy::load(text, None) {
        Ok(doc) => {
            let _ = sg_agent::compile::compile(&doc);
        }
        Err(invalid) => {
            assert!(!invalid.problems.is_empty(), "an invalid document names at least one problem");
            let _ = invalid.to_string();
        }
    }
});
