//! The ledger: per-tenant Merkle log over the event log, signed tree heads, and the
//! checks that prove nothing was altered, removed or reordered.
//!
//! Leaf `i` of a tenant's tree is `leaf_hash(hash of the event with seq i+1)`. The sealer
//! extends each tenant's tree with the events committed since its last head and signs a
//! new head with the deployment's Ed25519 key. [`verify`] walks every event of every tenant
//! and checks hashes, stream chains, the seq order, stream heads and every tree head;
//! [`prove`] gives an RFC 9162 inclusion proof that [`check_inclusion`] verifies without a
//! database.

use crate::Store;
use crate::model::{StoreError, TreeHead};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use salus_kernel::merkle::{self, Frontier};
use salus_kernel::{EventEnvelope, Hash32, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use uuid::Uuid;

const PAGE: i64 = 5_000;

/// The deployment's tree-head signing key.
pub struct LedgerKey {
    signing: SigningKey,
}

impl LedgerKey {
    /// From 64 hex digits (the 32-byte Ed25519 seed).
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim()).map_err(|_| "ledger key is not hex".to_owned())?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "ledger key must be 32 bytes (64 hex digits)".to_owned())?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// Read the key at `path`, creating it (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(&text)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_private(path, &hex::encode(seed))?;
                Ok(Self {
                    signing: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) => Err(e),
        }
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    pub fn sign_head(
        &self,
        tenant: TenantId,
        size: i64,
        root: Hash32,
        at: DateTime<Utc>,
    ) -> TreeHead {
        let msg = TreeHead::signing_input(tenant, size, &root, &at);
        let sig = self.signing.sign(msg.as_bytes());
        TreeHead {
            tenant_id: tenant,
            tree_size: size,
            root,
            signed_at: at,
            key_id: self.public_hex(),
            signature: hex::encode(sig.to_bytes()),
        }
    }
}

/// Write a secret file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Whether `head` carries a valid signature by `public_key_hex`.
pub fn head_signature_is_valid(head: &TreeHead, public_key_hex: &str) -> bool {
    let Ok(pk) = hex::decode(public_key_hex) else {
        return false;
    };
    let Ok(pk): Result<[u8; 32], _> = pk.try_into() else {
        return false;
    };
    let Ok(vk) = VerifyingKey::from_bytes(&pk) else {
        return false;
    };
    let Ok(sig) = hex::decode(&head.signature) else {
        return false;
    };
    let Ok(sig): Result<[u8; 64], _> = sig.try_into() else {
        return false;
    };
    let msg = TreeHead::signing_input(head.tenant_id, head.tree_size, &head.root, &head.signed_at);
    vk.verify(msg.as_bytes(), &Signature::from_bytes(&sig))
        .is_ok()
}

/// Extends each tenant's Merkle tree and signs new tree heads.
pub struct Sealer {
    key: LedgerKey,
    trees: HashMap<TenantId, Frontier>,
}

impl Sealer {
    pub fn new(key: LedgerKey) -> Self {
        Self {
            key,
            trees: HashMap::new(),
        }
    }

    pub fn public_hex(&self) -> String {
        self.key.public_hex()
    }

