//! What several crates' tests and the benchmarks share: free ports, an HTTP load client, and the
//! replay of the fuzz targets' corpora.

pub mod fuzz_corpus;
pub mod http;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A free loopback port for a server that a test starts later (cutover's API, a load-balancer
/// listener).
///
/// Not `bind(127.0.0.1:0)`: that returns a port from the kernel's ephemeral range, which is free
/// only until an outgoing connection — a test client, a health check — is given it as its local
/// port, and then the later bind fails with "address in use". Ports below the ephemeral range are
/// never handed out that way; a counter keeps one test process from picking the same one twice,
/// and a start that depends on the process id keeps two test processes apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(12_000));
    let start = std::process::id().wrapping_mul(97);
    for _ in 0..(high - low) {
        let port = low + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % (high - low);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().expect("a bound socket has an address").port();
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| super::free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice: {ports:?}");
        assert!(ports.iter().all(|p| (10_000..32_768).contains(p)), "{ports:?}");
        for p in ports {
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
        }
    }
}
