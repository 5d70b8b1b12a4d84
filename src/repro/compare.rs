//! Comparing two builds of one node: which files differ, their sizes, the first differing
//! byte, and for ELF files which sections differ. Reads the two output trees; decides
//! nothing about verdicts.

use crate::archive::{EntryKind, Manifest, ManifestEntry};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Files reported per node at most (the count of all differing files is kept).
pub const MAX_FILES: usize = 50;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    /// "content", "mode", "kind", "symlink target", "only in round 1", "only in round N".
    pub change: String,
    pub size_a: Option<u64>,
    pub size_b: Option<u64>,
    /// Offset of the first differing byte (content changes of regular files).
    pub first_difference: Option<u64>,
    /// ELF sections whose bytes differ (both files ELF).
    pub elf_sections: Vec<String>,
}

/// Differences between the outputs `a` (round 1) and `b` (round `round`), with trees at
/// `tree_a` and `tree_b`. At most [`MAX_FILES`] entries.
pub fn compare(a: &Manifest, b: &Manifest, tree_a: &Path, tree_b: &Path, round: usize) -> (Vec<FileDiff>, usize) {
    let index = |m: &Manifest| -> BTreeMap<String, ManifestEntry> {
        m.entries.iter().map(|e| (e.path.clone(), e.clone())).collect()
    };
    let (ia, ib) = (index(a), index(b));
    let mut paths: Vec<&String> = ia.keys().chain(ib.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut diffs = Vec::new();
    let mut total = 0;
    for path in paths {
        let (ea, eb) = (ia.get(path), ib.get(path));
        let change = match (ea, eb) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(_), None) => "only in round 1".to_string(),
            (None, Some(_)) => format!("only in round {round}"),
            (Some(x), Some(y)) if x.kind != y.kind => "kind".into(),
            (Some(x), Some(y)) if x.target != y.target => "symlink target".into(),
            (Some(x), Some(y)) if x.sha256 != y.sha256 => "content".into(),
            (Some(_), Some(_)) => "mode".into(),
            (None, None) => unreachable!("the path came from one of the manifests"),
        };
        total += 1;
        if diffs.len() >= MAX_FILES {
            continue;
        }
        let mut diff = FileDiff {
            path: path.clone(),
            size_a: ea.filter(|e| e.kind == EntryKind::File).map(|e| e.size),
            size_b: eb.filter(|e| e.kind == EntryKind::File).map(|e| e.size),
            change,
            first_difference: None,
            elf_sections: Vec::new(),
        };
        if diff.change == "content" {
            let (pa, pb) = (tree_a.join(path), tree_b.join(path));
            if let (Ok(x), Ok(y)) = (std::fs::read(&pa), std::fs::read(&pb)) {
                diff.first_difference = first_difference(&x, &y);
                diff.elf_sections = elf_section_differences(&x, &y);
            }
        }
        diffs.push(diff);
    }
    (diffs, total)
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<u64> {
    let common = a.iter().zip(b).position(|(x, y)| x != y);
    match common {
        Some(i) => Some(i as u64),
        None if a.len() != b.len() => Some(a.len().min(b.len()) as u64),
        None => None,
    }
}

/// Names of the sections whose bytes (or presence) differ, when both are 64-bit
/// little-endian ELF files (amd64 and arm64); empty otherwise.
pub fn elf_section_differences(a: &[u8], b: &[u8]) -> Vec<String> {
    let (Some(sa), Some(sb)) = (elf_sections(a), elf_sections(b)) else {
        return Vec::new();
    };
    let mut names: Vec<&String> = sa.keys().chain(sb.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| sa.get(*n) != sb.get(*n))
        .map(|n| n.to_string())
        .collect()
}

/// Section name -> section bytes (empty for NOBITS), for ELF64 little-endian files.
fn elf_sections(data: &[u8]) -> Option<BTreeMap<String, &[u8]>> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| data.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    if shentsize < 64 || shnum == 0 || shstrndx >= shnum {
        return None;
    }
    let header = |i: usize| -> Option<(u32, u32, u64, u64)> {
        let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(base)?,
            u32_at(base + 4)?,
            u64_at(base + 0x18)?,
            u64_at(base + 0x20)?,
        ))
    };
    let (_, _, str_off, str_size) = header(shstrndx)?;
    let strtab = data.get(str_off as usize..(str_off + str_size) as usize)?;
    let mut sections = BTreeMap::new();
    for i in 1..shnum {
        let (name_off, kind, offset, size) = header(i)?;
        let name_bytes = strtab.get(name_off as usize..)?;
        let end = name_bytes.iter().position(|&c| c == 0)?;
        let name = String::from_utf8_lossy(&name_bytes[..end]).into_owned();
        const SHT_NOBITS: u32 = 8;
        let bytes = if kind == SHT_NOBITS {
            &[][..]
        } else {
            data.get(offset as usize..(offset + size) as usize).unwrap_or(&[])
        };
        sections.insert(name, bytes);
    }
    Some(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_finds_the_offset() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
    }

    #[test]
    fn elf_sections_of_a_real_binary_differ_only_where_changed() {
        let exe = std::fs::read("/bin/true").unwrap();
        assert!(elf_section_differences(&exe, &exe).is_empty());
        let sections = elf_sections(&exe).expect("/bin/true is ELF64 LE");
        assert!(sections.contains_key(".text"));
        // Flip a byte inside .text.
        let text = sections[".text"].as_ptr() as usize - exe.as_ptr() as usize;
        let mut changed = exe.clone();
        changed[text + 10] ^= 0xff;
        assert_eq!(elf_section_differences(&exe, &changed), [".text"]);
        assert!(elf_section_differences(b"not elf", b"not elf either").is_empty());
    }
}
