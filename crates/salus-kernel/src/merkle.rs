//! Merkle tree hashing for the ledger, as RFC 6962 / RFC 9162 define it.
//!
//! Leaves are event hashes; `leaf = SHA-256(0x00 || data)`, `node = SHA-256(0x01 || l || r)`.
//! Inclusion and consistency proofs follow RFC 9162 §2.1.3 and §2.1.4, so any verifier of
//! that standard can check them without Salus.

use crate::event::Hash32;
use sha2::{Digest, Sha256};

pub fn leaf_hash(data: &[u8]) -> Hash32 {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Hash32(h.finalize().into())
}

pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash32(h.finalize().into())
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash32 {
    Hash32::sha256(&[])
}

/// Largest power of two strictly less than `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1usize;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH over already-hashed leaves.
pub fn root(leaves: &[Hash32]) -> Hash32 {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Audit path for leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1 PATH).
pub fn inclusion_proof(index: usize, leaves: &[Hash32]) -> Option<Vec<Hash32>> {
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    Some(out)
}

fn path(m: usize, d: &[Hash32], out: &mut Vec<Hash32>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// Consistency proof between the first `m` leaves and all of `leaves` (RFC 6962 §2.1.2).
pub fn consistency_proof(m: usize, leaves: &[Hash32]) -> Option<Vec<Hash32>> {
    let n = leaves.len();
    if m == 0 || m > n {
        return None;
    }
    let mut out = Vec::new();
    if m < n {
        subproof(m, leaves, true, &mut out);
    }
    Some(out)
}

fn subproof(m: usize, d: &[Hash32], b: bool, out: &mut Vec<Hash32>) {
    let n = d.len();
    if m == n {
        if !b {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], b, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Verify an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash32,
    index: u64,
    tree_size: u64,
    proof: &[Hash32],
    expected_root: &Hash32,
) -> bool {
    if index >= tree_size {
        return false;
    }
    let mut fnode = index;
    let mut snode = tree_size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *expected_root
}

/// Verify a consistency proof between tree sizes `first` and `second` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash32,
    second_root: &Hash32,
    proof: &[Hash32],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let mut path: Vec<Hash32> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_root);
    }
    let Some((first_hash, rest)) = path.split_first() else {
        return false;
    };
    let mut fnode = first - 1;
    let mut snode = second - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *first_hash;
    let mut sr = *first_hash;
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *first_root && sr == *second_root
}

/// The compact "frontier" of a growing tree: the roots of its perfect subtrees, largest
/// first. Appending is O(log n) and the root is computable at any size without the leaves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frontier {
    size: u64,
    /// (height, hash) of each perfect subtree, left to right.
    nodes: Vec<(u32, Hash32)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash32) {
        let mut node = (0u32, leaf);
        while let Some(last) = self.nodes.last() {
            if last.0 != node.0 {
                break;
            }
            let left = last.1;
            self.nodes.pop();
            node = (node.0 + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    pub fn root(&self) -> Hash32 {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, h) in iter {
            acc = node_hash(h, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn rfc6962_empty_tree_root() {
        assert_eq!(
            empty_root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn inclusion_proofs_verify_for_every_leaf_and_size() {
        for n in 1..=33 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = inclusion_proof(i, &l).unwrap();
                assert!(
                    verify_inclusion(&l[i], i as u64, n as u64, &p, &r),
                    "n={n} i={i}"
                );
                // the wrong leaf never verifies
                let other = leaf_hash(b"other");
                assert!(!verify_inclusion(&other, i as u64, n as u64, &p, &r));
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_detect_a_rewritten_prefix() {
        for n in 1..=33 {
            let l = leaves(n);
            let r2 = root(&l);
            for m in 1..=n {
                let r1 = root(&l[..m]);
                let p = consistency_proof(m, &l).unwrap();
                assert!(
                    verify_consistency(m as u64, n as u64, &r1, &r2, &p),
                    "m={m} n={n}"
                );
                let mut forged = l.clone();
                forged[0] = leaf_hash(b"forged");
                let forged_r1 = root(&forged[..m]);
                assert!(!verify_consistency(m as u64, n as u64, &forged_r1, &r2, &p));
            }
        }
    }

    #[test]
    fn frontier_root_matches_full_root_at_every_size() {
        let l = leaves(70);
        let mut f = Frontier::default();
        for (i, leaf) in l.iter().enumerate() {
            f.push(*leaf);
            assert_eq!(f.root(), root(&l[..=i]));
        }
    }
}
