//! Disk spill of transactions (`DD_FORWARDER_STORAGE_PATH`,
//! `DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`).
//!
//! One file per transaction in `<storage>/<endpoint folder>/`, named
//! `<created_ms>-<pid>-<seq>.tx` so that name order is age order. A file is
//! written crash-safely (temp file, fsync, rename, fsync of the directory)
//! and stays on disk until its transaction is delivered or dropped, so a
//! crash at any point loses nothing that reached disk. The API key is not
//! written: the file keeps the key's index in the endpoint's key list.
//!
//! File layout (little endian):
//! `"ESTX" | version u8 (1) | header_len u32 | header JSON | body_len u64 | body | crc32 u32`
//! where the CRC covers every byte before it. A file that is truncated, has
//! a bad CRC or cannot be parsed is deleted and counted, never fatal.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"ESTX";
const VERSION: u8 = 1;
/// Largest header accepted when reading (guards against garbage lengths).
const MAX_HEADER_BYTES: u32 = 1 << 20;
/// Largest body accepted when reading.
const MAX_BODY_BYTES: u64 = 256 << 20;

/// What a spilled transaction carries besides its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpillHeader {
    /// Payload kind label.
    pub kind: String,
    /// Request path.
    pub path: String,
    /// Serializer headers.
    pub headers: Vec<(String, String)>,
    /// Index of the API key in the endpoint's key list; `None`: no key.
    pub key_index: Option<u32>,
    /// Creation time of the transaction, unix milliseconds.
    pub created_ms: u64,
}

/// Why a file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// The file is not a complete, intact spill file.
    #[error("corrupt spill file: {0}")]
    Corrupt(&'static str),
    /// The file system failed.
    #[error("spill I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one transaction into the file layout.
pub fn encode(header: &SpillHeader, body: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + 1 + 4 + h.len() + 8 + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and verifies a whole file.
pub fn decode(data: &[u8]) -> Result<(SpillHeader, Bytes), SpillError> {
    let c = SpillError::Corrupt;
    if data.len() < 4 + 1 + 4 + 8 + 4 {
        return Err(c("truncated"));
    }
    if &data[..4] != MAGIC || data[4] != VERSION {
        return Err(c("bad magic or version"));
    }
    let (content, crc) = data.split_at(data.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let hlen = u32::from_le_bytes([data[5], data[6], data[7], data[8]]);
    if hlen > MAX_HEADER_BYTES {
        return Err(c("header length out of range"));
    }
    let hend = 9 + hlen as usize;
    if content.len() < hend + 8 {
        return Err(c("truncated"));
    }
    let mut blen = [0u8; 8];
    blen.copy_from_slice(&content[hend..hend + 8]);
    let blen = u64::from_le_bytes(blen);
    if blen > MAX_BODY_BYTES || content.len() as u64 != (hend + 8) as u64 + blen {
        return Err(c("truncated"));
    }
    if crc32fast::hash(content) != crc {
        return Err(c("checksum mismatch"));
    }
    let header: SpillHeader = serde_json::from_slice(&content[9..hend]).map_err(|_| c("bad header"))?;
    Ok((header, Bytes::copy_from_slice(&content[hend + 8..])))
}

/// Disk budget shared by every endpoint.
#[derive(Debug)]
pub struct DiskBudget {
    max_bytes: u64,
    used_bytes: AtomicU64,
}

impl DiskBudget {
    /// A budget of `max_bytes`.
    pub fn new(max_bytes: u64) -> Arc<Self> {
        Arc::new(Self { max_bytes, used_bytes: AtomicU64::new(0) })
    }

    /// Bytes currently on disk.
    pub fn used(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    fn try_reserve(&self, n: u64) -> bool {
        self.used_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u.saturating_add(n) <= self.max_bytes).then_some(u + n)
            })
            .is_ok()
    }

    fn release(&self, n: u64) {
        let _ = self.used_bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(n)));
    }
}

/// A file read back: its name and its contents, or why it was unreadable.
pub type Loaded = (String, Result<(SpillHeader, Bytes), SpillError>);

/// One stored file.
#[derive(Debug, Clone, Copy)]
struct FileInfo {
    bytes: u64,
    /// Loaded into memory (being retried); not offered again.
    checked_out: bool,
}

/// Result of making room and storing.
#[derive(Debug, Default)]
pub struct StoreResult {
    /// Name of the new file, if it was stored.
    pub stored: Option<String>,
    /// Older files deleted to make room (their transactions are dropped).
    pub evicted: u64,
}

/// The spill directory of one endpoint.
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    budget: Arc<DiskBudget>,
    files: BTreeMap<String, FileInfo>,
    /// Files not checked out (kept so `has_pending` is O(1)).
    pending: usize,
    seq: u64,
}

