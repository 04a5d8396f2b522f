//! State: the telemetry sequence number, kept across agent restarts within
//! one boot of the router.
//!
//! The controller identifies a report by `(node, boot_id, seq)` and stores
//! each once. `boot_id` is the kernel's and lives as long as the boot, so an
//! agent that restarted (crash, upgrade, `kill -9`) without a reboot must not
//! start `seq` at 0 again: its new reports would be taken for duplicates of
//! the old run's and discarded until `seq` passed the old maximum.
//!
//! # Files
//!
//! The state directory (`--state-dir`, default [`DEFAULT_STATE_DIR`]: tmpfs
//! on OpenWrt, so it survives agent restarts but not reboots, exactly the
//! lifetime of a `boot_id`, and costs no flash wear) holds:
//!
//! - `seq`: one line `<boot_id> <next_seq>`, the first sequence number this
//!   boot has not used. Replaced atomically (written to `seq.tmp`, then
//!   renamed over `seq`), so it is always the old or the new line, whole.
//! - `lock`: held with an exclusive `flock` while the agent runs, so that a
//!   second agent on the same directory refuses to start instead of mixing
//!   its sequence with the first one's. The kernel releases it when the
//!   process dies, however it dies.
//!
//! # Write-ahead
//!
//! Before a report with sequence number `n` is queued, `n + 1` is written to
//! the file ([`SeqStore::reserve`]). A `kill -9` at any point therefore leaves
//! a file that is past every sequence number that may have left the agent.
//! Reserved numbers that were never sent leave a gap, which costs nothing.
//! When the file cannot be written the report is not queued: skipping a
//! report is better than sending one a later run may repeat.
//!
//! # Start
//!
//! [`plan`] decides where a run starts, from the file's text:
//! missing file: 0; the same boot: its `next_seq`; another boot: 0; a file
//! that cannot be read or understood: the current uptime in milliseconds
//! (see [`plan`] for why that cannot collide).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/tmp/meshtable-agent";

/// The sequence file's name inside the state directory.
pub const SEQ_FILE: &str = "seq";

/// The temporary file the sequence file is written to before the rename.
pub const SEQ_TMP_FILE: &str = "seq.tmp";

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// Longest sequence file accepted, in bytes: a boot id, a `u64` and a space
/// and line end, with room to spare.
const MAX_SEQ_FILE: usize = meshtable_proto::MAX_TEXT + 32;

/// Why the state directory cannot be used, or the sequence not persisted.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory cannot be created, is unsafe, or cannot be written.
    #[error("cannot use --state-dir {}: {reason}", path.display())]
    Dir {
        /// The state directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another agent holds the directory's lock.
    #[error(
        "cannot use --state-dir {}: another meshtable-agent is using it; give each agent its own --state-dir",
        path.display()
    )]
    InUse {
        /// The state directory.
        path: PathBuf,
    },
    /// The sequence file could not be replaced.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The sequence file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The next sequence number would not fit in a `u64`.
    #[error("the telemetry sequence of this boot is exhausted")]
    Exhausted,
}

/// Where a run's sequence starts, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No sequence file: the first run of this boot.
    Fresh,
    /// The file is of this boot: continue where the last run stopped.
    Continue,
    /// The file is of an earlier boot (a state directory that survives
    /// reboots): start over.
    NewBoot {
        /// The boot id in the file.
        stored_boot_id: String,
    },
    /// The file could not be read or understood: start at the uptime.
    Recover {
        /// What was wrong with the file.
        reason: String,
    },
}

/// Parses the sequence file's text: `<boot_id> <next_seq>` and an optional
/// line end. Returns what is wrong otherwise.
pub fn parse_seq_file(text: &str) -> Result<(&str, u64), String> {
    if text.len() > MAX_SEQ_FILE {
        return Err(format!("longer than {MAX_SEQ_FILE} bytes"));
    }
    let mut fields = text.split_ascii_whitespace();
    let (Some(boot_id), Some(next), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(format!("expected \"<boot_id> <next_seq>\", found {text:?}"));
    };
    let boot_ok = boot_id.len() <= meshtable_proto::MAX_TEXT
        && boot_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if !boot_ok {
        return Err(format!("not a boot id: {boot_id:?}"));
    }
    let next = next
        .parse::<u64>()
        .map_err(|_| format!("not a sequence number: {next:?}"))?;
    Ok((boot_id, next))
}

