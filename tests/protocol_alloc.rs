//! Proves the "no heap allocation when parsing metric lines" rule with a
//! counting global allocator (own test binary, so it cannot clash with an
//! allocator elsewhere). Counts are per thread, so parallel tests don't
//! interfere.

use edgestat::core::protocol::{lines, parse_line, Message, ParseOptions};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

#[test]
fn metric_parsing_does_not_allocate() {
    let long_underscored = format!("x:0.{}|g", "1_0".repeat(400)); // 800+ digits
    let long_digits = format!("x:{}e-5000|g", "9".repeat(5000));
    let datagram = format!(
        "page.views:1|c|@0.1|#env:prod,handler:home\n\
         queue.depth:42|g|#queue:jobs|T1700000000\r\n\
         request.latency:12:15.5:9::0x1.8p1:NaN:-Infinity:1_000|ms|#env:prod\n\
         unique.users:a:b|s\n\
         cpu.temp:71|g|c:ci-5d1e8a0f,in-1234|e:it-false|card:high\n\
         big:1e400|g\n\
         bad:abc|g\n\
         tiny:1e-99999999999|g\n\
         {long_underscored}\n{long_digits}\n"
    );
    let origin = ParseOptions { origin_detection_client: true, ..ParseOptions::default() };
    let mut sum = 0.0f64;
    let mut ok = 0;
    let n = allocations(|| {
        for opts in [ParseOptions::default(), origin] {
            for line in lines(datagram.as_bytes()) {
                if let Ok(Message::Metric(m)) = parse_line(line, &opts) {
                    ok += 1;
                    for v in m.values() {
                        if v.is_finite() {
                            sum += v;
                        }
                    }
                    for t in m.tags.iter() {
                        sum += t.len() as f64;
                    }
                }
            }
        }
    });
    assert_eq!(n, 0, "metric parsing allocated {n} times");
    assert_eq!(ok, 16);
    assert!(sum > 0.0);
}

#[test]
fn events_allocate_only_for_escapes() {
    let plain = b"_e{6,7}:Deploy|v1.2 ok|p:low|t:success|s:ci|#env:prod";
    let n = allocations(|| {
        assert!(parse_line(plain, &ParseOptions::default()).is_ok());
    });
    assert_eq!(n, 0);
    let escaped = b"_e{10,18}:Multi-line|line one\\nline two";
    let n = allocations(|| {
        assert!(parse_line(escaped, &ParseOptions::default()).is_ok());
    });
    assert_eq!(n, 1, "one buffer for the unescaped text");
    let sc = b"_sc|db.can_connect|2|#env:prod|m:timeout after 5s";
    assert_eq!(allocations(|| assert!(parse_line(sc, &ParseOptions::default()).is_ok())), 0);
}
