//! The HNSW graph (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search
//! using Hierarchical Navigable Small World graphs", 2018) over the slots of a vector arena.
//!
//! - Links are `AtomicU32` slot numbers, `[count, id, id, ...]` per node and layer, so many
//!   threads can insert at once (each list is changed under its stripe lock, read without one:
//!   a reader may see a list mid-update, which costs at most a detour, as in hnswlib) and a
//!   search reads them at the cost of plain loads.
//! - Neighbours are chosen by the paper's heuristic (algorithm 4, without extending or keeping
//!   pruned candidates): a candidate is kept when it is closer to the new node than to every
//!   neighbour already kept, which keeps links to other clusters.
//! - Levels come from a hash of the document key: a rebuild of the same keys gives the same
//!   levels, and a snapshot does not need a random generator's state.
//! - The graph holds no vectors: callers pass the arena ([`Vectors`]) to every call.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use parking_lot::{Mutex, MutexGuard};

use super::distance::{dot, prefetch};

/// Highest layer a node may get (reached with probability m^-15: never in practice).
pub(super) const MAX_LEVEL: u8 = 15;
/// Lock stripes for link updates (a node's lists are guarded by stripe `slot % LOCK_STRIPES`).
const LOCK_STRIPES: usize = 1 << 12;
/// `entry` when the graph is empty.
const NO_ENTRY: u64 = u64::MAX;

/// The unit vectors of an index, slot after slot.
#[derive(Clone, Copy)]
pub(super) struct Vectors<'a> {
    pub(super) data: &'a [f32],
    pub(super) dim: usize,
}

impl Vectors<'_> {
    /// The vector in `slot`.
    #[inline]
    pub(super) fn get(&self, slot: u32) -> &[f32] {
        let start = slot as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    /// Cosine distance between `q` and the vector in `slot`.
    #[inline]
    pub(super) fn distance(&self, q: &[f32], slot: u32) -> f32 {
        1.0 - dot(q, self.get(slot))
    }
}

/// A slot and its distance to the query, ordered by distance (then slot, for determinism).
#[derive(Clone, Copy, Debug)]
pub(super) struct Near {
    pub(super) distance: f32,
    pub(super) slot: u32,
}

impl PartialEq for Near {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance.total_cmp(&other.distance).then(self.slot.cmp(&other.slot))
    }
}

