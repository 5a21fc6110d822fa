//! The journal: the write-ahead log of batches, plain append-only files
//! beside sled's (`journal` and `journal-2` in the data directory).
//!
//! A durable batch appends one frame and `fdatasync`s the file, then
//! adds its writes to the overlay of committed writes (`pending.rs`),
//! without touching sled: the journal is what makes the batch durable, and
//! the overlay reaches sled's trees, which are flushed then, only when a
//! lap of the journal ends (see [`Journal::cut`]). Before the journal, each durable
//! batch inserted its record into a sled slot and flushed sled; that flush
//! (sled serializing and writing its buffers, `sync_file_range`, then the
//! `fdatasync`) and the slot's insert were most of a durable batch's CPU
//! time beyond its operations (see BENCHMARKS.md, "CPU per transition").
//!
//! A frame is `len` (u32 big-endian, of the body), the CRC-32 of the body
//! (u32 big-endian), then the body: the same bytes as a slot of the `wal`
//! tree ([`codec::encode_slot`]: batch sequence, events, write-ahead
//! record). Frames are written one after the other in batch order.
//!
//! There are two files, `journal` and `journal-2`, and the laps alternate
//! between them: when a lap ends, the next one starts at offset 0 of the
//! other file while the lap just ended is applied to sled's trees behind,
//! on a thread of its own (see [`Store::sync_group`](super::Store)). A
//! lap starts in a file only once the lap that file held before is in the
//! trees and sled is flushed with its checkpoint, so every frame of a file
//! that a reopen may need is of its current lap.
//!
//! A file is written in place, never truncated: `fdatasync` of a write
//! that grows a file also commits the file system's metadata (its size,
//! its new blocks), which on this machine made each durable batch wait
//! ten times longer than an overwrite. So a file grows in zeroed steps of
//! [`GROW`] bytes (one metadata commit per step), and a new lap does not
//! empty it: its frames are written from offset 0 again, over the frames
//! of the lap before, which a checkpoint already covers.
//!
//! Reading a file starts at offset 0 and stops at the first frame that is
//! short, empty (zeroes), fails its CRC, or does not have a higher batch
//! sequence than the one before it (what is left of the file's previous
//! lap). A crash can tear or lose only frames written since the last sync
//! (several frames may be written and then synced together, see
//! [`Journal::write`]; a group of them never spans two laps), and reading
//! stops at the first of them that is missing, so a reopen replays a
//! prefix of the batches, every acknowledged one included
//! (acknowledgements wait for the sync); whatever follows is of the
//! previous lap or of batches nobody was told about. A reopen reads both
//! files and replays, in sequence order, the frames after the checkpoint.
//!
//! Replay ([`Store::replay_wal`](super::Store)) treats a frame like a
//! slot: applied again if its sequence is after the checkpoint. sled
//! recovers a prefix of its log and a batch's writes reach sled only after
//! its frame is synced, so the trees are never ahead of the journal; and a
//! checkpoint in sled means every batch up to it is in the trees.
//!
//! Under `Durability::Periodic` a batch is answered once its frame is
//! written, not synced: a crash of the process keeps it (the kernel
//! holds the write), a crash of the machine may lose the frames written
//! since the last sync, which a flush thread does every interval (see
//! `Store::sync_journal`). The rule above holds there too: a batch's
//! removals stay in the overlay as tombstones until that sync, and a
//! lap's end syncs its file before its writes go to the trees.
//!
//! [`codec::encode_slot`]: super::codec::encode_slot

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::{Error, Result};

/// The journal's file names in the data directory; laps alternate
/// between them.
pub(crate) const FILES: [&str; 2] = ["journal", "journal-2"];

/// The write position past which the next sealed batch ends the lap (its
/// writes go to the trees behind, and the next frame starts the other
/// file). A job enqueued and finished within a lap never costs the trees
/// its intermediate writes (see [`pending`](super::pending)): at 32 MiB
/// that is some 25,000 jobs of 200 bytes through their whole life. It
/// also bounds the overlay's memory (about a lap's bytes, two while one
/// is applied behind) and what a reopen after a crash replays (at most two
/// laps). It was 8 MiB while the lap's end paused every batch for the
/// apply; see BENCHMARKS.md for both.
pub(crate) const CUT_AT: u64 = 32 * 1024 * 1024;

/// The file grows by zeroed steps of this many bytes.
const GROW: u64 = 1024 * 1024;

/// Bytes of a frame's header: length and CRC.
const HEADER: usize = 8;

/// The bytes a frame holding `body_len` bytes takes in the file.
pub(crate) fn frame_len(body_len: usize) -> u64 {
    (HEADER + body_len) as u64
}

/// One of the journal's files.
struct Lap {
    file: File,
    /// The file's size: zeroes or frames up to here.
    size: u64,
}

