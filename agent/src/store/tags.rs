//! The tags of the configuration by the names firewall rules give them: `type=value` (a
//! global tag, or the only tag of that name) or the full FQ name joined with `:`. The
//! store's checks resolve rule endpoints with it, and the firewall compiles with it.

use std::collections::HashMap;

use crate::kinds::{Kind, fq_string};
use crate::proto::object;
use crate::store::Db;

/// Tags by the names firewall rules use for them.
#[derive(Debug, Default)]
pub struct TagIndex {
    by_fq: HashMap<String, u32>,
    /// `type=value` -> (FQ length, id) of every tag of that name.
    by_name: HashMap<String, Vec<(usize, u32)>>,
}

impl TagIndex {
    /// Indexes the tags of the database.
    pub fn new(db: &Db) -> TagIndex {
        let mut ix = TagIndex::default();
        for o in db.list(Kind::Tag) {
            if let Some(object::Kind::Tag(t)) = &o.kind {
                ix.by_fq.insert(fq_string(&t.fq_name), t.tag_id);
                if let Some(last) = t.fq_name.last() {
                    ix.by_name
                        .entry(last.clone())
                        .or_default()
                        .push((t.fq_name.len(), t.tag_id));
                }
            }
        }
        ix
    }

    /// The id of the tag a rule names.
    pub fn resolve(&self, name: &str) -> Result<u32, String> {
        if name.contains(':') {
            return self
                .by_fq
                .get(name)
                .copied()
                .ok_or_else(|| format!("tag {name:?} does not exist"));
        }
        let all = self
            .by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Some((_, id)) = all.iter().find(|(len, _)| *len == 1) {
            return Ok(*id);
        }
        match all {
            [] => Err(format!("tag {name:?} does not exist")),
            [(_, id)] => Ok(*id),
            _ => Err(format!(
                "tag {name:?} exists in several projects: name it by its FQ name"
            )),
        }
    }
}
