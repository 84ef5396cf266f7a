//! Deterministic healing ids. A healing action's id is derived from what it heals and which
//! episode of trouble it answers, so every replica, retry or restart that decides the same
//! heal computes the same id, and creating its HealingEvent a second time conflicts instead of
//! recording (and acting) twice.

/// FNV-1a, 64 bit: tiny, and stable across Rust releases (unlike `DefaultHasher`), which
/// matters because ids must stay equal across controller versions.
fn fnv1a(parts: &[&str]) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
