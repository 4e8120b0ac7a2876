//! The gRPC services: `ConfigApi` (VNC objects: create, update, delete, get, list, watch,
//! batch) and `AgentApi` (ports plugged on this node, status). Every change is validated
//! and applied in memory, made durable in the store (the embedded one on a node of its
//! own, the cluster's in etcd with `--config-store etcd`: [`crate::cluster`]), then
//! handed to the reconcile loop; a change that fails at any step leaves nothing behind.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

use crate::cluster::{Cluster, Follower, Update, WriteError, Writes};
use crate::device::{DevicePolicy, HostLinks};
use crate::kinds::{Kind, kind_of, meta};
use crate::persist::PortRec;
use crate::program::Shared;
use crate::proto::{self, agent_api_server::AgentApi, config_api_server::ConfigApi};
use crate::store::{Change, Committed, Event};

/// The services' state.
#[derive(Debug, Clone)]
pub struct Api {
    shared: Arc<Shared>,
    events: broadcast::Sender<Event>,
    devices: DevicePolicy,
    cluster: Option<Arc<Cluster>>,
    /// When the local copy of the cluster's configuration last reached the disk.
    synced: Arc<std::sync::Mutex<std::time::Instant>>,
}

/// How often the local copy of the cluster's configuration is made durable: in between,
/// its writes wait in memory (a restart replays the rest from etcd).
const COPY_SYNC: Duration = Duration::from_secs(1);

/// The store's values that say which etcd the local copy follows and where it stands.
pub const META_CLUSTER: &str = "etcd_cluster";
/// The head revision of the cluster's configuration the local copy reflects.
pub const META_HEAD: &str = "etcd_head";

/// How long a commit keeps re-checking a batch that loses races, in all.
const COMMIT_PATIENCE: Duration = Duration::from_secs(20);

/// How long a commit keeps trying while etcd does not answer (a lost member's clients
/// reconnect, and its cluster elects a new leader, well within it).
const ETCD_AWAY_PATIENCE: Duration = Duration::from_secs(15);

impl Api {
    /// Services over the shared state; ports may use the default device allow-list.
    pub fn new(shared: Arc<Shared>) -> Api {
        Api::with_devices(shared, DevicePolicy::default())
    }

    /// Services over the shared state; ports may use the devices `devices` allows.
    pub fn with_devices(shared: Arc<Shared>, devices: DevicePolicy) -> Api {
        let (events, _) = broadcast::channel(65_536);
        Api {
            shared,
            events,
            devices,
            cluster: None,
            synced: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
        }
    }

    /// The same services over the cluster's configuration: commits go to etcd, and the
    /// local copy follows it ([`Follower`]).
    pub fn with_cluster(mut self, c: Arc<Cluster>) -> Api {
        self.cluster = Some(c);
        self
    }

    /// Applies a batch: validated, durable, then published to watchers and the loop.
    pub async fn commit(&self, changes: Vec<Change>) -> Result<Committed, Status> {
        match self.cluster.clone() {
            None => self.commit_local(changes),
            Some(c) => self.commit_cluster(&c, changes).await,
        }
    }

