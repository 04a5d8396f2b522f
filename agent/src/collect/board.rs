//! The firmware release (OpenWrt's `/etc/openwrt_release`) and the board
//! name (`/tmp/sysinfo/board_name`, else `/proc/device-tree/model`, else
//! the DMI product name), for the hello.

use std::path::{Path, PathBuf};

use meshtable_proto::Firmware;

use super::system::{clip, shell_var};

/// Where the firmware and board name come from. The defaults are the real
/// paths; tests point them elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardPaths {
    /// OpenWrt's release file.
    pub openwrt_release: PathBuf,
    /// The board name OpenWrt writes at boot (`vendor,device`).
    pub board_name: PathBuf,
    /// The device tree's model (ARM and MIPS boards).
    pub device_tree_model: PathBuf,
    /// The DMI product name of PCs and servers.
    pub dmi_product_name: PathBuf,
}

impl Default for BoardPaths {
    fn default() -> Self {
        BoardPaths {
            openwrt_release: "/etc/openwrt_release".into(),
            board_name: "/tmp/sysinfo/board_name".into(),
            device_tree_model: "/proc/device-tree/model".into(),
            dmi_product_name: "/sys/class/dmi/id/product_name".into(),
        }
    }
}

/// The firmware from the text of `/etc/openwrt_release`: `DISTRIB_ID` and
/// `DISTRIB_RELEASE` are required, `DISTRIB_REVISION` and `DISTRIB_TARGET`
/// optional.
pub fn firmware(openwrt_release: &str) -> Option<Firmware> {
    let var = |k| shell_var(openwrt_release, k).map(|v| clip(&v));
    Some(Firmware {
        distribution: var("DISTRIB_ID")?,
        release: var("DISTRIB_RELEASE")?,
        revision: var("DISTRIB_REVISION"),
        target: var("DISTRIB_TARGET"),
    })
}

/// The first non-empty of the board name sources' texts, trimmed (the
/// device tree's string ends in a NUL).
pub fn board(sources: &[Option<String>]) -> Option<String> {
    sources
        .iter()
        .flatten()
        .map(|s| s.trim_matches(|c: char| c.is_whitespace() || c == '\0'))
        .find(|s| !s.is_empty())
        .map(clip)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads the firmware; `None` off OpenWrt.
pub fn read_firmware(paths: &BoardPaths) -> Option<Firmware> {
    firmware(&read(&paths.openwrt_release)?)
}

/// Reads the board name; `None` when no source has one.
pub fn read_board(paths: &BoardPaths) -> Option<String> {
    board(&[
        read(&paths.board_name),
        read(&paths.device_tree_model),
        read(&paths.dmi_product_name),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_from_openwrt_release() {
        let f = firmware(
            "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.3'\n\
             DISTRIB_REVISION='r23809-234f1a2efa'\nDISTRIB_TARGET='ath79/generic'\n",
        )
        .unwrap();
        assert_eq!(
            f,
            Firmware {
                distribution: "OpenWrt".into(),
                release: "23.05.3".into(),
                revision: Some("r23809-234f1a2efa".into()),
                target: Some("ath79/generic".into()),
            }
        );
        assert_eq!(
            firmware("DISTRIB_ID=\"Gluon\"\nDISTRIB_RELEASE=\"v2023.2\"\n").map(|f| f.revision),
            Some(None)
        );
        assert_eq!(firmware("DISTRIB_ID='OpenWrt'\n"), None);
    }

    #[test]
    fn board_precedence() {
        let s = |t: &str| Some(t.to_owned());
        assert_eq!(
            board(&[s("tplink,cpe510-v1\n"), s("TP-Link CPE510\0"), None]),
            s("tplink,cpe510-v1")
        );
        assert_eq!(
            board(&[None, s("TP-Link CPE510\0"), s("PC")]),
            s("TP-Link CPE510")
        );
        assert_eq!(
            board(&[s(" \n"), None, s("Standard PC\n")]),
            s("Standard PC")
        );
        assert_eq!(board(&[None, None, None]), None);
    }
}