/// The journal's files.
pub(crate) struct Journal {
    files: [Lap; 2],
    /// The file of the current lap.
    current: usize,
    /// Where the next frame goes (the end of the current lap).
    at: u64,
}

fn io(e: std::io::Error) -> Error {
    Error::Storage(crate::error::StorageError::from_source(e))
}

impl Journal {
    /// Opens (creating them if need be) both files, and returns the frames
    /// each holds (a reopen replays those after the checkpoint, in
    /// sequence order). The next frame goes to offset 0 of the first file:
    /// after a reopen's replay every frame read is in the trees and behind
    /// the checkpoint.
    pub(crate) fn open(dir: &Path) -> Result<(Journal, Vec<Vec<u8>>)> {
        let mut frames = Vec::new();
        let mut created = false;
        let mut open = |name: &str| -> Result<Lap> {
            let path = dir.join(name);
            created |= !path.exists();
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io)?;
            frames.extend(read_frames(&bytes).0);
            Ok(Lap {
                file,
                size: bytes.len() as u64,
            })
        };
        let files = [open(FILES[0])?, open(FILES[1])?];
        if created {
            // A new file's name must be durable before a frame in it is
            // acknowledged.
            File::open(dir).and_then(|dir| dir.sync_all()).map_err(io)?;
        }
        let journal = Journal {
            files,
            current: 0,
            at: 0,
        };
        Ok((journal, frames))
    }

    /// Writes one frame holding `body` at the end of the lap and makes it
    /// durable (`fdatasync`).
    #[cfg(test)]
    pub(crate) fn append(&mut self, body: &[u8]) -> Result<()> {
        self.write(&[body])?;
        self.sync()
    }

    /// Writes one frame per body at the end of the lap, in order, with one
    /// write, not synced: frames written one after the other are made
    /// durable together by [`Journal::sync`]. Until then a crash may keep
    /// any of them or none; reading stops at the first one missing, so a
    /// reopen replays a prefix of them, and their batches were not
    /// acknowledged.
    pub(crate) fn write(&mut self, bodies: &[&[u8]]) -> Result<()> {
        let total: usize = bodies.iter().map(|body| HEADER + body.len()).sum();
        let mut frames = Vec::with_capacity(total);
        for body in bodies {
            let len = u32::try_from(body.len())
                .map_err(|_| Error::Internal("journal frame over 4 GiB".into()))?;
            frames.extend_from_slice(&len.to_be_bytes());
            frames.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
            frames.extend_from_slice(body);
        }
        if frames.is_empty() {
            return Ok(());
        }
        let end = self.at + frames.len() as u64;
        let lap = &mut self.files[self.current];
        if end > lap.size {
            let grown = end.div_ceil(GROW) * GROW;
            let zeroes = vec![0u8; usize::try_from(grown - lap.size).unwrap_or(usize::MAX)];
            lap.file.write_all_at(&zeroes, lap.size).map_err(io)?;
            lap.size = grown;
        }
        lap.file.write_all_at(&frames, self.at).map_err(io)?;
        self.at = end;
        Ok(())
    }

    /// Handles of both files, for a thread that syncs them without the
    /// journal's lock (`Durability::Periodic`: see `Store::sync_journal`).
    pub(crate) fn handles(&self) -> Result<[File; 2]> {
        Ok([
            self.files[0].file.try_clone().map_err(io)?,
            self.files[1].file.try_clone().map_err(io)?,
        ])
    }

    /// A handle of the current lap's file (for the checkpoint, which syncs
    /// the lap's first frame before it writes the trees).
    pub(crate) fn current_file(&self) -> Result<File> {
        self.files[self.current].file.try_clone().map_err(io)
    }

    /// Makes the frames written so far in this lap durable (`fdatasync`).
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.files[self.current].file.sync_data().map_err(io)
    }

    /// Where the next frame goes: the bytes of the current lap.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.at
    }

    /// Starts a new lap: the next frame goes at offset 0 of the other
    /// file. The caller has made every batch of the lap that file held
    /// durable in sled first (a checkpoint at or after the last one,
    /// flushed), so the frames it overwrites, and those a crash leaves
    /// after the new lap's end, are never replayed.
    pub(crate) fn cut(&mut self) {
        self.current = 1 - self.current;
        self.at = 0;
    }
}

