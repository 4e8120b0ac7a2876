//! The cluster's configuration in etcd (`--config-store etcd`): one copy of the VNC
//! objects for every node, written through any agent's `ConfigApi` and followed by all.
//!
//! Keys, under [`CONFIG_PREFIX`]:
//! - `objects/<uuid>`: an object (protobuf), as the store's checks left it;
//! - `head`: the commit point; its mod revision is the configuration's revision, and
//!   every commit changes it, so a writer that compares it with the revision its check
//!   read cannot win a race with another writer (optimistic concurrency: the loser
//!   re-checks its batch against the new state and tries again, so two writers never both
//!   take one address or one name);
//! - `staged/<id>/<n>`: the chunks of a batch too large for one etcd transaction.
//!
//! A batch is checked against the whole configuration in memory ([`crate::store::Db`]:
//! validation, address / VNI / id allocation), and what it changed (each touched object's
//! new state) is written in one transaction: the compare on `head`, every object, `head`.
//! etcd bounds a transaction (`--max-txn-ops`, 128 by default; `--max-request-bytes`,
//! 1.5 MiB): a batch over either bound is written on purpose in two phases, still all or
//! nothing. Its changes go first to `staged/<id>/` in chunks (nobody reads them yet), then
//! one small transaction moves `head` to name them: that is its commit point, and every
//! follower applies the whole batch there, at once. The objects are then written to
//! their keys in transactions that each compare `head` with that commit, and a last one
//! clears `head` and the chunks. A writer that finds a staged `head` (its committer died
//! half-way) finishes that work before its own commit; until then no other commit can
//! land, so no later change is overwritten. [`Limits`] carries etcd's two settings.
//!
//! Every agent follows the prefix with one watch, from the revision it has applied (no
//! gap): on start it resumes from the revision its local copy (the redb store) holds, and
//! reads the whole prefix again only when etcd compacted that revision away, or is not
//! the etcd it followed. While etcd is away the node keeps programming what it has.
//! Values read from etcd are checked like routes: one that does not decode is refused,
//! counted (`agent_refused_config_total`) and taken as absent, and the rest goes on.
//! Whoever can write the prefix can change every node: with etcd's authentication on,
//! node roles read it and only the roles [`crate::etcd::provision`] makes config writers
//! may write it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::etcd::EtcdArgs;
use crate::kinds::meta;
use crate::proto::{self, Object};

/// Where the configuration lives.
pub const CONFIG_PREFIX: &str = "/vrouter/config/";
/// Objects by UUID.
pub const OBJECTS: &str = "/vrouter/config/objects/";
/// Chunks of batches larger than one transaction.
pub const STAGED: &str = "/vrouter/config/staged/";
/// The commit point.
pub const HEAD: &str = "/vrouter/config/head";

/// How long one write may wait for etcd before it is reported unavailable.
const WRITE_PATIENCE: Duration = Duration::from_secs(10);

/// What a batch leaves behind: for each object it touched, its new state (none: deleted).
pub type Writes = Vec<(String, Option<Object>)>;

