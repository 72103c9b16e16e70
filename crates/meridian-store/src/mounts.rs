//! What the mount table says about the filesystem a store lives on.
//!
//! A filesystem mounted with online `discard` trims the blocks of every deleted file as the
//! deletion commits. fjall deletes tables after each compaction, and a group commit's journal
//! sync issued meanwhile waits for those trims: `bench/kv` PUT p99 at half of peak, without
//! paced write-back, was 8.4–9.9 ms without `discard` and 10.7–34.3 ms with it on the same
//! disk (docs/BENCHMARKS.md, session 11). Periodic trimming (`fstrim.timer`) frees the same
//! blocks off the commit path.

use std::path::Path;

/// The mount point holding `dir` (an absolute, canonical path) when `mountinfo` (the text of
/// `/proc/self/mountinfo`) shows it mounted with online `discard`; `None` otherwise, and for
/// lines that do not parse.
pub(crate) fn discard_mount(mountinfo: &str, dir: &Path) -> Option<String> {
    let mut holder: Option<(String, bool)> = None;
    for line in mountinfo.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let mount: Vec<&str> = mount.split(' ').collect();
        let (Some(point), Some(options)) = (mount.get(4), mount.get(5)) else {
            continue;
        };
        let point = unescape(point);
        let longer = holder
            .as_ref()
            .is_none_or(|(held, _)| point.len() >= held.len());
        if !(dir.starts_with(&point) && longer) {
            continue;
        }
        let super_options = fs.split(' ').nth(2).unwrap_or("");
        let discard = [*options, super_options]
            .iter()
            .flat_map(|o| o.split(','))
            .any(|o| o == "discard");
        holder = Some((point, discard));
    }
    holder.and_then(|(point, discard)| discard.then_some(point))
}

/// A mount point as the kernel escapes it: space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
40 27 8:1 / /srv/data rw,noatime - xfs /dev/sdb1 rw,attr2,inode64,nodiscard
41 27 8:2 / /srv/fast\\040disk rw,noatime,discard - ext4 /dev/sdc1 rw
garbage line without the separator
";

    #[test]
    fn the_longest_mount_point_holding_the_directory_decides() {
        let at = |dir: &str| discard_mount(TABLE, Path::new(dir));
        assert_eq!(at("/var/lib/meridian").as_deref(), Some("/"));
        assert_eq!(at("/srv/data/meridian"), None, "nodiscard is not discard");
        assert_eq!(at("/dev/shm/m"), None);
        assert_eq!(
            at("/srv/fast disk/m").as_deref(),
            Some("/srv/fast disk"),
            "per-mount option, escaped mount point"
        );
        assert_eq!(
            at("/srv/database").as_deref(),
            Some("/"),
            "/srv/data is not a prefix of /srv/database by component"
        );
    }

    #[test]
    fn escapes_are_undone_and_stray_backslashes_kept() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/a\\x"), "/a\\x");
        assert_eq!(unescape("/a\\04"), "/a\\04");
    }
}
