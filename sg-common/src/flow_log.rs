//! The flow-log budget: a per-CPU token bucket that bounds how many events a CPU writes to the
//! ring buffer per second, so a flood costs a bounded amount of work (SPEC: flow logs).

use crate::maps::FlowConfig;

const NS_PER_SEC: u64 = 1_000_000_000;

/// Takes one token from the bucket in `cfg` at time `now_ns`, refilling it first at
/// `cfg.events_per_sec` tokens per second (at most one second's worth). Returns whether the
/// event may be written. A rate of 0 means flow logging is off: never.
///
/// Overflow-safe for any elapsed time and any `u32` rate: the refill multiplies only once the
/// elapsed time is known to be under a second (`< 1e9 ns × < 2^32` fits in 64 bits).
#[inline(always)]
pub fn take_token(cfg: &mut FlowConfig, now_ns: u64) -> bool {
    let rate = u64::from(cfg.events_per_sec);
    if rate == 0 {
        return false;
    }
    // A clock behind the bucket's stamp wraps to a huge `elapsed`: a full bucket, as after a
    // second or more.
    let elapsed = now_ns.wrapping_sub(cfg.refilled_ns);
    if elapsed >= NS_PER_SEC {
        cfg.tokens = rate;
        cfg.refilled_ns = now_ns;
    } else {
        let refill = elapsed * rate / NS_PER_SEC;
        if refill > 0 {
            cfg.tokens = if cfg.tokens + refill > rate { rate } else { cfg.tokens + refill };
            // Advance by the time those tokens took, not to `now`: the remainder keeps counting
            // toward the next token.
            cfg.refilled_ns += refill * NS_PER_SEC / rate;
        }
    }
    if cfg.tokens == 0 {
        return false;
    }
    cfg.tokens -= 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate: u32) -> FlowConfig {
        FlowConfig { events_per_sec: rate, ..FlowConfig::default() }
    }

    #[test]
    fn off_means_never() {
        let mut cfg = bucket(0);
        assert!(!take_token(&mut cfg, 5 * NS_PER_SEC));
    }

    #[test]
    fn a_burst_gets_one_seconds_worth_then_stops() {
        let mut cfg = bucket(100);
        let now = 10 * NS_PER_SEC;
        let taken = (0..1000).filter(|_| take_token(&mut cfg, now)).count();
        assert_eq!(taken, 100);
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let mut cfg = bucket(100);
        let start = 10 * NS_PER_SEC;
        while take_token(&mut cfg, start) {}
        // 10 ms at 100/s: one token.
        assert!(take_token(&mut cfg, start + 10_000_000));
        assert!(!take_token(&mut cfg, start + 10_000_000));
        // Many tiny steps add up: 100 steps of 1 ms = 10 tokens, not 0.
        let mut t = start + 10_000_000;
        let mut taken = 0;
        for _ in 0..100 {
            t += 1_000_000;
            taken += usize::from(take_token(&mut cfg, t));
        }
        assert_eq!(taken, 10);
    }

    #[test]
    fn no_overflow_at_the_highest_rate_after_days() {
        let mut cfg = bucket(u32::MAX);
        assert!(take_token(&mut cfg, 3 * 86_400 * NS_PER_SEC));
        assert_eq!(cfg.tokens, u64::from(u32::MAX) - 1);
        // Just under a second later, at the highest rate: the multiplication must not wrap.
        let later = 3 * 86_400 * NS_PER_SEC + NS_PER_SEC - 1;
        assert!(take_token(&mut cfg, later));
        assert!(cfg.tokens <= u64::from(u32::MAX));
    }

    #[test]
    fn a_clock_behind_the_bucket_refills_instead_of_wrapping() {
        let mut cfg = bucket(10);
        cfg.refilled_ns = 1_005;
        cfg.tokens = 0;
        assert!(take_token(&mut cfg, 1_000));
        assert_eq!(cfg.refilled_ns, 1_000);
        // A fresh per-CPU slot (all zero) starts full.
        let mut fresh = bucket(10);
        assert!(take_token(&mut fresh, 5 * NS_PER_SEC));
    }
}