/// etcd's default `--max-txn-ops`.
const ETCD_MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes`.
const ETCD_MAX_REQUEST_BYTES: usize = 1_572_864;

/// etcd's bounds on one transaction, as its server is set (`etcd --max-txn-ops`,
/// `--max-request-bytes`); the defaults are etcd's.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// The most operations etcd takes in one transaction (its --max-txn-ops).
    #[arg(long = "etcd-max-txn-ops", default_value_t = ETCD_MAX_TXN_OPS)]
    pub max_txn_ops: usize,
    /// The largest request etcd takes, in bytes (its --max-request-bytes).
    #[arg(long = "etcd-max-request-bytes", default_value_t = ETCD_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_txn_ops: ETCD_MAX_TXN_OPS,
            max_request_bytes: ETCD_MAX_REQUEST_BYTES,
        }
    }
}

impl Limits {
    /// Operations a transaction of ours may hold beside `head`.
    fn ops(&self) -> usize {
        self.max_txn_ops.saturating_sub(2).max(1)
    }

    /// Bytes of keys and values a transaction of ours may carry: the rest of a request
    /// is its framing and compares, well under the margin kept.
    fn bytes(&self) -> usize {
        self.max_request_bytes.saturating_sub(16 * 1024).max(4096)
    }
}

/// The commit point's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// A committed batch whose objects are not all at their keys yet: its chunks'
    /// folder under [`STAGED`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
}

/// The value of a head with nothing staged, which commits compare with.
const PLAIN: &[u8] = b"{}";

impl Head {
    fn decode(v: &[u8]) -> Result<Head, String> {
        serde_json::from_slice(v).map_err(|e| format!("not a configuration head: {e}"))
    }
}

fn object_key(uuid: &str) -> String {
    format!("{OBJECTS}{uuid}")
}

fn encode(o: &Object) -> Vec<u8> {
    o.encode_to_vec()
}

/// A chunk of staged writes: a batch of updates (an object's new state) and deletes.
fn encode_chunk(w: &[(String, Option<Object>)]) -> Vec<u8> {
    proto::BatchRequest {
        changes: w
            .iter()
            .map(|(u, o)| proto::Change {
                change: Some(match o {
                    Some(o) => proto::change::Change::Update(o.clone()),
                    None => proto::change::Change::Delete(proto::Ref {
                        uuid: u.clone(),
                        ..Default::default()
                    }),
                }),
            })
            .collect(),
    }
    .encode_to_vec()
}

fn decode_chunk(v: &[u8]) -> Result<Writes, String> {
    let b = proto::BatchRequest::decode(v).map_err(|e| format!("not a staged chunk: {e}"))?;
    b.changes
        .into_iter()
        .map(|c| match c.change {
            Some(proto::change::Change::Update(o)) => {
                let u = meta(&o).0.to_string();
                check_uuid(&u)?;
                Ok((u, Some(o)))
            }
            Some(proto::change::Change::Delete(r)) => {
                check_uuid(&r.uuid)?;
                Ok((r.uuid, None))
            }
            _ => Err("a staged change is neither an object nor a delete".to_string()),
        })
        .collect()
}

fn check_uuid(u: &str) -> Result<(), String> {
    uuid::Uuid::parse_str(u)
        .map(|_| ())
        .map_err(|_| format!("{:?} is not a UUID", u.escape_debug()))
}

/// Reads an object value under `key`: it must decode, carry a type, and name the UUID
/// its key does.
pub fn read_object(key: &str, v: &[u8]) -> Result<(String, Object), String> {
    let uuid = key
        .strip_prefix(OBJECTS)
        .ok_or_else(|| "not under the objects prefix".to_string())?;
    check_uuid(uuid)?;
    let o = Object::decode(v).map_err(|e| format!("not an object: {e}"))?;
    if o.kind.is_none() {
        return Err("an object without a type".into());
    }
    if meta(&o).0 != uuid {
        return Err(format!(
            "the value is object {:?}, not its key's",
            meta(&o).0.escape_debug()
        ));
    }
    Ok((uuid.to_string(), o))
}

/// Why a write did not land.
#[derive(Debug)]
pub enum WriteError {
    /// Someone committed first (or a staged batch was finished first): check again
    /// against a configuration at least at this head revision.
    Conflict(u64),
    /// The batch cannot be written: an object larger than one etcd request.
    TooLarge(String),
    /// etcd refused this node's credentials for the configuration.
    Denied(String),
    /// etcd is not reachable, or failed.
    Unavailable(anyhow::Error),
}

impl From<WriteError> for Status {
    fn from(e: WriteError) -> Status {
        match e {
            WriteError::Conflict(_) => Status::aborted(
                "the configuration kept changing while this batch was checked; try again",
            ),
            WriteError::TooLarge(why) => Status::resource_exhausted(why),
            WriteError::Denied(why) => Status::permission_denied(format!(
                "this node may not write the cluster's configuration: {why}"
            )),
            WriteError::Unavailable(e) => Status::unavailable(format!(
                "the cluster's configuration (etcd) is not reachable: {e:#}"
            )),
        }
    }
}

fn etcd_error(e: etcd_client::Error) -> WriteError {
    match &e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => {
            WriteError::Denied(s.message().to_string())
        }
        _ => WriteError::Unavailable(e.into()),
    }
}

/// The writes in transactions that each fit etcd's bounds: `(ops, bytes)` of one write
/// given by `size`.
fn groups<'a, T>(items: &'a [T], limits: &Limits, size: impl Fn(&T) -> usize) -> Vec<&'a [T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, it) in items.iter().enumerate() {
        let b = size(it);
        if i > start && (i - start >= limits.ops() || bytes + b > limits.bytes()) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += b;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

fn write_size(w: &(String, Option<Object>)) -> usize {
    OBJECTS.len() + w.0.len() + w.1.as_ref().map_or(0, Message::encoded_len) + 16
}

/// A connection to the cluster's configuration, and where this agent's copy stands.
pub struct Cluster {
    etcd: EtcdArgs,
    limits: Limits,
    client: tokio::sync::Mutex<Option<Client>>,
    /// One commit at a time from this agent (others race through etcd).
    pub(crate) commit: tokio::sync::Mutex<()>,
    /// The mod revision of `head` the local copy reflects.
    head: AtomicU64,
    applied: tokio::sync::watch::Sender<u64>,
    /// Set once the follower has caught up with etcd for the first time: commits wait
    /// for it, so that none is checked against a copy a first whole read then replaces.
    following: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.etcd.endpoints)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster configuration reached through `etcd`, written within `limits`; the
    /// local copy reflects head revision `head`.
    pub fn new(etcd: EtcdArgs, limits: Limits, head: u64) -> Cluster {
        Cluster {
            etcd,
            limits,
            client: tokio::sync::Mutex::new(None),
            commit: tokio::sync::Mutex::new(()),
            head: AtomicU64::new(head),
            applied: tokio::sync::watch::channel(head).0,
            following: tokio::sync::watch::channel(false).0,
        }
    }

    /// The head revision the local copy reflects.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Records that the local copy reflects `head` (never backwards).
    pub(crate) fn set_head(&self, head: u64) {
        if self.head.fetch_max(head, Ordering::AcqRel) < head {
            self.applied.send_replace(head);
        }
    }

    /// Records that the local copy was read whole at head revision `head` (which may be
    /// lower than before: another etcd).
    pub(crate) fn reset_head(&self, head: u64) {
        self.head.store(head, Ordering::Release);
        self.applied.send_replace(head);
    }

    /// Waits until the follower has caught up with etcd once (or `timeout` passes).
    pub async fn wait_following(&self, timeout: Duration) -> bool {
        let mut rx = self.following.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|f| *f))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the local copy reflects head revision `at` (or `timeout` passes).
    pub async fn wait_head(&self, at: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|h| *h >= at))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn client(&self) -> Result<Client, WriteError> {
        let mut c = self.client.lock().await;
        if let Some(c) = &*c {
            return Ok(c.clone());
        }
        let n = self.etcd.connect().await.map_err(WriteError::Unavailable)?;
        *c = Some(n.clone());
        Ok(n)
    }

    /// The head revision etcd holds now (0: none yet), read through a fresh connection
    /// if the last one failed.
    pub async fn current_head(&self) -> Result<u64, WriteError> {
        let mut c = self.client().await?;
        match tokio::time::timeout(Duration::from_secs(5), c.get(HEAD, None)).await {
            Ok(Ok(r)) => Ok(r.kvs().first().map_or(0, |kv| kv.mod_revision() as u64)),
            Ok(Err(e)) => {
                *self.client.lock().await = None;
                Err(WriteError::Unavailable(e.into()))
            }
            Err(_) => {
                *self.client.lock().await = None;
                Err(WriteError::Unavailable(anyhow::anyhow!("no answer in 5 s")))
            }
        }
    }

    fn head_value(staged: Option<String>) -> Vec<u8> {
        match staged {
            None => PLAIN.to_vec(),
            Some(_) => serde_json::to_vec(&Head { staged }).unwrap_or_default(),
        }
    }

    /// Writes a checked batch, made against head revision `base`. Returns the head
    /// revision after it (the batch's revision).
    pub async fn write(&self, base: u64, writes: &Writes) -> Result<u64, WriteError> {
        let r = match tokio::time::timeout(WRITE_PATIENCE, async {
            let mut c = self.client().await?;
            self.write_with(&mut c, base, writes).await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(WriteError::Unavailable(anyhow::anyhow!(
                "no answer in {WRITE_PATIENCE:?}"
            ))),
        };
        if matches!(r, Err(WriteError::Unavailable(_))) {
            // A fresh connection next time.
            *self.client.lock().await = None;
        }
        r
    }

    /// What a commit on top of head revision `base` compares: the head is still that
    /// one, and has nothing staged (no head at all for the first commit).
    fn base_compare(base: u64) -> Vec<Compare> {
        if base == 0 {
            vec![Compare::version(HEAD, CompareOp::Equal, 0)]
        } else {
            vec![
                Compare::mod_revision(HEAD, CompareOp::Equal, base as i64),
                Compare::value(HEAD, CompareOp::Equal, PLAIN),
            ]
        }
    }

    /// What moving a committed batch `at` to its keys compares: the head is still it.
    fn staged_compare(at: u64) -> [Compare; 1] {
        [Compare::mod_revision(HEAD, CompareOp::Equal, at as i64)]
    }

    async fn write_with(&self, c: &mut Client, base: u64, w: &Writes) -> Result<u64, WriteError> {
        let limits = &self.limits;
        if let Some((u, _)) = w.iter().find(|w| write_size(w) > limits.bytes()) {
            return Err(WriteError::TooLarge(format!(
                "object {u} is larger than one etcd request ({} bytes)",
                limits.max_request_bytes
            )));
        }
        let total: usize = w.iter().map(write_size).sum();
        if w.len() <= limits.ops() && total <= limits.bytes() {
            let mut ops: Vec<TxnOp> = w.iter().map(put_or_delete).collect();
            ops.push(TxnOp::put(HEAD, Self::head_value(None), None));
            let t = Txn::new()
                .when(Self::base_compare(base))
                .and_then(ops)
                .or_else([TxnOp::get(HEAD, None)]);
            let r = c.txn(t).await.map_err(etcd_error)?;
            let rev = r.header().map_or(0, |h| h.revision()) as u64;
            return if r.succeeded() {
                Ok(rev)
            } else {
                Err(self.after_conflict(c, &r).await)
            };
        }
        // Two phases: the chunks, then the commit point, then the objects.
        let id = uuid::Uuid::new_v4().to_string();
        let chunks: Vec<Vec<u8>> = groups(w, limits, write_size)
            .into_iter()
            .map(encode_chunk)
            .collect();
        let keys: Vec<String> = (0..chunks.len())
            .map(|i| format!("{STAGED}{id}/{i:06}"))
            .collect();
        let staged: Vec<(usize, usize)> = (0..chunks.len()).map(|i| (i, chunks[i].len())).collect();
        for g in groups(&staged, limits, |(i, n)| keys[*i].len() + n + 16) {
            let ops: Vec<TxnOp> = g
                .iter()
                .map(|(i, _)| TxnOp::put(keys[*i].as_str(), chunks[*i].clone(), None))
                .collect();
            if let Err(e) = c.txn(Txn::new().and_then(ops)).await {
                self.drop_staged(c, &id).await;
                return Err(etcd_error(e));
            }
        }
        let t = Txn::new()
            .when(Self::base_compare(base))
            .and_then([TxnOp::put(HEAD, Self::head_value(Some(id.clone())), None)])
            .or_else([TxnOp::get(HEAD, None)]);
        let r = match c.txn(t).await {
            Ok(r) => r,
            Err(e) => {
                // Whether it landed is unknown: the chunks stay for whoever finds them
                // named by `head`; unnamed ones are cleared by the next large commit.
                return Err(etcd_error(e));
            }
        };
        if !r.succeeded() {
            self.drop_staged(c, &id).await;
            return Err(self.after_conflict(c, &r).await);
        }
        let at = r.header().map_or(0, |h| h.revision()) as u64;
        tracing::info!(
            objects = w.len(),
            chunks = chunks.len(),
            revision = at,
            "committed a batch larger than one etcd transaction"
        );
        // Committed. What follows only moves the objects to their keys; if it stops
        // half-way the next writer finishes it.
        match self.finish(c, at, &id, w).await {
            Ok(done) => Ok(done),
            Err(e) => {
                tracing::warn!(
                    "the committed batch {id} is not yet at its keys ({e:#}); the next commit finishes it"
                );
                Ok(at)
            }
        }
    }

    /// Moves a committed batch's objects to their keys, then clears `head` and its
    /// chunks; each step only while `head` is still that commit. Returns the head
    /// revision after.
    async fn finish(&self, c: &mut Client, at: u64, id: &str, w: &Writes) -> Result<u64> {
        for g in groups(w, &self.limits, write_size) {
            let t = Txn::new()
                .when(Self::staged_compare(at))
                .and_then(g.iter().map(put_or_delete).collect::<Vec<_>>());
            if !c.txn(t).await?.succeeded() {
                bail!("the batch was finished by another writer");
            }
        }
        let t = Txn::new().when(Self::staged_compare(at)).and_then([
            TxnOp::put(HEAD, Self::head_value(None), None),
            TxnOp::delete(
                format!("{STAGED}{id}/"),
                Some(DeleteOptions::new().with_prefix()),
            ),
        ]);
        let r = c.txn(t).await?;
        if !r.succeeded() {
            bail!("the batch was finished by another writer");
        }
        Ok(r.header().map_or(0, |h| h.revision()) as u64)
    }

    async fn drop_staged(&self, c: &mut Client, id: &str) {
        let _ = c
            .delete(
                format!("{STAGED}{id}/"),
                Some(DeleteOptions::new().with_prefix()),
            )
            .await;
    }

    /// After a failed compare: the head revision to catch up with. A staged head (a
    /// committer that stopped half-way) is finished first.
    async fn after_conflict(&self, c: &mut Client, r: &etcd_client::TxnResponse) -> WriteError {
        let head = r.op_responses().into_iter().find_map(|o| match o {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let Some(kv) = head else {
            return WriteError::Conflict(0);
        };
        let at = kv.mod_revision() as u64;
        if let Ok(Head {
            staged: Some(id), ..
        }) = Head::decode(kv.value())
        {
            match read_staged(c, &id, at as i64).await {
                Ok(w) => match self.finish(c, at, &id, &w).await {
                    Ok(done) => {
                        tracing::info!(batch = %id, "finished a committed batch another agent left half-way");
                        return WriteError::Conflict(done);
                    }
                    Err(e) => tracing::debug!("finishing staged batch {id}: {e:#}"),
                },
                Err(e) => tracing::warn!("staged batch {id}: {e:#}"),
            }
        }
        WriteError::Conflict(at)
    }
}

fn put_or_delete(w: &(String, Option<Object>)) -> TxnOp {
    match &w.1 {
        Some(o) => TxnOp::put(object_key(&w.0), encode(o), None),
        None => TxnOp::delete(object_key(&w.0), None),
    }
}

/// The end of the key range that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut e = prefix.as_bytes().to_vec();
    if let Some(last) = e.last_mut() {
        *last += 1;
    }
    e
}

/// Every key-value under `prefix` at `revision` (0: now), read a page at a time so that
/// no response exceeds what a gRPC message may hold. Returns them and the revision read.
async fn read_prefix(
    c: &mut Client,
    prefix: &str,
    revision: i64,
) -> Result<(Vec<etcd_client::KeyValue>, i64)> {
    let end = prefix_end(prefix);
    let mut from = prefix.as_bytes().to_vec();
    let mut rev = revision;
    let mut limit = 512i64;
    let mut out = Vec::new();
    loop {
        let mut o = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if rev > 0 {
            o = o.with_revision(rev);
        }
        let mut r = match c.get(from.clone(), Some(o)).await {
            Ok(r) => r,
            // A page of large values over the message limit: smaller pages.
            Err(etcd_client::Error::GRpcStatus(s))
                if limit > 1
                    && matches!(
                        s.code(),
                        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                    ) =>
            {
                limit /= 4;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if rev == 0 {
            rev = r.header().map_or(0, |h| h.revision());
        }
        let more = r.more();
        let kvs = r.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
        }
        out.extend(kvs);
        if !more {
            return Ok((out, rev));
        }
    }
}

async fn read_staged(c: &mut Client, id: &str, revision: i64) -> Result<Writes> {
    let (kvs, _) = read_prefix(c, &format!("{STAGED}{id}/"), revision).await?;
    if kvs.is_empty() {
        bail!("no chunks");
    }
    let mut w = Vec::new();
    for kv in kvs {
        w.extend(decode_chunk(kv.value()).map_err(anyhow::Error::msg)?);
    }
    Ok(w)
}

/// What the follower hands the local copy.
#[derive(Debug)]
pub enum Update {
    /// The configuration as a whole (a first read, or one after a gap): everything not
    /// in it goes.
    Whole {
        /// Every object.
        objects: Vec<(String, Object)>,
        /// The revision read at.
        revision: u64,
        /// The head's mod revision.
        head: u64,
        /// The etcd cluster read.
        cluster_id: u64,
    },
    /// The changes up to an etcd revision (since the last update).
    At {
        /// The revision.
        revision: u64,
        /// What changed.
        writes: Writes,
        /// The revision of the last change of `head` among them (a commit point).
        head: Option<u64>,
    },
}

/// The local copy the follower keeps current.
pub trait Follower: Send + Sync {
    /// The etcd revision the copy reflects, and the cluster it came from (0, 0: none).
    fn position(&self) -> (u64, u64);
    /// Applies an update.
    fn apply(&self, u: Update);
    /// A value under the prefix that is not configuration: counted and logged; the
    /// follower takes it as absent.
    fn refuse(&self, key: &str, why: &str);
    /// Whether to stop following.
    fn stopped(&self) -> bool;
}

/// Follows the configuration until the follower stops: a whole read when the local
/// copy has nothing (or a gap), then one watch.
pub async fn follow(cluster: Arc<Cluster>, to: Arc<dyn Follower>) {
    while !to.stopped() {
        if let Err(e) = session(&cluster, &*to).await {
            tracing::warn!("configuration follower: {e:#}; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Reads the configuration of etcd cluster `cluster_id` whole and hands it over.
async fn whole(
    c: &mut Client,
    cluster: &Cluster,
    to: &dyn Follower,
    cluster_id: u64,
) -> Result<u64> {
    let (kvs, rev) = read_prefix(c, CONFIG_PREFIX, 0).await?;
    let mut objects = std::collections::BTreeMap::new();
    let mut head = 0;
    let mut staged = None;
    for kv in &kvs {
        let k = String::from_utf8_lossy(kv.key()).into_owned();
        if k == HEAD {
            head = kv.mod_revision() as u64;
            match Head::decode(kv.value()) {
                Ok(h) => staged = h.staged,
                Err(why) => to.refuse(&k, &why),
            }
        } else if k.starts_with(OBJECTS) {
            match read_object(&k, kv.value()) {
                Ok((u, o)) => {
                    objects.insert(u, o);
                }
                Err(why) => to.refuse(&k, &why),
            }
        }
    }
    if let Some(id) = staged {
        // Committed, not yet at its keys: the chunks hold the newer states.
        for (u, o) in read_staged(c, &id, rev).await? {
            match o {
                Some(o) => objects.insert(u, o),
                None => objects.remove(&u),
            };
        }
    }
    tracing::info!(
        objects = objects.len(),
        revision = rev,
        "read the cluster's configuration"
    );
    to.apply(Update::Whole {
        objects: objects.into_iter().collect(),
        revision: rev as u64,
        head,
        cluster_id,
    });
    cluster.reset_head(head);
    Ok(rev as u64)
}

async fn session(cluster: &Cluster, to: &dyn Follower) -> Result<()> {
    let mut c = cluster.etcd.connect().await?;
    let now = c.get(HEAD, None).await.context("reading the head")?;
    let (now_rev, now_id) = now
        .header()
        .map_or((0, 0), |h| (h.revision() as u64, h.cluster_id()));
    let (have, id) = to.position();
    // Resume where the local copy stands, unless it has nothing or came from another
    // etcd (or one that lost what it had).
    let mut from = if have > 0 && id == now_id && have <= now_rev {
        tracing::info!(revision = have, "configuration follower: resuming");
        have
    } else {
        whole(&mut c, cluster, to, now_id).await?
    };
    let mut first = true;
    loop {
        let (_w, mut stream) = c
            .watch(
                CONFIG_PREFIX,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(from as i64 + 1)
                        .with_progress_notify(),
                ),
            )
            .await?;
        if first {
            // Resumed: what the copy lacks comes first on this watch, in order; commits
            // checked meanwhile lose their compare and are checked again.
            cluster.following.send_replace(true);
            first = false;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => if to.stopped() { return Ok(()) },
                msg = stream.message() => {
                    let Some(resp) = msg? else { bail!("the watch ended") };
                    if resp.compact_revision() > 0 {
                        tracing::warn!(
                            revision = from,
                            compacted = resp.compact_revision(),
                            "configuration follower: etcd compacted past this copy; reading it whole"
                        );
                        from = whole(&mut c, cluster, to, now_id).await?;
                        break;
                    }
                    if resp.canceled() {
                        bail!("the watch was cancelled: {}", resp.cancel_reason());
                    }
                    from = apply_events(&mut c, cluster, to, resp.events(), from).await?;
                }
            }
        }
    }
}

/// Applies a watch response's events (all its revisions at once: one write of the local
/// copy); returns the last revision applied.
async fn apply_events(
    c: &mut Client,
    cluster: &Cluster,
    to: &dyn Follower,
    events: &[etcd_client::Event],
    from: u64,
) -> Result<u64> {
    let mut writes = Writes::new();
    let mut last = from;
    let mut head = None;
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let rev = kv.mod_revision() as u64;
        if rev <= from {
            continue;
        }
        last = last.max(rev);
        let k = String::from_utf8_lossy(kv.key()).into_owned();
        if k == HEAD {
            head = Some(rev);
            if ev.event_type() == EventType::Put {
                match Head::decode(kv.value()) {
                    Ok(Head {
                        staged: Some(id), ..
                    }) => writes.extend(
                        read_staged(c, &id, rev as i64)
                            .await
                            .with_context(|| format!("the staged batch {id}"))?,
                    ),
                    Ok(_) => {}
                    Err(why) => to.refuse(&k, &why),
                }
            }
        } else if let Some(u) = k.strip_prefix(OBJECTS) {
            match ev.event_type() {
                EventType::Put => match read_object(&k, kv.value()) {
                    Ok((u, o)) => writes.push((u, Some(o))),
                    Err(why) => {
                        to.refuse(&k, &why);
                        writes.push((u.to_string(), None));
                    }
                },
                EventType::Delete => writes.push((u.to_string(), None)),
            }
        }
    }
    if last > from {
        to.apply(Update::At {
            revision: last,
            writes: last_of_each(writes),
            head,
        });
        if let Some(h) = head {
            cluster.set_head(h);
        }
    }
    Ok(last)
}

/// The last write of each object, in the order of those last writes.
fn last_of_each(w: Writes) -> Writes {
    let mut at = std::collections::HashMap::new();
    for (i, (u, _)) in w.iter().enumerate() {
        at.insert(u.clone(), i);
    }
    w.into_iter()
        .enumerate()
        .filter(|(i, (u, _))| at.get(u) == Some(i))
        .map(|(_, w)| w)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vn(uuid: &str, name: &str) -> Object {
        Object {
            kind: Some(proto::object::Kind::VirtualNetwork(proto::VirtualNetwork {
                uuid: uuid.into(),
                fq_name: vec!["d".into(), "p".into(), name.into()],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn objects_read_from_etcd_speak_only_for_their_key() {
        let u = "6f1c2f0e-2b7a-4c4e-9a52-0c1e5b6e7d01";
        let o = vn(u, "a");
        let k = object_key(u);
        assert_eq!(read_object(&k, &encode(&o)).unwrap().1, o);
        let other = vn("6f1c2f0e-2b7a-4c4e-9a52-0c1e5b6e7d02", "a");
        assert!(
            read_object(&k, &encode(&other))
                .unwrap_err()
                .contains("not its key's")
        );
        assert!(read_object(&k, b"\xff\xff\xff").is_err());
        assert!(read_object(&k, &Object::default().encode_to_vec()).is_err());
        assert!(read_object(&format!("{OBJECTS}../../x"), &encode(&o)).is_err());
    }

    #[test]
    fn chunks_round_trip_and_groups_fit_the_limits() {
        let w: Writes = (0..1000)
            .map(|i| {
                let u = format!("6f1c2f0e-2b7a-4c4e-9a52-{i:012}");
                (u.clone(), (i % 3 != 0).then(|| vn(&u, &format!("n{i}"))))
            })
            .collect();
        assert_eq!(decode_chunk(&encode_chunk(&w)).unwrap(), w);
        let limits = Limits {
            max_txn_ops: 128,
            max_request_bytes: 20_000,
        };
        let g = groups(&w, &limits, write_size);
        assert_eq!(g.iter().map(|g| g.len()).sum::<usize>(), w.len());
        for g in &g {
            assert!(g.len() <= limits.ops());
            assert!(g.iter().map(write_size).sum::<usize>() <= limits.bytes());
        }
        assert!(
            g.len() > 1000 / 126,
            "the byte limit splits too: {}",
            g.len()
        );
        assert!(decode_chunk(b"\x0a\x02\x08\x01").is_err());
    }
}
