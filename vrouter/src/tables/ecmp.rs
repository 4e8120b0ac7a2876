//! ECMP composites: members and a power-of-two bucket array, like VPP's load-balance.
//!
//! A 5-tuple hash picks a bucket (`hash & mask`), the bucket names a member. Buckets are
//! filled in proportion to member weights. Removing a member hands only its buckets to the
//! others (the least loaded relative to weight first), so flows on the remaining members
//! keep their member; adding one takes buckets from the most loaded. Flows also keep the
//! member they were set up with, so a composite change never moves an established flow
//! whose member still exists.

use super::NhId;

/// Most members of one composite.
pub const MAX_MEMBERS: usize = 256;
/// Buckets per unit of weight, for an even spread.
const BUCKETS_PER_WEIGHT: usize = 16;
/// Most buckets.
const MAX_BUCKETS: usize = 1 << 14;

/// One member: a nexthop and the label/VNI to push with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// Member nexthop (encap or tunnel).
    pub nh: NhId,
    /// Label or VNI for a tunnel member.
    pub label: u32,
}

/// Why a composite could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcmpError {
    /// No members.
    #[error("an ECMP composite needs at least one member")]
    Empty,
    /// Too many members.
    #[error("an ECMP composite holds at most {MAX_MEMBERS} members, got {0}")]
    TooMany(usize),
    /// A zero weight.
    #[error("member {0:?} has weight 0")]
    ZeroWeight(Member),
    /// The same member twice.
    #[error("member {0:?} is listed twice")]
    Duplicate(Member),
}

/// An immutable composite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ecmp {
    members: Vec<Member>,
    weights: Vec<u32>,
    buckets: Box<[u8]>,
    mask: u32,
}

