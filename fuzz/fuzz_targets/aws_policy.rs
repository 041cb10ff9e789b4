//! Two documents at once: an AWS describe-security-groups document and an `--instances`
//! document (split at the first NUL byte), as `check`/`run`/`apply` take them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (aws, instances) = text.split_once('\0').unwrap_or((text, ""));
    if let Ok(doc) = sg_agent::policy::load(aws, Some(instances)) {
        let _ = sg_agent::compile::compile(&doc);
    }
    if let Ok(json) = sg_agent::policy::native::parse_json(aws) {
        let _ = sg_agent::policy::aws::convert_groups(&json);
    }
});
