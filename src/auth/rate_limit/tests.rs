use super::*;

fn limits(ipv6_prefix: u8) -> Limits {
    Limits::new(
        &RateLimitConfig {
            failed_auth_per_ip: 2,
            failed_auth_ipv6_prefix: ipv6_prefix,
            ..RateLimitConfig::default()
        },
        false,
    )
}

#[test]
fn ipv6_failures_count_per_network() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let limits = limits(64);
    assert!(limits.record_failure(ip("2001:db8:1:2::1")).is_ok());
    assert!(limits.record_failure(ip("2001:db8:1:2::2")).is_ok());
    // A third address of the same /64 is the same client.
    assert!(limits.record_failure(ip("2001:db8:1:2:ffff::3")).is_err());
    assert!(limits.check_ip(ip("2001:db8:1:2::99")).is_err());
    // Another /64, and IPv4 neighbours, are not.
    assert!(limits.check_ip(ip("2001:db8:1:3::1")).is_ok());
    assert!(limits.record_failure(ip("192.0.2.1")).is_ok());
    assert!(limits.record_failure(ip("192.0.2.2")).is_ok());
    assert!(limits.check_ip(ip("192.0.2.3")).is_ok());
    // Per address, when configured so.
    let limits = self::limits(128);
    assert!(limits.record_failure(ip("2001:db8::1")).is_ok());
    assert!(limits.record_failure(ip("2001:db8::1")).is_ok());
    assert!(limits.check_ip(ip("2001:db8::1")).is_ok());
    assert!(limits.record_failure(ip("2001:db8::1")).is_err());
    assert!(limits.check_ip(ip("2001:db8::2")).is_ok());
}