    /// A batch checked against the local copy of the cluster's configuration and written
    /// to etcd on top of the head revision that copy reflects; one that loses a race is
    /// checked again against the newer configuration (so its allocations never collide
    /// with the winner's).
    async fn commit_cluster(
        &self,
        cl: &Cluster,
        changes: Vec<Change>,
    ) -> Result<Committed, Status> {
        let _one = cl.commit.lock().await;
        let end = std::time::Instant::now() + COMMIT_PATIENCE;
        if !cl.wait_following(COMMIT_PATIENCE).await {
            return Err(Status::unavailable(
                "this agent has not reached the cluster's configuration (etcd) yet",
            ));
        }
        // An attempt that got no answer (etcd's member went away, or its cluster is
        // electing a leader): its writes, which may have landed, and its answer.
        let mut unanswered: Option<(Writes, Committed)> = None;
        let mut away: Option<std::time::Instant> = None;
        loop {
            if let Some((w, mut done)) = unanswered.take() {
                // Through a member that serves: where the configuration is now, and
                // whether it holds this batch already.
                match self.landed(cl, &w).await {
                    Ok(Some(rev)) => {
                        done.revision = rev;
                        for e in &mut done.events {
                            e.revision = rev;
                        }
                        return Ok(done);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        unanswered = Some((w, done));
                        self.etcd_away(&mut away, e).await?;
                        continue;
                    }
                }
            }
            let (base, writes, mut done) = {
                let mut db = self.shared.db.write().unwrap_or_else(|e| e.into_inner());
                let base = cl.head();
                let mut done = db.apply(changes.clone())?;
                let writes: Writes = done
                    .touched
                    .iter()
                    .map(|u| (u.clone(), db.get(u).cloned()))
                    .collect();
                // The copy goes back to what etcd holds; the answer keeps the rest.
                db.rollback(Committed {
                    undo: std::mem::take(&mut done.undo),
                    ..Committed::default()
                });
                (base, writes, done)
            };
            match cl.write(base, &writes).await {
                Ok(rev) => {
                    self.mirror(rev, writes, Some(rev), None);
                    // The copy reflects the head this commit left: a follower that
                    // resumes after it (its watch was lost) never sees it come by.
                    cl.set_head(rev);
                    done.revision = rev;
                    for e in &mut done.events {
                        e.revision = rev;
                    }
                    return Ok(done);
                }
                Err(WriteError::Conflict(at)) => {
                    self.shared
                        .stats
                        .config_retries
                        .fetch_add(1, Ordering::Relaxed);
                    let left = end.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() || !cl.wait_head(at, left).await {
                        return Err(WriteError::Conflict(at).into());
                    }
                }
                Err(WriteError::Unavailable(e)) => {
                    unanswered = Some((writes, done));
                    self.etcd_away(&mut away, e).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether a batch whose commit got no answer landed: the copy, once it follows the
    /// head etcd holds now, holds every one of its writes. Its revision if so.
    async fn landed(&self, cl: &Cluster, w: &Writes) -> Result<Option<u64>, anyhow::Error> {
        let h = match cl.current_head().await {
            Ok(h) => h,
            Err(WriteError::Unavailable(e)) => return Err(e),
            Err(e) => return Err(anyhow::anyhow!("{}", Status::from(e).message())),
        };
        if !cl.wait_head(h, ETCD_AWAY_PATIENCE).await {
            anyhow::bail!("the configuration was not followed to etcd's head {h}");
        }
        let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
        Ok(w.iter()
            .all(|(u, state)| db.get(u) == state.as_ref())
            .then(|| db.revision()))
    }

    /// etcd did not answer a commit: waits a moment before the next try, unless it has
    /// been away for [`ETCD_AWAY_PATIENCE`] (a lost member's clients reconnect and a
    /// new leader is elected well within it).
    async fn etcd_away(
        &self,
        away: &mut Option<std::time::Instant>,
        e: anyhow::Error,
    ) -> Result<(), Status> {
        let since = *away.get_or_insert_with(|| {
            tracing::warn!("a configuration commit got no answer from etcd ({e:#}); trying again");
            std::time::Instant::now()
        });
        if since.elapsed() >= ETCD_AWAY_PATIENCE {
            return Err(WriteError::Unavailable(e).into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        Ok(())
    }

    /// Applies what etcd holds at `rev` to the local copy, once (a revision it reflects
    /// already changes nothing), keeps it in the local store, and publishes the changes.
    fn mirror(&self, rev: u64, writes: Writes, head: Option<u64>, cluster: Option<u64>) -> bool {
        let events = {
            let mut db = self.shared.db.write().unwrap_or_else(|e| e.into_inner());
            if rev <= db.revision() && cluster.is_none() {
                return false;
            }
            let mut events = Vec::new();
            let mut changed = Vec::new();
            for (u, new) in writes {
                let old = db.get(&u);
                if old == new.as_ref() {
                    continue;
                }
                let (kind, object) = match (old, &new) {
                    (None, Some(n)) => (0, n.clone()),
                    (Some(_), Some(n)) => (1, n.clone()),
                    (Some(o), None) => (2, o.clone()),
                    (None, None) => continue,
                };
                events.push(Event {
                    kind,
                    object,
                    revision: rev,
                });
                changed.push((u, new));
            }
            // Twice, as a load does: indexes that depend on other objects of the same
            // revision (parents, subnets) are right whatever the order.
            for _ in 0..2 {
                for (u, new) in &changed {
                    db.put(u, new.clone());
                }
            }
            db.set_revision(rev);
            let mut meta = Vec::new();
            if let Some(h) = head {
                meta.push((META_HEAD, h));
            }
            if let Some(c) = cluster {
                meta.push((META_CLUSTER, c));
            }
            let touched: Vec<String> = changed.into_iter().map(|(u, _)| u).collect();
            let durable = {
                let mut at = self.synced.lock().unwrap_or_else(|e| e.into_inner());
                let due = at.elapsed() >= COPY_SYNC || cluster.is_some();
                if due {
                    *at = std::time::Instant::now();
                }
                due
            };
            if let Err(e) = self.shared.store.save_with(&db, &touched, &meta, durable) {
                // The copy on disk stays at its older revision: a restart replays from
                // there.
                tracing::warn!("the local copy of the configuration was not written: {e:#}");
            }
            events
        };
        for e in &events {
            let _ = self.events.send(e.clone());
        }
        // The loop programs the new revision (and says so in the status) even when the
        // revision changed nothing of this node's.
        self.shared.kick();
        true
    }

    fn commit_local(&self, changes: Vec<Change>) -> Result<Committed, Status> {
        let c = {
            let mut db = self.shared.db.write().unwrap_or_else(|e| e.into_inner());
            let c = db.apply(changes)?;
            if let Err(e) = self.shared.store.save(&db, &c.touched) {
                db.rollback(c);
                return Err(Status::unavailable(format!(
                    "the configuration store refused the change: {e:#}"
                )));
            }
            c
        };
        for e in &c.events {
            let _ = self.events.send(e.clone());
        }
        self.shared.kick();
        Ok(c)
    }
}

fn object(o: Option<proto::Object>) -> Result<proto::Object, Status> {
    o.ok_or_else(|| Status::internal("no object stored"))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigApi for Api {
    async fn create(&self, r: Request<proto::Object>) -> Result<Response<proto::Object>, Status> {
        let mut c = self.commit(vec![Change::Create(r.into_inner())]).await?;
        Ok(Response::new(object(c.objects.pop().flatten())?))
    }

    async fn update(&self, r: Request<proto::Object>) -> Result<Response<proto::Object>, Status> {
        let mut c = self.commit(vec![Change::Update(r.into_inner())]).await?;
        Ok(Response::new(object(c.objects.pop().flatten())?))
    }

    async fn delete(
        &self,
        r: Request<proto::Ref>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let c = self.commit(vec![Change::Delete(r.into_inner())]).await?;
        Ok(Response::new(proto::DeleteResponse {
            revision: c.revision,
        }))
    }

    async fn get(&self, r: Request<proto::Ref>) -> Result<Response<proto::Object>, Status> {
        let r = r.into_inner();
        let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
        let want =
            if r.r#type.is_empty() {
                None
            } else {
                Some(Kind::from_name(&r.r#type).ok_or_else(|| {
                    Status::invalid_argument(format!("type: unknown {:?}", r.r#type))
                })?)
            };
        db.resolve(&r, want)
            .map(|o| Response::new(o.clone()))
            .map_err(Status::not_found)
    }

    async fn list(
        &self,
        r: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let r = r.into_inner();
        let kind = Kind::from_name(&r.r#type)
            .ok_or_else(|| Status::invalid_argument(format!("type: unknown {:?}", r.r#type)))?;
        let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
        let objects = db
            .list(kind)
            .into_iter()
            .filter(|o| {
                let fq = meta(o).1;
                r.parent_fq_name.is_empty()
                    || (fq.len() > r.parent_fq_name.len() && fq.starts_with(&r.parent_fq_name))
            })
            .cloned()
            .collect();
        Ok(Response::new(proto::ListResponse { objects }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        r: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = r.into_inner();
        let mut kinds = Vec::new();
        for t in &r.types {
            kinds.push(
                Kind::from_name(t)
                    .ok_or_else(|| Status::invalid_argument(format!("types: unknown {t:?}")))?,
            );
        }
        let wanted = move |o: &proto::Object| {
            kinds.is_empty() || kind_of(o).is_some_and(|k| kinds.contains(&k))
        };
        // Subscribe before the snapshot so that nothing falls between the two.
        let rx = self.events.subscribe();
        let initial: Vec<proto::WatchEvent> = if r.initial {
            let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
            let rev = db.revision();
            let mut v: Vec<_> = db.all().filter(|o| wanted(o)).cloned().collect();
            v.sort_by(|a, b| (kind_of(a), meta(a).1).cmp(&(kind_of(b), meta(b).1)));
            v.into_iter()
                .map(|o| proto::WatchEvent {
                    kind: 0,
                    object: Some(o),
                    revision: rev,
                })
                .collect()
        } else {
            Vec::new()
        };
        let live = BroadcastStream::new(rx).filter_map(move |e| match e {
            Ok(e) if wanted(&e.object) => Some(Ok(proto::WatchEvent {
                kind: e.kind,
                object: Some(e.object),
                revision: e.revision,
            })),
            Ok(_) => None,
            Err(_) => Some(Err(Status::data_loss(
                "the watcher fell behind; watch again with initial=true",
            ))),
        });
        let s = tokio_stream::iter(initial.into_iter().map(Ok)).chain(live);
        Ok(Response::new(Box::pin(s)))
    }

    async fn batch(
        &self,
        r: Request<proto::BatchRequest>,
    ) -> Result<Response<proto::BatchResponse>, Status> {
        let mut changes = Vec::new();
        for (i, c) in r.into_inner().changes.into_iter().enumerate() {
            changes.push(match c.change {
                Some(proto::change::Change::Create(o)) => Change::Create(o),
                Some(proto::change::Change::Update(o)) => Change::Update(o),
                Some(proto::change::Change::Delete(r)) => Change::Delete(r),
                None => {
                    return Err(Status::invalid_argument(format!("changes[{i}]: empty")));
                }
            });
        }
        let c = self.commit(changes).await?;
        Ok(Response::new(proto::BatchResponse {
            objects: c
                .objects
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
            revision: c.revision,
        }))
    }
}

#[tonic::async_trait]
impl AgentApi for Api {
    async fn add_port(&self, r: Request<proto::Port>) -> Result<Response<proto::PortInfo>, Status> {
        let p = r.into_inner();
        {
            let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
            match db.get(&p.vmi_uuid) {
                Some(o) if kind_of(o) == Some(Kind::VirtualMachineInterface) => {}
                _ => {
                    return Err(Status::not_found(format!(
                        "vmi_uuid: virtual-machine-interface {:?} does not exist",
                        p.vmi_uuid
                    )));
                }
            }
        }
        if !p.device.is_empty() {
            // The vrouter (root) hot-plugs what this names: an allow-list match only.
            let devices = self.devices.clone();
            let spec = p.device.clone();
            tokio::task::spawn_blocking(move || devices.check(&spec, &HostLinks))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|why| {
                    tracing::warn!(vmi = %p.vmi_uuid, device = %p.device.escape_debug(), %why, "AddPort refused");
                    self.shared.stats.refused_devices.fetch_add(1, Ordering::Relaxed);
                    Status::invalid_argument(format!("device: {why}"))
                })?;
        }
        let name = if p.name.is_empty() {
            vrouter_api::port_name(&p.device).to_string()
        } else {
            p.name.clone()
        };
        let rec = PortRec {
            vmi_uuid: p.vmi_uuid.clone(),
            device: p.device.clone(),
            name,
            mtu: port_mtu(p.mtu).map_err(|why| Status::invalid_argument(format!("mtu: {why}")))?,
        };
        let shared = Arc::clone(&self.shared);
        let vmi = p.vmi_uuid.clone();
        tokio::task::spawn_blocking(move || {
            let old = shared
                .ports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(vmi.clone(), rec.clone());
            if let Err(e) = shared.store.set_port(&vmi, Some(&rec)) {
                let mut ports = shared.ports.lock().unwrap_or_else(|e| e.into_inner());
                match old {
                    Some(o) => ports.insert(vmi.clone(), o),
                    None => ports.remove(&vmi),
                };
                return Err(Status::unavailable(format!(
                    "the store refused the port: {e:#}"
                )));
            }
            let g = shared.kick();
            if !shared.wait_programmed(g, Duration::from_secs(20)) {
                return Err(Status::unavailable(format!(
                    "port recorded; the vrouter is not reachable yet ({})",
                    shared
                        .stats
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                )));
            }
            if let Some(why) = shared
                .port_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&vmi)
            {
                return Err(Status::invalid_argument(format!("device: {why}")));
            }
            shared
                .desired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ports
                .get(&vmi)
                .cloned()
                .ok_or_else(|| {
                    Status::failed_precondition("vmi_uuid: the interface has no network")
                })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map(Response::new)
    }

    async fn add_ports(
        &self,
        r: Request<proto::Ports>,
    ) -> Result<Response<proto::PortList>, Status> {
        let ports = r.into_inner().ports;
        let mut recs = Vec::with_capacity(ports.len());
        {
            let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
            for (i, p) in ports.iter().enumerate() {
                if db
                    .get(&p.vmi_uuid)
                    .is_none_or(|o| kind_of(o) != Some(Kind::VirtualMachineInterface))
                {
                    return Err(Status::not_found(format!(
                        "ports[{i}].vmi_uuid: virtual-machine-interface {:?} does not exist",
                        p.vmi_uuid
                    )));
                }
                if !p.device.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "ports[{i}].device: ports with a device are added one at a time (AddPort)"
                    )));
                }
                recs.push(PortRec {
                    vmi_uuid: p.vmi_uuid.clone(),
                    device: String::new(),
                    name: p.name.clone(),
                    mtu: port_mtu(p.mtu).map_err(|why| {
                        Status::invalid_argument(format!("ports[{i}].mtu: {why}"))
                    })?,
                });
            }
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            shared
                .store
                .set_ports(&recs)
                .map_err(|e| Status::unavailable(format!("the store refused the ports: {e:#}")))?;
            {
                let mut map = shared.ports.lock().unwrap_or_else(|e| e.into_inner());
                for r in &recs {
                    map.insert(r.vmi_uuid.clone(), r.clone());
                }
            }
            let g = shared.kick();
            if !shared.wait_programmed(g, Duration::from_secs(300)) {
                return Err(Status::unavailable(
                    "ports recorded; the vrouter is not reachable yet",
                ));
            }
            let d = shared.desired.lock().unwrap_or_else(|e| e.into_inner());
            Ok(Response::new(proto::PortList {
                ports: recs
                    .iter()
                    .filter_map(|r| d.ports.get(&r.vmi_uuid).cloned())
                    .collect(),
            }))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    async fn delete_port(
        &self,
        r: Request<proto::PortRef>,
    ) -> Result<Response<proto::Empty>, Status> {
        let vmi = r.into_inner().vmi_uuid;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            if shared
                .ports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&vmi)
                .is_none()
            {
                return Err(Status::not_found(format!("vmi_uuid: no port for {vmi:?}")));
            }
            shared
                .store
                .set_port(&vmi, None)
                .map_err(|e| Status::unavailable(format!("{e:#}")))?;
            let g = shared.kick();
            shared.wait_programmed(g, Duration::from_secs(20));
            Ok(Response::new(proto::Empty {}))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    async fn list_ports(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::PortList>, Status> {
        let d = self
            .shared
            .desired
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(Response::new(proto::PortList {
            ports: d.ports.values().cloned().collect(),
        }))
    }

    async fn status(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::AgentStatus>, Status> {
        let s = &self.shared.stats;
        Ok(Response::new(proto::AgentStatus {
            vrouter_connected: s.connected.load(Ordering::Acquire),
            config_revision: self
                .shared
                .db
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .revision(),
            programmed_revision: s.programmed_revision.load(Ordering::Acquire),
            reconciles: s.reconciles.load(Ordering::Relaxed),
            vrouter_ops: s.ops.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }))
    }
}

impl Follower for Api {
    fn position(&self) -> (u64, u64) {
        let rev = self
            .shared
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .revision();
        match self.shared.store.meta(META_CLUSTER) {
            Ok(Some(c)) => (rev, c),
            _ => (0, 0),
        }
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    fn refuse(&self, key: &str, why: &str) {
        self.shared
            .stats
            .refused_config
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key = %key.escape_debug(), %why, "configuration value from etcd refused");
    }

    fn apply(&self, u: Update) {
        match u {
            Update::At {
                revision,
                writes,
                head,
            } => {
                self.mirror(revision, writes, head, None);
            }
            Update::Whole {
                objects,
                revision,
                head,
                cluster_id,
            } => {
                let mut writes: Writes = {
                    let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
                    let keep: std::collections::BTreeSet<&str> =
                        objects.iter().map(|(u, _)| u.as_str()).collect();
                    db.all()
                        .map(|o| meta(o).0)
                        .filter(|u| !keep.contains(u))
                        .map(|u| (u.to_string(), None))
                        .collect()
                };
                writes.extend(objects.into_iter().map(|(u, o)| (u, Some(o))));
                self.mirror(revision, writes, Some(head), Some(cluster_id));
            }
        }
    }
}

/// The MTU of a plugged port: 0 means the standard 1500; otherwise within what a vif may
/// have (the vrouter refuses more than its packet buffers hold on its own).
fn port_mtu(mtu: u32) -> Result<u16, String> {
    use vrouter_api::config::{MAX_MTU, MIN_MTU};
    match mtu {
        0 => Ok(1500),
        m => u16::try_from(m)
            .ok()
            .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
            .ok_or_else(|| format!("{m} not in {MIN_MTU}..={MAX_MTU}")),
    }
}

#[cfg(test)]
mod tests {
    use super::port_mtu;

    #[test]
    fn a_ports_mtu_is_1500_by_default_and_checked() {
        assert_eq!(port_mtu(0), Ok(1500));
        assert_eq!(port_mtu(9000), Ok(9000));
        assert_eq!(port_mtu(68), Ok(68));
        for bad in [1, 67, 9199, 65_536, u32::MAX] {
            let e = port_mtu(bad).unwrap_err();
            assert!(e.contains(&bad.to_string()), "{e}");
        }
    }
}