/// The bodies of the frames of the lap at the start of `bytes` (each
/// whole, non-empty, with a good CRC and a batch sequence above the one
/// before), and where the last one ends.
pub(crate) fn read_frames(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    let mut last_seq = None;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = at
            .checked_add(HEADER + len)
            .and_then(|end| bytes.get(at + HEADER..end))
        else {
            break;
        };
        if body.is_empty() || crc32fast::hash(body) != crc {
            break;
        }
        // A slot's sequence follows its tag byte.
        let seq = body
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        if seq.is_none() || seq <= last_seq {
            break;
        }
        last_seq = seq;
        frames.push(body.to_vec());
        at += HEADER + len;
    }
    (frames, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame body as a batch writes it: tag, sequence, then anything.
    fn body(seq: u64, rest: &[u8]) -> Vec<u8> {
        let mut out = vec![b't'];
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(rest);
        out
    }

    #[test]
    fn frames_written_together_read_back_as_written_one_by_one() {
        let together = tempfile::tempdir().unwrap();
        let apart = tempfile::tempdir().unwrap();
        let bodies = [body(1, b"one"), body(2, b""), body(3, b"three")];
        let (mut journal, _) = Journal::open(together.path()).unwrap();
        let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        journal.write(&slices).unwrap();
        journal.write(&[]).unwrap();
        journal.write(&[&body(4, b"four")]).unwrap();
        journal.sync().unwrap();
        let (mut one_by_one, _) = Journal::open(apart.path()).unwrap();
        for body in bodies.iter().chain([&body(4, b"four")]) {
            one_by_one.append(body).unwrap();
        }
        assert_eq!(journal.len(), one_by_one.len());
        drop((journal, one_by_one));
        let read = |dir: &tempfile::TempDir| std::fs::read(dir.path().join(FILES[0])).unwrap();
        assert_eq!(read(&together), read(&apart));
        let (_, frames) = Journal::open(together.path()).unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[3], body(4, b"four"));
    }

    #[test]
    fn frames_of_the_lap_come_back_in_order_up_to_a_torn_or_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILES[0]);
        {
            let (mut journal, frames) = Journal::open(dir.path()).unwrap();
            assert!(frames.is_empty());
            journal.append(&body(1, b"one")).unwrap();
            journal.append(&body(2, b"")).unwrap();
            journal.append(&body(3, b"three")).unwrap();
            assert_eq!(journal.len(), 3 * (8 + 9) + 8);
        }
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(whole.len() as u64, GROW, "grown by a zeroed step");
        let (frames, end) = read_frames(&whole);
        assert_eq!(
            frames,
            vec![body(1, b"one"), body(2, b""), body(3, b"three")]
        );
        assert_eq!(end, 59);

        // Every cut inside the last frame loses that frame only.
        for cut in 43..59 {
            let (frames, end) = read_frames(&whole[..cut]);
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert_eq!(end, 37);
        }
        // A damaged byte in the last body fails its CRC.
        let mut damaged = whole.clone();
        damaged[58] ^= 1;
        assert_eq!(read_frames(&damaged).0.len(), 2);

        // Reopened, it reads the lap and starts a new one at offset 0:
        // what is left of the old lap after the new one's end is not read.
        let (mut journal, frames) = Journal::open(dir.path()).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(journal.len(), 0);
        journal.append(&body(7, b"seven")).unwrap();
        drop(journal);
        let (mut journal, frames) = Journal::open(dir.path()).unwrap();
        assert_eq!(frames, vec![body(7, b"seven")]);
        journal.append(&body(8, b"a")).unwrap();
        journal.append(&body(9, b"b")).unwrap();
        // A cut: the next lap goes to the other file, and both are read.
        journal.cut();
        assert_eq!(journal.len(), 0);
        journal.append(&body(10, b"ten")).unwrap();
        drop(journal);
        let second = std::fs::read(dir.path().join(FILES[1])).unwrap();
        assert_eq!(read_frames(&second).0, vec![body(10, b"ten")]);
        let (_, frames) = Journal::open(dir.path()).unwrap();
        assert_eq!(frames, vec![body(8, b"a"), body(9, b"b"), body(10, b"ten")]);
        // The laps alternate between the files (after a reopen, the first
        // file first), and each file reads back its latest lap only: what
        // is left of older laps behind it has lower sequences.
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(&body(11, b"x")).unwrap();
        journal.cut();
        journal.append(&body(12, b"y")).unwrap();
        journal.cut();
        journal.append(&body(13, b"z")).unwrap();
        drop(journal);
        let first = std::fs::read(dir.path().join(FILES[0])).unwrap();
        assert_eq!(read_frames(&first).0, vec![body(13, b"z")]);
        let second = std::fs::read(dir.path().join(FILES[1])).unwrap();
        assert_eq!(read_frames(&second).0, vec![body(12, b"y")]);
    }

    #[test]
    fn a_frame_past_the_zeroed_end_grows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        let big = body(1, &vec![7u8; usize::try_from(GROW).unwrap()]);
        journal.append(&big).unwrap();
        journal.append(&body(2, b"after")).unwrap();
        drop(journal);
        let len = std::fs::metadata(dir.path().join(FILES[0])).unwrap().len();
        assert_eq!(len, 2 * GROW);
        let (_, frames) = Journal::open(dir.path()).unwrap();
        assert_eq!(frames, vec![big, body(2, b"after")]);
    }
}
