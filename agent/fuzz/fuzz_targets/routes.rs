//! Arbitrary bytes as a key and a value read from etcd's route prefix (split at the first
//! NUL): parsed and checked as the agent does before it learns a route, never a panic, and
//! whatever is accepted speaks for its own key with a unicast host prefix and labels in
//! range.
#![no_main]

use agent::oper::RemoteRoute;
use agent::routes::{KEY_PREFIX, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|b: &[u8]| {
    let (k, v) = match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (&b[..0], b),
    };
    let key = String::from_utf8_lossy(k);
    let Ok(r) = serde_json::from_slice::<RemoteRoute>(v) else {
        return;
    };
    if check(&key, &r).is_ok() {
        assert_eq!(key, format!("{KEY_PREFIX}{}/{}/{}", r.node_ip, r.vn, r.prefix));
        let host = if r.prefix.contains(':') { "/128" } else { "/32" };
        assert!(r.prefix.ends_with(host), "{}", r.prefix);
        assert!((16..1 << 20).contains(&r.label) && r.vni < 1 << 24);
    }
});
