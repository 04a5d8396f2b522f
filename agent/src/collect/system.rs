//! System description (hostname, kernel, OS release, model) and the root
//! filesystem's size.

use std::path::{Path, PathBuf};

use meshtable_proto::MAX_TEXT;

/// Why a system fact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// `uname(2)` failed.
    #[error("uname failed: {0}")]
    Uname(nix::Error),
    /// `statvfs(3)` failed.
    #[error("statvfs of {path} failed: {error}")]
    Statvfs {
        /// The path asked about.
        path: PathBuf,
        /// The error.
        error: nix::Error,
    },
}

/// Where the system description comes from. The defaults are the real paths;
/// tests point them elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPaths {
    /// OpenWrt's release file (`DISTRIB_DESCRIPTION`).
    pub openwrt_release: PathBuf,
    /// The freedesktop os-release file (`PRETTY_NAME`).
    pub os_release: PathBuf,
    /// The board name OpenWrt writes at boot.
    pub openwrt_model: PathBuf,
    /// The DMI product name of PCs and servers.
    pub dmi_product_name: PathBuf,
    /// The filesystem whose size is reported.
    pub rootfs: PathBuf,
}

impl Default for SystemPaths {
    fn default() -> Self {
        SystemPaths {
            openwrt_release: "/etc/openwrt_release".into(),
            os_release: "/etc/os-release".into(),
            openwrt_model: "/tmp/sysinfo/model".into(),
            dmi_product_name: "/sys/class/dmi/id/product_name".into(),
            rootfs: "/".into(),
        }
    }
}

/// Hostname and kernel release, from `uname(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uname {
    /// The node name (hostname).
    pub hostname: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
}

/// Calls `uname(2)`.
pub fn uname() -> Result<Uname, SystemError> {
    let u = nix::sys::utsname::uname().map_err(SystemError::Uname)?;
    Ok(Uname {
        hostname: clip(&u.nodename().to_string_lossy()),
        kernel: clip(&u.release().to_string_lossy()),
    })
}

/// Size and space available to unprivileged users of a filesystem, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// `f_blocks * f_frsize`.
    pub size: u64,
    /// `f_bavail * f_frsize`, never more than `size`.
    pub free: u64,
}

/// Calls `statvfs(3)` on `path`.
pub fn statvfs(path: &Path) -> Result<FsUsage, SystemError> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|error| SystemError::Statvfs {
        path: path.to_owned(),
        error,
    })?;
    // The field types differ between 32- and 64-bit libcs; widen them all.
    #[allow(clippy::useless_conversion)]
    let (blocks, avail, frsize) = (
        u64::from(s.blocks()),
        u64::from(s.blocks_available()),
        u64::from(s.fragment_size()),
    );
    let size = blocks.saturating_mul(frsize);
    Ok(FsUsage {
        size,
        free: avail.saturating_mul(frsize).min(size),
    })
}

/// Cuts a text to the wire's limit ([`MAX_TEXT`] bytes) on a character boundary.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Reads the value of `key` from a shell-style `KEY=value` file
/// (`/etc/os-release`, `/etc/openwrt_release`), with single or double quotes
/// removed. Returns `None` when the key is absent or empty.
pub fn shell_var(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once('=')?;
        if k.trim() != key {
            return None;
        }
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
            .unwrap_or(v);
        let v = v.replace("\\\"", "\"");
        (!v.trim().is_empty()).then(|| v.trim().to_owned())
    })
}

/// The OS release from the two release files' text: OpenWrt's
/// `DISTRIB_DESCRIPTION` first, then os-release's `PRETTY_NAME`, else empty.
pub fn os_release(openwrt_release: Option<&str>, os_release: Option<&str>) -> String {
    openwrt_release
        .and_then(|t| shell_var(t, "DISTRIB_DESCRIPTION"))
        .or_else(|| os_release.and_then(|t| shell_var(t, "PRETTY_NAME")))
        .map(|s| clip(&s))
        .unwrap_or_default()
}

/// The hardware model from OpenWrt's model file, else the DMI product name,
/// else empty.
pub fn model(openwrt_model: Option<&str>, dmi_product_name: Option<&str>) -> String {
    [openwrt_model, dmi_product_name]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(clip)
        .unwrap_or_default()
}

fn read_optional(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Reads the OS release from the files named in `paths`.
pub fn read_os_release(paths: &SystemPaths) -> String {
    os_release(
        read_optional(&paths.openwrt_release).as_deref(),
        read_optional(&paths.os_release).as_deref(),
    )
}

/// Reads the hardware model from the files named in `paths`.
pub fn read_model(paths: &SystemPaths) -> String {
    model(
        read_optional(&paths.openwrt_model).as_deref(),
        read_optional(&paths.dmi_product_name).as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENWRT: &str = "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.3'\n\
        DISTRIB_REVISION='r23809-234f1a2efa'\nDISTRIB_TARGET='ath79/generic'\n\
        DISTRIB_ARCH='mips_24kc'\nDISTRIB_DESCRIPTION='OpenWrt 23.05.3 r23809-234f1a2efa'\n\
        DISTRIB_TAINTS=''\n";
    const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
        VERSION_ID=\"12\"\nID=debian\n";

    #[test]
    fn os_release_precedence() {
        let cases = [
            (
                Some(OPENWRT),
                Some(DEBIAN),
                "OpenWrt 23.05.3 r23809-234f1a2efa",
            ),
            (None, Some(DEBIAN), "Debian GNU/Linux 12 (bookworm)"),
            (
                Some("DISTRIB_DESCRIPTION=''\n"),
                Some(DEBIAN),
                "Debian GNU/Linux 12 (bookworm)",
            ),
            (None, Some("PRETTY_NAME=Alpine\n"), "Alpine"),
            (None, Some("NAME=x\n"), ""),
            (None, None, ""),
        ];
        for (openwrt, os, want) in cases {
            assert_eq!(os_release(openwrt, os), want, "{openwrt:?} {os:?}");
        }
    }

    #[test]
    fn model_precedence() {
        let cases = [
            (
                Some("TP-Link CPE510 v1\n"),
                Some("Standard PC\n"),
                "TP-Link CPE510 v1",
            ),
            (
                Some("  \n"),
                Some("Standard PC (Q35)\n"),
                "Standard PC (Q35)",
            ),
            (None, Some("Standard PC\n"), "Standard PC"),
            (None, None, ""),
        ];
        for (openwrt, dmi, want) in cases {
            assert_eq!(model(openwrt, dmi), want, "{openwrt:?} {dmi:?}");
        }
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        let long = "ä".repeat(200); // 400 bytes
        let c = clip(&long);
        assert!(c.len() <= MAX_TEXT && c.len() >= MAX_TEXT - 1);
        assert!(c.chars().all(|ch| ch == 'ä'));
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn live_uname_and_statvfs() {
        let u = uname().unwrap();
        assert!(!u.hostname.is_empty() && !u.kernel.is_empty());
        let fs = statvfs(Path::new("/")).unwrap();
        assert!(fs.size > 0 && fs.free <= fs.size);
        assert!(statvfs(Path::new("/no/such/dir")).is_err());
    }
}