impl Ecmp {
    /// Builds a composite with buckets spread by weight.
    pub fn new(members: &[(Member, u32)]) -> Result<Ecmp, EcmpError> {
        if members.is_empty() {
            return Err(EcmpError::Empty);
        }
        if members.len() > MAX_MEMBERS {
            return Err(EcmpError::TooMany(members.len()));
        }
        for (i, (m, w)) in members.iter().enumerate() {
            if *w == 0 {
                return Err(EcmpError::ZeroWeight(*m));
            }
            if members[..i].iter().any(|(o, _)| o == m) {
                return Err(EcmpError::Duplicate(*m));
            }
        }
        let total: u64 = members.iter().map(|(_, w)| u64::from(*w)).sum();
        let n = (total as usize)
            .saturating_mul(BUCKETS_PER_WEIGHT)
            .next_power_of_two()
            .clamp(16, MAX_BUCKETS)
            .max(members.len().next_power_of_two());
        // Largest-remainder apportionment of n buckets by weight.
        let mut counts: Vec<usize> = members
            .iter()
            .map(|(_, w)| (n as u64 * u64::from(*w) / total) as usize)
            .collect();
        let mut short = n - counts.iter().sum::<usize>();
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse((n as u64 * u64::from(members[i].1)) % total));
        for &i in order.iter().cycle() {
            if short == 0 {
                break;
            }
            counts[i] += 1;
            short -= 1;
        }
        // Interleave members across buckets so consecutive hashes spread.
        let mut buckets = Vec::with_capacity(n);
        let mut left = counts.clone();
        while buckets.len() < n {
            for (i, l) in left.iter_mut().enumerate() {
                if *l > 0 {
                    buckets.push(i as u8);
                    *l -= 1;
                }
            }
        }
        Ok(Ecmp {
            members: members.iter().map(|(m, _)| *m).collect(),
            weights: members.iter().map(|(_, w)| *w).collect(),
            buckets: buckets.into_boxed_slice(),
            mask: (n - 1) as u32,
        })
    }

    /// The member for a flow hash.
    #[inline]
    pub fn select(&self, hash: u32) -> Member {
        self.members[self.select_index(hash)]
    }

    /// The index (in member order) of the member for a flow hash.
    #[inline]
    pub fn select_index(&self, hash: u32) -> usize {
        usize::from(self.buckets[(hash & self.mask) as usize])
    }

    /// Members in order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member weights, in member order.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// Whether `m` is a member.
    pub fn contains(&self, m: &Member) -> bool {
        self.members.contains(m)
    }

    /// Number of buckets.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// The member of every bucket (for dumps and tests).
    pub fn bucket_members(&self) -> impl Iterator<Item = Member> + '_ {
        self.buckets.iter().map(|&i| self.members[usize::from(i)])
    }

    fn counts(&self) -> Vec<usize> {
        let mut c = vec![0usize; self.members.len()];
        for &b in self.buckets.iter() {
            c[usize::from(b)] += 1;
        }
        c
    }

    /// The composite without `m`: only `m`'s buckets change hands. `None` if `m` is not a
    /// member or is the last one.
    pub fn without(&self, m: &Member) -> Option<Ecmp> {
        let gone = self.members.iter().position(|x| x == m)?;
        if self.members.len() == 1 {
            return None;
        }
        let mut counts = self.counts();
        counts[gone] = 0;
        let mut buckets = self.buckets.to_vec();
        for b in buckets.iter_mut() {
            if usize::from(*b) == gone {
                // Give the bucket to the member furthest below its weighted share.
                let pick = (0..self.members.len())
                    .filter(|&i| i != gone)
                    .min_by(|&a, &b| {
                        let ra = counts[a] as u64 * u64::from(self.weights[b]);
                        let rb = counts[b] as u64 * u64::from(self.weights[a]);
                        ra.cmp(&rb).then(a.cmp(&b))
                    })
                    .expect("another member exists");
                counts[pick] += 1;
                *b = pick as u8;
            }
        }
        for b in buckets.iter_mut() {
            if usize::from(*b) > gone {
                *b -= 1;
            }
        }
        let mut members = self.members.clone();
        let mut weights = self.weights.clone();
        members.remove(gone);
        weights.remove(gone);
        Some(Ecmp {
            members,
            weights,
            buckets: buckets.into_boxed_slice(),
            mask: self.mask,
        })
    }

    /// The composite with `m` added at `weight`: it takes its share of buckets from the
    /// members most above theirs; the other buckets keep their member.
    pub fn with(&self, m: Member, weight: u32) -> Result<Ecmp, EcmpError> {
        if weight == 0 {
            return Err(EcmpError::ZeroWeight(m));
        }
        if self.contains(&m) {
            return Err(EcmpError::Duplicate(m));
        }
        if self.members.len() + 1 > MAX_MEMBERS {
            return Err(EcmpError::TooMany(self.members.len() + 1));
        }
        let mut members = self.members.clone();
        let mut weights = self.weights.clone();
        members.push(m);
        weights.push(weight);
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let n = self.buckets.len();
        let new_idx = members.len() - 1;
        let want = ((n as u64 * u64::from(weight)) / total).max(1) as usize;
        let mut counts = self.counts();
        counts.push(0);
        let mut buckets = self.buckets.to_vec();
        for _ in 0..want {
            // The member most above its weighted share gives one bucket (its last one).
            let donor = (0..new_idx)
                .max_by(|&a, &b| {
                    let ra = counts[a] as u64 * u64::from(weights[b]);
                    let rb = counts[b] as u64 * u64::from(weights[a]);
                    ra.cmp(&rb).then(b.cmp(&a))
                })
                .expect("existing members");
            if counts[donor] <= 1 {
                break;
            }
            if let Some(b) = buckets.iter_mut().rev().find(|b| usize::from(**b) == donor) {
                *b = new_idx as u8;
                counts[donor] -= 1;
                counts[new_idx] += 1;
            }
        }
        Ok(Ecmp {
            members,
            weights,
            buckets: buckets.into_boxed_slice(),
            mask: self.mask,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(i: u32) -> Member {
        Member {
            nh: NhId(i),
            label: 100 + i,
        }
    }

    #[test]
    fn equal_weights_spread_evenly() {
        let e = Ecmp::new(&[(m(1), 1), (m(2), 1), (m(3), 1)]).unwrap();
        assert!(e.bucket_count().is_power_of_two());
        let mut c = std::collections::HashMap::new();
        for b in e.bucket_members() {
            *c.entry(b.nh).or_insert(0) += 1;
        }
        let (min, max) = (c.values().min().unwrap(), c.values().max().unwrap());
        assert!(max - min <= 1, "{c:?}");
    }

    #[test]
    fn weights_are_respected() {
        let e = Ecmp::new(&[(m(1), 3), (m(2), 1)]).unwrap();
        let heavy = e.bucket_members().filter(|x| x.nh == NhId(1)).count();
        assert_eq!(heavy * 4, e.bucket_count() * 3);
    }

    #[test]
    fn bad_member_lists_are_refused() {
        assert_eq!(Ecmp::new(&[]).unwrap_err(), EcmpError::Empty);
        assert_eq!(
            Ecmp::new(&[(m(1), 0)]).unwrap_err(),
            EcmpError::ZeroWeight(m(1))
        );
        assert_eq!(
            Ecmp::new(&[(m(1), 1), (m(1), 2)]).unwrap_err(),
            EcmpError::Duplicate(m(1))
        );
        let e = Ecmp::new(&[(m(1), 1)]).unwrap();
        assert!(e.without(&m(1)).is_none(), "the last member stays");
        assert!(e.without(&m(9)).is_none());
    }

    proptest! {
        #[test]
        fn removal_moves_only_the_removed_members_buckets(n in 2u32..17, gone in 0u32..16) {
            let gone = gone % n;
            let members: Vec<_> = (0..n).map(|i| (m(i), 1)).collect();
            let e = Ecmp::new(&members).unwrap();
            let e2 = e.without(&m(gone)).unwrap();
            prop_assert_eq!(e.bucket_count(), e2.bucket_count());
            for (a, b) in e.bucket_members().zip(e2.bucket_members()) {
                if a != m(gone) {
                    prop_assert_eq!(a, b, "a bucket of a remaining member moved");
                } else {
                    prop_assert!(b != m(gone));
                }
            }
            // The remaining members stay balanced within one bucket.
            let mut c = std::collections::HashMap::new();
            for b in e2.bucket_members() { *c.entry(b).or_insert(0usize) += 1; }
            let (min, max) = (*c.values().min().unwrap(), *c.values().max().unwrap());
            prop_assert!(max - min <= 1, "{:?}", c);
        }

        #[test]
        fn adding_a_member_only_takes_buckets(n in 1u32..16) {
            let members: Vec<_> = (0..n).map(|i| (m(i), 1)).collect();
            let e = Ecmp::new(&members).unwrap();
            let e2 = e.with(m(99), 1).unwrap();
            let mut taken = 0;
            for (a, b) in e.bucket_members().zip(e2.bucket_members()) {
                if a != b {
                    prop_assert_eq!(b, m(99));
                    taken += 1;
                }
            }
            let fair = e.bucket_count() / (n as usize + 1);
            prop_assert!(taken + 1 >= fair && taken <= fair + 1, "took {} of fair {}", taken, fair);
        }
    }
}
