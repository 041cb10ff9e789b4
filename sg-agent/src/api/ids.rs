//! New ids (`sg-`, `sgr-`, `pl-` and 17 hex digits, as EC2's) and request ids, from the
//! kernel's random numbers.

/// `prefix` and 17 random hex digits.
pub fn random_id(prefix: &str) -> String {
    let bytes = random::<9>();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{}", hex.get(..17).unwrap_or(&hex))
}

/// A request id in UUID form (version 4), as EC2's.
pub fn request_id() -> String {
    let mut b = random::<16>();
    if let Some(v) = b.get_mut(6) {
        *v = (*v & 0x0f) | 0x40;
    }
    if let Some(v) = b.get_mut(8) {
        *v = (*v & 0x3f) | 0x80;
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or_default().to_owned();
    format!("{}-{}-{}-{}-{}", part(0..8), part(8..12), part(12..16), part(16..20), part(20..32))
}

fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom(2) cannot fail on a kernel this agent runs on (3.17+, and eBPF needs far
            // newer); were it to, ids would still be unique by the callers' collision checks.
            break;
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_ec2s_form_and_differ() {
        let a = random_id("sgr-");
        assert!(crate::policy::rule_id::is_valid(&a), "{a}");
        assert_ne!(a, random_id("sgr-"));
        let r = request_id();
        assert_eq!(r.len(), 36);
        assert_eq!(r.as_bytes()[14], b'4');
    }
}
