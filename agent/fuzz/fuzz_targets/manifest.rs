//! Arbitrary bytes as Kubernetes manifests and as a `[KUBERNETES]` section: parsed or
//! refused with an error, never a panic; whatever parses is applied to a cluster and
//! translated (events for what cannot be), and the translation's objects are all named.
#![no_main]

use std::collections::BTreeSet;

use agent::k8s::{Cluster, KubeConfig, manifest, translate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|b: &[u8]| {
    let Ok(text) = std::str::from_utf8(b) else {
        return;
    };
    let _ = KubeConfig::parse(&format!("[KUBERNETES]\n{text}"));
    if let Ok(docs) = manifest::parse(text) {
        let mut c = Cluster::default();
        c.apply(docs.clone());
        let t = translate::translate(&KubeConfig::default(), &c, &BTreeSet::new());
        for o in &t.objects {
            assert!(!agent::kinds::meta(o).1.is_empty(), "an object without a name");
        }
        c.delete(&docs);
    }
});
