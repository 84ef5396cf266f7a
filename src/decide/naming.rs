//! Deterministic names.
//!
//! - Healing ids: derived from what a heal acts on and which episode of trouble it answers,
//!   so every replica, retry or restart that decides the same heal computes the same id, and
//!   creating its HealingEvent a second time conflicts instead of recording (and acting) twice.
//! - Mirrored object names: Firestore document ids such as `batch_2026-11-24_1795480001` are
//!   not valid object names; each maps to one name, the same on every replica.

/// Percent-encodes a value for a URL's path or query: unreserved characters stay, every
/// other byte is escaped, so an id or a name cannot add a path segment, a query or a host.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// FNV-1a, 64 bit: tiny, and stable across Rust releases (unlike `DefaultHasher`), which
/// matters because ids must stay equal across controller versions.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// `s` reduced to lower-case letters, digits and single hyphens, at most `max` long.
fn dns_label(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(max);
    for c in s.chars() {
        if out.len() >= max {
            break;
        }
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// `<type>-<readable subject>-<hash>`: readable in `kubectl get he`, and a valid object name
/// (< 100 chars). The hash covers the type, the subject and `identity` (what the heal acts
/// on and which episode of trouble it answers), so it is unique even where the readable part
/// is truncated or two targets share a name.
pub fn healing_id(healing_type: &str, subject: &str, identity: &[&str]) -> String {
    let mut parts = vec![healing_type, subject];
    parts.extend_from_slice(identity);
    let hash = fnv1a(&parts);
    let kind = dns_label(healing_type, 24);
    let subject = dns_label(subject, 60);
    if subject.is_empty() {
        format!("{kind}-{hash:016x}")
    } else {
        format!("{kind}-{subject}-{hash:016x}")
    }
}

/// The PredictionBatch name for a Firestore document id. Ids of lower-case letters, digits,
/// `_` and `-` (the original's forms) map readably, `_` becoming `-`; anything else is
/// sanitised and gets a hash suffix. Two ids that differ only in `_` against `-` would share a
/// name: the mirror sees the existing object's `documentPath` differ and reports it.
pub fn object_name_for_document(doc_id: &str) -> String {
    let bytes = doc_id.as_bytes();
    let readable = !bytes.is_empty()
        && bytes.len() <= 200
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if readable {
        return doc_id.replace('_', "-");
    }
    let label = dns_label(doc_id, 180);
    let hash = fnv1a(&[doc_id]);
    if label.is_empty() {
        format!("doc-{hash:016x}")
    } else {
        format!("{label}-{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_ids_map_readably() {
        for (id, name) in [
            ("batch_2026-11-24_1795480001", "batch-2026-11-24-1795480001"),
            (
                "regen_2026-11-24_line_move_1795490000",
                "regen-2026-11-24-line-move-1795490000",
            ),
            (
                "linecheck_2026-11-24_1795481234",
                "linecheck-2026-11-24-1795481234",
            ),
        ] {
            assert_eq!(object_name_for_document(id), name);
        }
    }

    #[test]
    fn other_ids_are_sanitised_with_a_hash_so_they_stay_distinct() {
        let a = object_name_for_document("Batch_2026");
        let b = object_name_for_document("batch_2026 ");
        assert!(
            a.starts_with("batch-2026-") && b.starts_with("batch-2026-"),
            "{a} {b}"
        );
        assert_ne!(a, b);
        assert_ne!(a, object_name_for_document("batch_2026"));
        for id in ["", "_", "ü", &"x".repeat(400), "-lead", "trail_"] {
            let name = object_name_for_document(id);
            assert!(name.len() <= 253 && !name.is_empty(), "{id:?} -> {name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert!(
                name.as_bytes()[0].is_ascii_alphanumeric()
                    && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric(),
                "{name}"
            );
        }
    }

    #[test]
    fn the_same_heal_gets_the_same_id() {
        let a = healing_id(
            "batch_cleanup",
            "prediction_batches/batch_2026-11-24_1795480001",
            &["1795481000"],
        );
        let b = healing_id(
            "batch_cleanup",
            "prediction_batches/batch_2026-11-24_1795480001",
            &["1795481000"],
        );
        assert_eq!(a, b);
        assert!(
            a.starts_with("batch-cleanup-prediction-batches-batch-2026-11-24-1795480001-"),
            "{a}"
        );
    }

    #[test]
    fn another_episode_or_target_gets_another_id() {
        let base = healing_id("batch_cleanup", "b1", &["100"]);
        assert_ne!(base, healing_id("batch_cleanup", "b1", &["101"]));
        assert_ne!(base, healing_id("batch_cleanup", "b2", &["100"]));
        assert_ne!(base, healing_id("phase_rerun", "b1", &["100"]));
        // Part boundaries count: ("ab","c") is not ("a","bc").
        assert_ne!(healing_id("t", "ab", &["c"]), healing_id("t", "a", &["bc"]));
    }

    #[test]
    fn ids_are_valid_object_names_whatever_the_subject() {
        let long = "x".repeat(500);
        for subject in [
            "",
            "___",
            "Üñï/cøde",
            "a..b",
            long.as_str(),
            "UPPER_case/Path",
        ] {
            let id = healing_id("batch_cleanup", subject, &["1"]);
            assert!(id.len() <= 100, "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{id}"
            );
            assert!(
                !id.starts_with('-') && !id.ends_with('-') && !id.contains("--"),
                "{id}"
            );
        }
    }
}
