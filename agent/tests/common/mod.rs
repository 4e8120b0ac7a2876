//! Helpers shared by the store-level tests.

use agent::proto::{Object, Ref, object::Kind as K};

/// A reference by type and FQ name.
pub fn r(t: &str, fq_name: Vec<String>) -> Ref {
    Ref {
        r#type: t.into(),
        uuid: String::new(),
        fq_name,
    }
}

/// An object of a kind.
pub fn obj(k: K) -> Object {
    Object { kind: Some(k) }
}