    /// Seal every tenant; returns the heads written.
    pub async fn seal_all(&mut self, store: &dyn Store) -> Result<Vec<TreeHead>, StoreError> {
        let mut out = Vec::new();
        for t in store.tenants().await? {
            if let Some(h) = self.seal(store, t.id).await? {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Seal one tenant: append its new events to the tree and sign a head, if any are new.
    pub async fn seal(
        &mut self,
        store: &dyn Store,
        tenant: TenantId,
    ) -> Result<Option<TreeHead>, StoreError> {
        let tree = self.trees.entry(tenant).or_default();
        let start = tree.size() as i64;
        let mut after = start;
        loop {
            let page = store.event_hashes_after(tenant, after, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for (seq, hash) in &page {
                if *seq != after + 1 {
                    return Err(StoreError::Corrupt(format!(
                        "ledger gap for tenant {tenant}: expected seq {} but found {seq}",
                        after + 1,
                    )));
                }
                tree.push(merkle::leaf_hash(&hash.0));
                after = *seq;
            }
        }
        if after == start {
            return Ok(None);
        }
        let at = salus_kernel::clock::truncate_micros(Utc::now());
        let head = self.key.sign_head(tenant, after, tree.root(), at);
        store.put_tree_head(&head).await?;
        Ok(Some(head))
    }
}

/// One thing `verify` found wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub tenant: TenantId,
    pub seq: Option<i64>,
    /// The id of the bad record: an event's id, or an access entry's.
    pub event_id: Option<Uuid>,
    /// What the id names: `event` or `access entry`.
    pub record: &'static str,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tenant {}", self.tenant)?;
        if let Some(s) = self.seq {
            write!(f, ", seq {s}")?;
        }
        if let Some(e) = self.event_id {
            write!(f, ", {} {e}", self.record)?;
        }
        write!(f, ": {}", self.what)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub tenants: usize,
    pub events: u64,
    pub streams: u64,
    pub tree_heads: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check every event, stream chain, seq and tree head of every tenant. `trusted_key` is the
/// public key tree heads must be signed by (hex); `progress` is told each event checked.
pub async fn verify(
    store: &dyn Store,
    trusted_key: &str,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    for tenant in store.tenants().await? {
        report.tenants += 1;
        verify_tenant(store, tenant.id, trusted_key, &mut report, &mut progress).await?;
    }
    Ok(report)
}

async fn verify_tenant(
    store: &dyn Store,
    tenant: TenantId,
    trusted_key: &str,
    report: &mut VerifyReport,
    progress: &mut impl FnMut(u64),
) -> Result<(), StoreError> {
    let problem = |seq: Option<i64>, event_id: Option<Uuid>, what: String| Problem {
        tenant,
        seq,
        event_id,
        record: "event",
        what,
    };
    let heads = store.tree_heads(tenant).await?;
    report.tree_heads += heads.len();
    let mut next_head = heads.iter().peekable();
    let mut chains: HashMap<Uuid, (i64, Hash32, String)> = HashMap::new();
    let mut tree = Frontier::default();
    let mut after = 0i64;
    loop {
        let page = store.events_after(tenant, after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            report.events += 1;
            progress(report.events);
            check_event(e, after, &mut chains, report, tenant);
            after = e.seq;
            tree.push(merkle::leaf_hash(&e.hash.0));
            while let Some(h) = next_head.peek() {
                if h.tree_size as u64 != tree.size() {
                    break;
                }
                if h.root != tree.root() {
                    report.problems.push(problem(
                        Some(e.seq),
                        Some(e.event_id),
                        format!(
                            "tree head of size {} does not match the log: an event up to seq {} was altered, removed or reordered",
                            h.tree_size, h.tree_size
                        ),
                    ));
                }
                if !head_signature_is_valid(h, trusted_key) {
                    report.problems.push(problem(
                        None,
                        None,
                        format!(
                            "tree head of size {} has no valid signature by the trusted key",
                            h.tree_size
                        ),
                    ));
                }
                next_head.next();
            }
        }
    }
    for h in next_head {
        report.problems.push(problem(
            None,
            None,
            format!(
                "tree head of size {} covers events that are missing (the log has {})",
                h.tree_size,
                tree.size()
            ),
        ));
    }
    let ledger = store.ledger_head(tenant).await?;
    if ledger != after {
        report.problems.push(problem(
            Some(ledger),
            None,
            format!("ledger head says {ledger} events but the log ends at seq {after}: events were removed"),
        ));
    }
    let stored_heads = store.stream_heads(tenant).await?;
    report.streams += stored_heads.len() as u64;
    for sh in &stored_heads {
        match chains.get(&sh.stream_id) {
            Some((v, h, _)) if *v == sh.version && *h == sh.hash => {}
            Some((v, _, _)) => report.problems.push(problem(
                None,
                None,
                format!(
                    "stream {} {} is at version {} but its events end at version {v}",
                    sh.stream_type, sh.stream_id, sh.version
                ),
            )),
            None => report.problems.push(problem(
                None,
                None,
                format!("stream {} {} has no events", sh.stream_type, sh.stream_id),
            )),
        }
    }
    if stored_heads.len() != chains.len() {
        report.problems.push(problem(
            None,
            None,
            format!(
                "{} streams have events but {} stream heads are stored",
                chains.len(),
                stored_heads.len()
            ),
        ));
    }
    Ok(())
}

fn check_event(
    e: &EventEnvelope,
    prev_seq: i64,
    chains: &mut HashMap<Uuid, (i64, Hash32, String)>,
    report: &mut VerifyReport,
    tenant: TenantId,
) {
    let mut bad = |what: String| {
        report.problems.push(Problem {
            tenant,
            seq: Some(e.seq),
            event_id: Some(e.event_id),
            record: "event",
            what,
        })
    };
    if e.seq != prev_seq + 1 {
        bad(format!(
            "seq jumps from {prev_seq} to {}: events were removed or renumbered",
            e.seq
        ));
    }
    if !e.hash_is_valid() {
        bad("content does not match its hash: the event was altered".into());
    }
    let (want_version, want_prev) = match chains.get(&e.stream_id) {
        Some((v, h, _)) => (v + 1, *h),
        None => (1, Hash32::ZERO),
    };
    if e.version != want_version {
        bad(format!(
            "stream {} jumps to version {} where {want_version} was due",
            e.stream_id, e.version
        ));
    }
    if e.prev_hash != want_prev {
        bad(format!(
            "prev_hash does not link to version {} of stream {}",
            want_version - 1,
            e.stream_id
        ));
    }
    chains.insert(e.stream_id, (e.version, e.hash, e.stream_type.clone()));
}

/// Everything needed to check, offline, that one event is in a signed tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InclusionProof {
    pub event: EventEnvelope,
    pub leaf_index: u64,
    pub tree_head: TreeHead,
    pub path: Vec<Hash32>,
}

/// Everything needed to check, offline, that a later tree extends an earlier one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub first: TreeHead,
    pub second: TreeHead,
    pub path: Vec<Hash32>,
}

async fn leaves(store: &dyn Store, tenant: TenantId, size: i64) -> Result<Vec<Hash32>, StoreError> {
    let mut out = Vec::with_capacity(size as usize);
    let mut after = 0;
    while after < size {
        let page = store
            .event_hashes_after(tenant, after, PAGE.min(size - after))
            .await?;
        if page.is_empty() {
            break;
        }
        for (seq, hash) in &page {
            out.push(merkle::leaf_hash(&hash.0));
            after = *seq;
        }
    }
    Ok(out)
}

/// An inclusion proof for `event_id` against the newest tree head that covers it.
pub async fn prove(store: &dyn Store, event_id: Uuid) -> Result<InclusionProof, StoreError> {
    let event = store
        .event_by_id(event_id)
        .await?
        .ok_or_else(|| StoreError::InvalidWrite(format!("no event {event_id}")))?;
    let heads = store.tree_heads(event.tenant_id).await?;
    let head = heads
        .into_iter()
        .rev()
        .find(|h| h.tree_size >= event.seq)
        .ok_or_else(|| {
            StoreError::InvalidWrite(format!(
                "event {event_id} is not sealed yet; run the server (it seals every few seconds) and try again"
            ))
        })?;
    let l = leaves(store, event.tenant_id, head.tree_size).await?;
    let index = (event.seq - 1) as usize;
    let path = merkle::inclusion_proof(index, &l)
        .ok_or_else(|| StoreError::Corrupt("the log is shorter than its tree head".into()))?;
    Ok(InclusionProof {
        event,
        leaf_index: index as u64,
        tree_head: head,
        path,
    })
}

/// A consistency proof between the tenant's tree heads of sizes `first` and `second`.
pub async fn prove_consistency(
    store: &dyn Store,
    tenant: TenantId,
    first: i64,
    second: i64,
) -> Result<ConsistencyProof, StoreError> {
    let heads = store.tree_heads(tenant).await?;
    let find = |n: i64| {
        heads
            .iter()
            .find(|h| h.tree_size == n)
            .cloned()
            .ok_or_else(|| StoreError::InvalidWrite(format!("no tree head of size {n}")))
    };
    let (a, b) = (find(first)?, find(second)?);
    let l = leaves(store, tenant, b.tree_size).await?;
    let path = merkle::consistency_proof(a.tree_size as usize, &l).ok_or_else(|| {
        StoreError::InvalidWrite("first tree must not be larger than the second".into())
    })?;
    Ok(ConsistencyProof {
        first: a,
        second: b,
        path,
    })
}

/// Check an inclusion proof with no database: the event's own hash, its place in the tree,
/// and the tree head's signature by `trusted_key`.
pub fn check_inclusion(p: &InclusionProof, trusted_key: &str) -> Result<(), String> {
    if !p.event.hash_is_valid() {
        return Err("the event's content does not match its hash".into());
    }
    if p.event.tenant_id != p.tree_head.tenant_id {
        return Err("the event and the tree head belong to different tenants".into());
    }
    if p.leaf_index + 1 != p.event.seq as u64 {
        return Err("the leaf index does not match the event's ledger seq".into());
    }
    let leaf = merkle::leaf_hash(&p.event.hash.0);
    if !merkle::verify_inclusion(
        &leaf,
        p.leaf_index,
        p.tree_head.tree_size as u64,
        &p.path,
        &p.tree_head.root,
    ) {
        return Err("the audit path does not lead to the tree head's root".into());
    }
    if !head_signature_is_valid(&p.tree_head, trusted_key) {
        return Err("the tree head is not signed by the trusted key".into());
    }
    Ok(())
}

/// Check a consistency proof with no database.
pub fn check_consistency(p: &ConsistencyProof, trusted_key: &str) -> Result<(), String> {
    for h in [&p.first, &p.second] {
        if !head_signature_is_valid(h, trusted_key) {
            return Err(format!(
                "tree head of size {} is not signed by the trusted key",
                h.tree_size
            ));
        }
    }
    if !merkle::verify_consistency(
        p.first.tree_size as u64,
        p.second.tree_size as u64,
        &p.first.root,
        &p.second.root,
        &p.path,
    ) {
        return Err("the second tree does not extend the first".into());
    }
    Ok(())
}
