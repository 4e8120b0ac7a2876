//! The embedded on-disk store (redb): objects by UUID (protobuf bytes), local ports, and
//! the ids the agent gave to vrouter objects, so that a restarted agent programs the same
//! ids and its reconcile against the vrouter finds nothing to change.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::proto::Object;
use crate::store::Db;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const PORTS: TableDefinition<&str, &str> = TableDefinition::new("ports");
const IDS: TableDefinition<&str, u32> = TableDefinition::new("ids");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A VM interface plugged on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRec {
    /// The VMI.
    pub vmi_uuid: String,
    /// DPDK device spec (empty: the vif exists in the tables only).
    pub device: String,
    /// vif name.
    pub name: String,
    /// The MTU of the interface's link (records from before it was kept: 1500).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

fn default_mtu() -> u16 {
    1500
}

/// The store.
pub struct Store {
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("agent.redb");
        let db = Database::create(&path).with_context(|| format!("opening {}", path.display()))?;
        let w = db.begin_write()?;
        {
            w.open_table(OBJECTS)?;
            w.open_table(PORTS)?;
            w.open_table(IDS)?;
            w.open_table(META)?;
        }
        w.commit()?;
        Ok(Store { db })
    }

    /// Loads every object into a fresh database.
    pub fn load(&self) -> Result<Db> {
        let r = self.db.begin_read()?;
        let t = r.open_table(OBJECTS)?;
        let mut objs = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let o = Object::decode(v.value())
                .with_context(|| format!("object {} is corrupt", k.value()))?;
            objs.push((k.value().to_string(), o));
        }
        let revision = r
            .open_table(META)?
            .get("revision")?
            .map_or(0, |v| v.value());
        let mut db = Db::new();
        db.set_revision(revision);
        // Twice: indexes that depend on other objects (parents, subnets) are right on the
        // second pass, whatever the order of the first.
        for _ in 0..2 {
            for (u, o) in &objs {
                db.put(u, Some(o.clone()));
            }
        }
        Ok(db)
    }

    /// Writes the current state of `touched` objects in one transaction.
    pub fn save(&self, db: &Db, touched: &[String]) -> Result<()> {
        self.save_with(db, touched, &[], true)
    }

    /// Writes the current state of `touched` objects and the values `meta` in one
    /// transaction; not `durable`, it reaches the disk with the next durable one (a copy
    /// that can be had again, such as the cluster's configuration, which a restart
    /// replays from the revision that did).
    pub fn save_with(
        &self,
        db: &Db,
        touched: &[String],
        meta: &[(&str, u64)],
        durable: bool,
    ) -> Result<()> {
        let mut w = self.db.begin_write()?;
        if !durable {
            w.set_durability(redb::Durability::None)?;
        }
        {
            let mut t = w.open_table(OBJECTS)?;
            for u in touched {
                match db.get(u) {
                    Some(o) => {
                        t.insert(u.as_str(), o.encode_to_vec().as_slice())?;
                    }
                    None => {
                        t.remove(u.as_str())?;
                    }
                }
            }
            let mut m = w.open_table(META)?;
            m.insert("revision", db.revision())?;
            for (k, v) in meta {
                m.insert(*k, *v)?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// A value of the store's own (see [`Store::save_with`]).
    pub fn meta(&self, key: &str) -> Result<Option<u64>> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(META)?.get(key)?.map(|v| v.value()))
    }

    /// Removes a value of the store's own.
    pub fn forget(&self, key: &str) -> Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(META)?.remove(key)?;
        w.commit()?;
        Ok(())
    }

    /// The local ports.
    pub fn ports(&self) -> Result<BTreeMap<String, PortRec>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(PORTS)?;
        let mut out = BTreeMap::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let p: PortRec = serde_json::from_str(v.value())
                .with_context(|| format!("port {} is corrupt", k.value()))?;
            out.insert(k.value().to_string(), p);
        }
        Ok(out)
    }

    /// Records or removes a port.
    pub fn set_port(&self, vmi: &str, p: Option<&PortRec>) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(PORTS)?;
            match p {
                Some(p) => {
                    t.insert(vmi, serde_json::to_string(p)?.as_str())?;
                }
                None => {
                    t.remove(vmi)?;
                }
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Records several ports in one transaction.
    pub fn set_ports(&self, ports: &[PortRec]) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(PORTS)?;
            for p in ports {
                t.insert(p.vmi_uuid.as_str(), serde_json::to_string(p)?.as_str())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// The id assignments.
    pub fn ids(&self) -> Result<BTreeMap<String, u32>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(IDS)?;
        let mut out = BTreeMap::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.insert(k.value().to_string(), v.value());
        }
        Ok(out)
    }

    /// Replaces the id assignments that changed.
    pub fn save_ids(&self, set: &[(String, u32)], removed: &[String]) -> Result<()> {
        if set.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(IDS)?;
            for (k, v) in set {
                t.insert(k.as_str(), *v)?;
            }
            for k in removed {
                t.remove(k.as_str())?;
            }
        }
        w.commit()?;
        Ok(())
    }
}