/// The sequence file's text for `boot_id` and `next_seq`.
pub fn format_seq_file(boot_id: &str, next_seq: u64) -> String {
    format!("{boot_id} {next_seq}\n")
}

/// Decides the first sequence number of a run from what reading the
/// sequence file gave: `Ok(None)` when it does not exist, `Ok(Some(text))`,
/// or `Err(reason)` when it could not be read.
///
/// # Why the uptime is a safe start when the file is unusable
///
/// Starting at 0 could repeat sequence numbers earlier runs of this boot
/// used. Every sequence number of a boot is below the boot's uptime in
/// milliseconds when it is reserved:
///
/// - the first run of a boot starts at 0, long after the kernel started;
/// - each further number is reserved at least a millisecond after the
///   previous one: within a run at most one per `--interval`, which is at
///   least 1 s, and one when a run starts, which takes a process start,
///   `/proc` reads, a netlink dump and a file rename, well over a
///   millisecond, so the count grows no faster than the uptime;
/// - a run that recovered this way started at the uptime of its start, and
///   grew no faster than the uptime since.
///
/// So the uptime now is above every number used so far in this boot, with a
/// margin of about 1000 at the shortest interval, and the uptime never goes
/// back within a boot (`/proc/uptime` counts suspend too). Its 10 ms
/// resolution would matter only if ten numbers had been reserved within
/// 10 ms. A recovered run leaves a gap in the sequence, which is harmless.
pub fn plan(file: Result<Option<&str>, &str>, boot_id: &str, uptime_ms: u64) -> (u64, Resume) {
    match file {
        Ok(None) => (0, Resume::Fresh),
        Ok(Some(text)) => match parse_seq_file(text) {
            Ok((stored, next)) if stored == boot_id => (next, Resume::Continue),
            Ok((stored, _)) => (
                0,
                Resume::NewBoot {
                    stored_boot_id: stored.to_owned(),
                },
            ),
            Err(reason) => (uptime_ms, Resume::Recover { reason }),
        },
        Err(reason) => (
            uptime_ms,
            Resume::Recover {
                reason: reason.to_owned(),
            },
        ),
    }
}

/// The persisted telemetry sequence of one boot, owned by one running agent.
#[derive(Debug)]
pub struct SeqStore {
    dir: PathBuf,
    boot_id: String,
    next: u64,
    /// Holds the directory's `flock` for as long as the store lives.
    _lock: File,
}