/// Folder name for an endpoint URL: readable and file-system safe.
pub fn folder_for(base_url: &str) -> String {
    base_url.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

impl SpillDir {
    /// Opens (creating) the directory, removes temp files left by a crash
    /// and indexes the stored files.
    pub fn open(root: &Path, base_url: &str, budget: Arc<DiskBudget>) -> std::io::Result<Self> {
        let dir = root.join(folder_for(base_url));
        fs::create_dir_all(&dir)?;
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            } else if name.ends_with(".tx") {
                budget.used_bytes.fetch_add(meta.len(), Ordering::Relaxed);
                files.insert(name, FileInfo { bytes: meta.len(), checked_out: false });
            }
        }
        let pending = files.len();
        Ok(Self { dir, budget, files, pending, seq: 0 })
    }

    /// Files on disk (including those loaded in memory).
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// No file on disk.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// A stored file not yet loaded into memory exists.
    pub fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// Writes one transaction, deleting this endpoint's oldest idle files
    /// when the budget is short. Returns `stored: None` when it cannot fit.
    pub fn store(&mut self, header: &SpillHeader, body: &[u8]) -> std::io::Result<StoreResult> {
        let data = encode(header, body);
        let n = data.len() as u64;
        let mut res = StoreResult::default();
        if n > self.budget.max_bytes {
            return Ok(res);
        }
        while !self.budget.try_reserve(n) {
            let oldest = self.files.iter().find(|(_, f)| !f.checked_out).map(|(k, _)| k.clone());
            match oldest {
                Some(name) => {
                    self.remove(&name);
                    res.evicted += 1;
                }
                None => return Ok(res),
            }
        }
        self.seq += 1;
        let name = format!("{:016}-{}-{:08}.tx", header.created_ms, std::process::id(), self.seq);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, self.dir.join(&name))?;
            fs::File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            self.budget.release(n);
            return Err(e);
        }
        self.files.insert(name.clone(), FileInfo { bytes: n, checked_out: true });
        res.stored = Some(name);
        Ok(res)
    }

    /// Loads the oldest file not yet in memory. `Ok(None)`: nothing left.
    /// A corrupt file is deleted and reported as `Err((name, Corrupt))`.
    pub fn load_oldest(&mut self) -> Option<Loaded> {
        let name = self.files.iter().find(|(_, f)| !f.checked_out).map(|(k, _)| k.clone())?;
        let res = fs::read(self.dir.join(&name)).map_err(SpillError::from).and_then(|d| decode(&d));
        match &res {
            Ok(_) => {
                if let Some(f) = self.files.get_mut(&name) {
                    f.checked_out = true;
                    self.pending -= 1;
                }
            }
            Err(_) => self.remove(&name),
        }
        Some((name, res))
    }

    /// Returns a loaded file to the pending set (it is no longer in memory).
    pub fn check_in(&mut self, name: &str) {
        if let Some(f) = self.files.get_mut(name) {
            if f.checked_out {
                f.checked_out = false;
                self.pending += 1;
            }
        }
    }

    /// Deletes a file whose transaction is done.
    pub fn remove(&mut self, name: &str) {
        if let Some(f) = self.files.remove(name) {
            if !f.checked_out {
                self.pending -= 1;
            }
            let _ = fs::remove_file(self.dir.join(name));
            self.budget.release(f.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(created_ms: u64) -> SpillHeader {
        SpillHeader {
            kind: "series_v2".into(),
            path: "/api/v2/series".into(),
            headers: vec![("Content-Encoding".into(), "zstd".into())],
            key_index: Some(0),
            created_ms,
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let data = encode(&header(5), b"hello body");
        let (h, b) = decode(&data).unwrap();
        assert_eq!(h, header(5));
        assert_eq!(&b[..], b"hello body");
        for cut in 0..data.len() {
            assert!(decode(&data[..cut]).is_err(), "truncated at {cut} must fail");
        }
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x40;
            assert!(decode(&d).is_err(), "flipped byte {i} must fail");
        }
    }

    #[test]
    fn store_load_budget_oldest_first() {
        let root = tempfile::tempdir().unwrap();
        let one = encode(&header(1), &[7u8; 100]).len() as u64;
        let budget = DiskBudget::new(one * 2);
        let mut d = SpillDir::open(root.path(), "https://x:1", budget.clone()).unwrap();
        let a = d.store(&header(1), &[7u8; 100]).unwrap().stored.unwrap();
        let b = d.store(&header(2), &[7u8; 100]).unwrap().stored.unwrap();
        // Both checked out (still in memory): no room, nothing evicted.
        let r = d.store(&header(3), &[7u8; 100]).unwrap();
        assert!(r.stored.is_none());
        assert_eq!(r.evicted, 0);
        d.check_in(&a);
        d.check_in(&b);
        let r = d.store(&header(3), &[7u8; 100]).unwrap();
        assert_eq!(r.evicted, 1, "oldest idle file makes room");
        assert_eq!(budget.used(), one * 2);
        drop(d);
        // Reopen: indexed again, oldest first, temp files removed.
        std::fs::write(root.path().join(folder_for("https://x:1")).join("junk.tx.tmp"), b"x").unwrap();
        let budget = DiskBudget::new(one * 2);
        let mut d = SpillDir::open(root.path(), "https://x:1", budget.clone()).unwrap();
        assert_eq!(d.len(), 2);
        assert!(d.has_pending());
        let (name, got) = d.load_oldest().unwrap();
        assert_eq!(name, b);
        assert_eq!(got.unwrap().0.created_ms, 2);
        let (_, got) = d.load_oldest().unwrap();
        assert_eq!(got.unwrap().0.created_ms, 3);
        assert!(d.load_oldest().is_none());
        assert!(!d.has_pending());
        d.remove(&name);
        assert_eq!(d.len(), 1);
        assert_eq!(budget.used(), one);
    }

    #[test]
    fn corrupt_file_is_removed_not_fatal() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(folder_for("https://x:1"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0000000000000001-1-00000001.tx"), b"ESTX garbage").unwrap();
        let mut d = SpillDir::open(root.path(), "https://x:1", DiskBudget::new(1 << 20)).unwrap();
        let (_, r) = d.load_oldest().unwrap();
        assert!(matches!(r, Err(SpillError::Corrupt(_))));
        assert!(d.is_empty());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
}