/// Which slots a search has seen: one mark per slot, cleared in O(1) by bumping the epoch.
pub(super) struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    pub(super) fn new() -> Self {
        Self { marks: Vec::new(), epoch: 0 }
    }

    fn reset(&mut self, slots: usize) {
        if self.marks.len() < slots {
            self.marks.resize(slots, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `slot`; true if it was not marked yet.
    #[inline]
    fn insert(&mut self, slot: u32) -> bool {
        let m = &mut self.marks[slot as usize];
        let fresh = *m != self.epoch;
        *m = self.epoch;
        fresh
    }
}

/// The level of a new node: `floor(-ln(u) / ln(m))` with `u` uniform in (0, 1], drawn from a
/// hash of `key` (splitmix64).
pub(super) fn level_of(key: u64, m: usize) -> u8 {
    let mut z = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 53 random bits as a float in (0, 1].
    #[allow(clippy::cast_precision_loss)]
    let u = ((z >> 11) + 1) as f64 / (1u64 << 53) as f64;
    #[allow(clippy::cast_precision_loss)]
    let level = -u.ln() / (m.max(2) as f64).ln();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let level = level.floor().min(f64::from(MAX_LEVEL)) as u8;
    level
}

/// The graph: levels and links of every slot, and the entry point.
pub(super) struct Graph {
    /// Links per node on layers above 0.
    m: usize,
    /// Links per node on layer 0 (`2 m`, as the paper recommends).
    m0: usize,
    ef_construction: usize,
    levels: Vec<u8>,
    /// Layer-0 lists: `m0 + 1` words per slot.
    links0: Vec<AtomicU32>,
    /// Lists of layers 1..=level: `level * (m + 1)` words per slot (empty for level 0).
    upper: Vec<Box<[AtomicU32]>>,
    /// `level << 32 | slot` of the entry point, or [`NO_ENTRY`].
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    stripes: Box<[Mutex<()>]>,
}

impl Graph {
    /// An empty graph.
    pub(super) fn new(m: usize, ef_construction: usize) -> Self {
        let m = m.max(2);
        Self {
            m,
            m0: 2 * m,
            ef_construction: ef_construction.max(m),
            levels: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Slots the graph has room for (linked or about to be).
    pub(super) fn len(&self) -> usize {
        self.levels.len()
    }

    /// Heap bytes of the levels and links.
    pub(super) fn memory_bytes(&self) -> usize {
        let word = std::mem::size_of::<AtomicU32>();
        self.levels.capacity()
            + self.links0.capacity() * word
            + self.upper.iter().map(|u| u.len() * word + std::mem::size_of::<Box<[AtomicU32]>>()).sum::<usize>()
    }

    /// Adds unlinked nodes for the next slots, with these levels; [`Self::insert`] links them.
    pub(super) fn grow(&mut self, levels: impl IntoIterator<Item = u8>) {
        for level in levels {
            self.levels.push(level);
            self.links0.extend((0..=self.m0).map(|_| AtomicU32::new(0)));
            self.upper.push((0..usize::from(level) * (self.m + 1)).map(|_| AtomicU32::new(0)).collect());
        }
    }

    /// The entry point and the top layer.
    fn entry(&self) -> Option<(u32, u8)> {
        let e = self.entry.load(Relaxed);
        #[allow(clippy::cast_possible_truncation)]
        (e != NO_ENTRY).then_some((e as u32, (e >> 32) as u8))
    }

    fn set_entry(&self, slot: u32, level: u8) {
        self.entry.store(u64::from(level) << 32 | u64::from(slot), Relaxed);
    }

    /// The list of `slot` on `level`: `[count, ids...]`.
    #[inline]
    fn list(&self, slot: u32, level: u8) -> &[AtomicU32] {
        let s = slot as usize;
        if level == 0 {
            &self.links0[s * (self.m0 + 1)..(s + 1) * (self.m0 + 1)]
        } else {
            let w = self.m + 1;
            let l = usize::from(level) - 1;
            &self.upper[s][l * w..(l + 1) * w]
        }
    }

    /// Appends the current neighbours of `slot` on `level` to `out`.
    #[inline]
    fn neighbours(&self, slot: u32, level: u8, out: &mut Vec<u32>) {
        let list = self.list(slot, level);
        let count = (list[0].load(Relaxed) as usize).min(list.len() - 1);
        out.extend(list[1..=count].iter().map(|x| x.load(Relaxed)));
    }

    /// Replaces the list of `slot` on `level` (the caller holds the slot's stripe lock).
    fn write_list(&self, slot: u32, level: u8, ids: &[u32]) {
        let list = self.list(slot, level);
        let n = ids.len().min(list.len() - 1);
        for (cell, id) in list[1..=n].iter().zip(ids) {
            cell.store(*id, Relaxed);
        }
        #[allow(clippy::cast_possible_truncation)]
        list[0].store(n as u32, Relaxed);
    }

    fn lock(&self, slot: u32) -> MutexGuard<'_, ()> {
        self.stripes[slot as usize % LOCK_STRIPES].lock()
    }

    /// Links `slot` (added by [`Self::grow`], its vector in `v`) into the graph. Many threads
    /// may insert different slots at once.
    pub(super) fn insert(&self, v: Vectors<'_>, slot: u32, visited: &mut Visited) {
        let level = self.levels[slot as usize];
        let q = v.get(slot);
        let (entry, top) = if let Some(e) = self.entry() {
            e
        } else {
            // The first node becomes the entry point (once, whoever gets the lock first).
            let _g = self.entry_lock.lock();
            match self.entry() {
                Some(e) => e,
                None => return self.set_entry(slot, level),
            }
        };
        let mut cur = Near { distance: v.distance(q, entry), slot: entry };
        for l in (level + 1..=top).rev() {
            cur = self.greedy(v, q, cur, l);
        }
        let mut entries = vec![cur];
        for l in (0..=level.min(top)).rev() {
            let mut found = self.search_layer(v, q, &entries, self.ef_construction, l, visited, None);
            found.retain(|n| n.slot != slot);
            let chosen = Self::select(v, &found, self.m);
            let ids: Vec<u32> = chosen.iter().map(|n| n.slot).collect();
            {
                let _g = self.lock(slot);
                self.write_list(slot, l, &ids);
            }
            for n in &chosen {
                self.add_link(v, n.slot, slot, n.distance, l);
            }
            if !found.is_empty() {
                entries = found;
            }
        }
        if level > top {
            let _g = self.entry_lock.lock();
            if self.entry().is_none_or(|(_, t)| level > t) {
                self.set_entry(slot, level);
            }
        }
    }

    /// Adds the link `from -> to` on `level`; a full list keeps the best by the heuristic.
    fn add_link(&self, v: Vectors<'_>, from: u32, to: u32, distance: f32, level: u8) {
        let cap = if level == 0 { self.m0 } else { self.m };
        let _g = self.lock(from);
        let mut ids = Vec::with_capacity(cap + 1);
        self.neighbours(from, level, &mut ids);
        if ids.contains(&to) {
            return;
        }
        if ids.len() < cap {
            ids.push(to);
            return self.write_list(from, level, &ids);
        }
        let base = v.get(from);
        let mut candidates: Vec<Near> = ids.iter().map(|&s| Near { distance: v.distance(base, s), slot: s }).collect();
        candidates.push(Near { distance, slot: to });
        candidates.sort_unstable();
        let kept: Vec<u32> = Self::select(v, &candidates, cap).iter().map(|n| n.slot).collect();
        self.write_list(from, level, &kept);
    }

    /// The paper's neighbour heuristic over `sorted` (ascending distance to the new node).
    fn select(v: Vectors<'_>, sorted: &[Near], m: usize) -> Vec<Near> {
        let mut kept: Vec<Near> = Vec::with_capacity(m);
        for &c in sorted {
            if kept.len() >= m {
                break;
            }
            let cv = v.get(c.slot);
            if kept.iter().all(|r| v.distance(cv, r.slot) >= c.distance) {
                kept.push(c);
            }
        }
        kept
    }

    /// Greedy walk on `level` from `cur` to the closest node it can reach.
    fn greedy(&self, v: Vectors<'_>, q: &[f32], mut cur: Near, level: u8) -> Near {
        let mut ids = Vec::with_capacity(self.m);
        loop {
            ids.clear();
            self.neighbours(cur.slot, level, &mut ids);
            let before = cur.slot;
            for &s in &ids {
                let d = v.distance(q, s);
                if d < cur.distance {
                    cur = Near { distance: d, slot: s };
                }
            }
            if cur.slot == before {
                return cur;
            }
        }
    }

    /// Beam search on `level` from `entries` with beam `ef`: the up to `ef` closest nodes that
    /// pass `keep` (all when `None`), ascending. Nodes that fail `keep` are still walked
    /// through, so a filter or tombstones do not cut the graph.
    #[allow(clippy::too_many_arguments)]
    fn search_layer(
        &self,
        v: Vectors<'_>,
        q: &[f32],
        entries: &[Near],
        ef: usize,
        level: u8,
        visited: &mut Visited,
        keep: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Near> {
        visited.reset(self.len());
        let mut candidates: BinaryHeap<Reverse<Near>> = BinaryHeap::new();
        // Never more results than nodes, whatever `ef` a caller passes.
        let mut results: BinaryHeap<Near> = BinaryHeap::with_capacity(ef.min(self.len()) + 1);
        for &e in entries {
            if visited.insert(e.slot) {
                candidates.push(Reverse(e));
                if keep.is_none_or(|k| k(e.slot)) {
                    results.push(e);
                }
            }
        }
        while results.len() > ef {
            results.pop();
        }
        let mut bound =
            if results.len() >= ef { results.peek().map_or(f32::INFINITY, |n| n.distance) } else { f32::INFINITY };
        let mut ids = Vec::with_capacity(self.m0);
        while let Some(Reverse(c)) = candidates.pop() {
            if c.distance > bound {
                break;
            }
            ids.clear();
            self.neighbours(c.slot, level, &mut ids);
            ids.retain(|&s| visited.insert(s));
            for (i, &s) in ids.iter().enumerate() {
                if let Some(&next) = ids.get(i + 1) {
                    prefetch(v.get(next));
                }
                let d = v.distance(q, s);
                if d < bound {
                    let n = Near { distance: d, slot: s };
                    candidates.push(Reverse(n));
                    if keep.is_none_or(|k| k(s)) {
                        results.push(n);
                        if results.len() > ef {
                            results.pop();
                        }
                        if results.len() >= ef {
                            bound = results.peek().map_or(f32::INFINITY, |n| n.distance);
                        }
                    }
                }
            }
        }
        results.into_sorted_vec()
    }

    /// The up to `ef` nodes closest to `q` that pass `keep` (all when `None`), ascending.
    pub(super) fn search(
        &self,
        v: Vectors<'_>,
        q: &[f32],
        ef: usize,
        visited: &mut Visited,
        keep: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Near> {
        let Some((entry, top)) = self.entry() else { return Vec::new() };
        let mut cur = Near { distance: v.distance(q, entry), slot: entry };
        for l in (1..=top).rev() {
            cur = self.greedy(v, q, cur, l);
        }
        self.search_layer(v, q, &[cur], ef, 0, visited, keep)
    }

    /// Appends the graph to `out` (little-endian): `m, ef_construction` (u32), entry slot (u32,
    /// `u32::MAX` when empty) and top level (u8), the levels (one byte per slot), the layer-0
    /// lists, then the upper lists of each slot with a level above 0, in slot order.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let put = |out: &mut Vec<u8>, x: u32| out.extend_from_slice(&x.to_le_bytes());
        #[allow(clippy::cast_possible_truncation)]
        {
            put(out, self.m as u32);
            put(out, self.ef_construction as u32);
        }
        let (slot, top) = self.entry().unwrap_or((u32::MAX, 0));
        put(out, slot);
        out.push(top);
        out.extend_from_slice(&self.levels);
        for w in self.links0.iter().chain(self.upper.iter().flat_map(|u| u.iter())) {
            put(out, w.load(Relaxed));
        }
    }

    /// Reads a graph of `slots` nodes written by [`Self::encode`] from `r`, checking every
    /// count, link and level (a snapshot that passes its checksum but fails here is refused too).
    pub(super) fn decode(r: &mut super::snapshot::Reader<'_>, slots: usize) -> Result<Self, String> {
        let m = r.u32()? as usize;
        let ef_construction = r.u32()? as usize;
        if !(2..=1024).contains(&m) {
            return Err(format!("links per node {m} out of range"));
        }
        let mut g = Self::new(m, ef_construction);
        let entry = r.u32()?;
        let top = r.u8()?;
        let levels = r.bytes(slots)?;
        if levels.iter().any(|&l| l > MAX_LEVEL) {
            return Err("a level above the maximum".into());
        }
        g.levels = levels.to_vec();
        let words0 = slots * (g.m0 + 1);
        g.links0 = r.u32s(words0)?.into_iter().map(AtomicU32::new).collect();
        g.upper = Vec::with_capacity(slots);
        for &level in &g.levels {
            let n = usize::from(level) * (g.m + 1);
            g.upper.push(if n == 0 { Box::default() } else { r.u32s(n)?.into_iter().map(AtomicU32::new).collect() });
        }
        // Every list within its capacity and every link to an existing slot on that layer.
        for s in 0..slots {
            #[allow(clippy::cast_possible_truncation)]
            let s = s as u32;
            for l in 0..=g.levels[s as usize] {
                let list = g.list(s, l);
                let count = list[0].load(Relaxed) as usize;
                if count > list.len() - 1 {
                    return Err(format!("slot {s} has {count} links on layer {l}"));
                }
                if list[1..=count].iter().any(|x| {
                    let t = x.load(Relaxed) as usize;
                    t >= slots || g.levels[t] < l
                }) {
                    return Err(format!("slot {s} links to a node that does not exist on layer {l}"));
                }
            }
        }
        if entry == u32::MAX {
            if slots > 0 {
                return Err("no entry point".into());
            }
        } else {
            if entry as usize >= slots || g.levels[entry as usize] != top {
                return Err("entry point out of range".into());
            }
            g.set_entry(entry, top);
        }
        Ok(g)
    }
}