/// Creates `dir` (mode 0700, parents too) if needed and checks that it is
/// safe to write in: a real directory (not a symbolic link), owned by this
/// user, not writable by group or others. Otherwise another user could plant
/// links in it that the agent, often root, would write through. Returns what
/// is wrong (shared with the spool directory, see [`crate::spool`]).
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), String> {
    if dir.as_os_str().is_empty() {
        return Err("the path is empty".to_owned());
    }
    let not_dir = || "not a directory (a symbolic link is not accepted)".to_owned();
    if let Err(e) = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(match fs::symlink_metadata(dir) {
            Ok(meta) if !meta.file_type().is_dir() => not_dir(),
            _ => format!("cannot create the directory: {e}"),
        });
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.file_type().is_dir() {
        return Err(not_dir());
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(format!(
            "owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:o}); use chmod 700",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Takes the `lock` file of `dir`, without waiting. `Err(None)`: another
/// process holds it; `Err(Some(reason))`: it cannot be taken.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, Option<String>> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Some(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(None),
        Err(TryLockError::Error(e)) => Err(Some(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// Takes the state directory's lock, without waiting.
fn lock(dir: &Path) -> Result<File, StateError> {
    lock_dir(dir).map_err(|e| match e {
        None => StateError::InUse {
            path: dir.to_owned(),
        },
        Some(reason) => StateError::Dir {
            path: dir.to_owned(),
            reason,
        },
    })
}

/// Reads the sequence file: `Ok(None)` when missing, `Err(reason)` when it
/// cannot be read (or is not text).
fn read_seq_file(path: &Path) -> Result<Option<String>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    // A valid file is one short line; read no more than could make sense.
    let mut text = String::new();
    file.take(MAX_SEQ_FILE as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Some(text))
}

impl SeqStore {
    /// Opens the state directory `dir` for the boot `boot_id`, at uptime
    /// `uptime_ms`: creates and checks the directory, takes its lock, decides
    /// the first sequence number ([`plan`]) and writes it to the sequence
    /// file, which proves the directory writable. Every error names
    /// `--state-dir`.
    pub fn open(
        dir: &Path,
        boot_id: &str,
        uptime_ms: u64,
    ) -> Result<(SeqStore, Resume), StateError> {
        prepare_dir(dir).map_err(|reason| StateError::Dir {
            path: dir.to_owned(),
            reason,
        })?;
        let lock = lock(dir)?;
        let text = read_seq_file(&dir.join(SEQ_FILE));
        let file = text.as_ref().map(Option::as_deref).map_err(String::as_str);
        let (next, resume) = plan(file, boot_id, uptime_ms);
        let store = SeqStore {
            dir: dir.to_owned(),
            boot_id: boot_id.to_owned(),
            next,
            _lock: lock,
        };
        store.persist(next).map_err(|e| StateError::Dir {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        Ok((store, resume))
    }

    /// The sequence number [`SeqStore::reserve`] hands out next.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sequence file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(SEQ_FILE)
    }

    /// Reserves the next sequence number: writes the one after it to the
    /// file, and only then returns it. On error nothing is reserved (the
    /// same number is offered again) and the report must not be sent.
    pub fn reserve(&mut self) -> Result<u64, StateError> {
        let seq = self.next;
        let after = seq.checked_add(1).ok_or(StateError::Exhausted)?;
        self.persist(after)?;
        self.next = after;
        Ok(seq)
    }

    /// Replaces the sequence file with `<boot_id> <next_seq>` (temporary
    /// file, then rename: atomic within the directory).
    fn persist(&self, next_seq: u64) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self.dir.join(SEQ_TMP_FILE);
        fs::write(&tmp, format_seq_file(&self.boot_id, next_seq))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|error| StateError::Write { path, error })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const BOOT: &str = "b7867b5c-f136-40be-bc1d-5de2fcacaa19";
    const OTHER: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const UPTIME: u64 = 628_700;

    #[test]
    fn plan_as_data() {
        let same = format_seq_file(BOOT, 42);
        let other = format_seq_file(OTHER, 42);
        // (what reading the file gave, expected start, expected resume kind)
        type Case<'a> = (Result<Option<&'a str>, &'a str>, u64, &'a str);
        let cases: [Case<'_>; 13] = [
            (Ok(None), 0, "fresh"),
            (Ok(Some(&same)), 42, "continue"),
            (
                Ok(Some("b7867b5c-f136-40be-bc1d-5de2fcacaa19 7")),
                7,
                "continue",
            ),
            (Ok(Some(&other)), 0, "new boot"),
            (Ok(Some("")), UPTIME, "recover"),
            (Ok(Some("\n")), UPTIME, "recover"),
            (Ok(Some(BOOT)), UPTIME, "recover"),
            (
                Ok(Some("b7867b5c-f136-40be-bc1d-5de2fcacaa19 x")),
                UPTIME,
                "recover",
            ),
            (
                Ok(Some("b7867b5c-f136-40be-bc1d-5de2fcacaa19 -1")),
                UPTIME,
                "recover",
            ),
            (
                Ok(Some("b7867b5c-f136-40be-bc1d-5de2fcacaa19 1 2")),
                UPTIME,
                "recover",
            ),
            (Ok(Some("not/a-boot-id 3")), UPTIME, "recover"),
            (Ok(Some("b7867b5c 18446744073709551616")), UPTIME, "recover"),
            (Err("cannot read"), UPTIME, "recover"),
        ];
        for (file, want, how) in cases {
            let shown = format!("{file:?}");
            let (next, resume) = plan(file, BOOT, UPTIME);
            assert_eq!(next, want, "{shown}");
            let got = match resume {
                Resume::Fresh => "fresh",
                Resume::Continue => "continue",
                Resume::NewBoot { stored_boot_id } => {
                    assert_eq!(stored_boot_id, OTHER);
                    "new boot"
                }
                Resume::Recover { reason } => {
                    assert!(!reason.is_empty());
                    "recover"
                }
            };
            assert_eq!(got, how, "{shown}");
        }
        assert_eq!(parse_seq_file(&same), Ok((BOOT, 42)));
        let long = format!("{BOOT} {}", "0".repeat(MAX_SEQ_FILE));
        assert!(matches!(
            plan(Ok(Some(&long)), BOOT, UPTIME),
            (UPTIME, Resume::Recover { .. })
        ));
    }

    fn read(dir: &Path) -> String {
        fs::read_to_string(dir.join(SEQ_FILE)).unwrap()
    }

    #[test]
    fn missing_file_then_same_boot_then_other_boot() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");

        // Missing directory and file: created (0700), start at 0.
        let (mut s, resume) = SeqStore::open(&dir, BOOT, UPTIME).unwrap();
        assert_eq!((s.next(), resume), (0, Resume::Fresh));
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(read(&dir), format_seq_file(BOOT, 0));
        // Write-ahead: once a number is handed out, the file is past it.
        for want in 0..3 {
            assert_eq!(s.reserve().unwrap(), want);
            assert_eq!(read(&dir), format_seq_file(BOOT, want + 1));
        }
        // The lock keeps a second agent out while the first runs.
        let e = SeqStore::open(&dir, BOOT, UPTIME).unwrap_err();
        assert!(matches!(e, StateError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("--state-dir"), "{e}");
        drop(s);

        // Same boot: continue after the last reserved number.
        let (mut s, resume) = SeqStore::open(&dir, BOOT, UPTIME).unwrap();
        assert_eq!((s.next(), resume), (3, Resume::Continue));
        assert_eq!(s.reserve().unwrap(), 3);
        drop(s);

        // Another boot: start over, and the file is this boot's from now on.
        let (s, resume) = SeqStore::open(&dir, OTHER, UPTIME).unwrap();
        assert_eq!(
            (s.next(), resume),
            (
                0,
                Resume::NewBoot {
                    stored_boot_id: BOOT.to_owned()
                }
            )
        );
        assert_eq!(read(&dir), format_seq_file(OTHER, 0));
        assert!(!dir.join(SEQ_TMP_FILE).exists());
    }

    #[test]
    fn corrupt_or_unreadable_file_starts_at_the_uptime() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(SEQ_FILE), "garbage\n").unwrap();
        let (mut s, resume) = SeqStore::open(dir, BOOT, UPTIME).unwrap();
        assert_eq!(s.next(), UPTIME);
        assert!(matches!(resume, Resume::Recover { .. }), "{resume:?}");
        // Repaired on open.
        assert_eq!(read(dir), format_seq_file(BOOT, UPTIME));
        assert_eq!(s.reserve().unwrap(), UPTIME);
        drop(s);

        // Not UTF-8: unreadable as text, same recovery.
        fs::write(dir.join(SEQ_FILE), [0xff, 0xfe, b' ', b'1']).unwrap();
        let (s, resume) = SeqStore::open(dir, BOOT, UPTIME + 5).unwrap();
        assert_eq!(s.next(), UPTIME + 5);
        assert!(matches!(resume, Resume::Recover { .. }), "{resume:?}");
    }

    #[test]
    fn unusable_dirs_are_refused_naming_the_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        let open_dir = tmp.path().join("open");
        fs::create_dir(&open_dir).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let cases: [(PathBuf, &str); 6] = [
            (PathBuf::new(), "empty"),
            (file.clone(), "not a directory"),
            (file.join("sub"), "cannot create"),
            (open_dir, "writable by group or others"),
            (link, "not a directory"),
            // Not writable, even for root.
            ("/proc/meshtable-agent-test".into(), "cannot create"),
        ];
        let mut cases = Vec::from(cases);
        if nix::unistd::geteuid().is_root() {
            // Another user's directory (only root can make one here).
            let theirs = tmp.path().join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            cases.push((theirs, "owned by uid 65534"));
        }
        for (dir, want) in cases {
            let e = SeqStore::open(&dir, BOOT, UPTIME).unwrap_err().to_string();
            assert!(e.starts_with("cannot use --state-dir "), "{e}");
            assert!(e.contains(want), "{}: {e} lacks {want:?}", dir.display());
        }
    }

    #[test]
    fn a_failed_write_reserves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut s, _) = SeqStore::open(dir, BOOT, UPTIME).unwrap();
        assert_eq!(s.reserve().unwrap(), 0);
        // A directory where the temporary file goes: the write fails.
        fs::create_dir(dir.join(SEQ_TMP_FILE)).unwrap();
        let e = s.reserve().unwrap_err();
        assert!(matches!(e, StateError::Write { .. }), "{e}");
        assert_eq!(s.next(), 1, "nothing reserved");
        assert_eq!(read(dir), format_seq_file(BOOT, 1), "file unchanged");
        fs::remove_dir(dir.join(SEQ_TMP_FILE)).unwrap();
        assert_eq!(s.reserve().unwrap(), 1);
        assert_eq!(read(dir), format_seq_file(BOOT, 2));
    }
}
