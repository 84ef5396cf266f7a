//! The controller's runtime: what the reconcilers (`controller/`) and the Firestore mirror
//! (`source/`) share without deciding anything. Caches and the watches that fill them, the
//! policy cache, the turns of bookkeeping writes, the batcher and work queue that gather
//! writes, and leader election. Nothing here imports `controller/`.

pub mod batcher;
pub mod bookkeeping;
pub mod cache;
pub mod decode;
pub mod finalizer;
pub mod leader;
pub mod policies;
pub mod status;
pub mod workqueue;

/// The field manager and Event reporter of everything the reconcilers write.
pub const MANAGER: &str = "pipeline-healer";
/// The field manager of the Firestore mirror's part of a batch's status (`report` and
/// `sourceError`).
pub const MIRROR_MANAGER: &str = "pipeline-healer-mirror";
/// The field manager of a heal's completion of a `source: status` batch (`state` and
/// `lastHealingEvent`), apart from the reconciler's summary so neither removes the other's.
pub const HEAL_MANAGER: &str = "pipeline-healer-heal";
/// The field manager of a HealingEvent's export state (`status.exports`).
pub const EXPORT_MANAGER: &str = "pipeline-healer-export";
/// The field manager of a HealingPolicy's status (the health loop's state).
pub const HEALTH_MANAGER: &str = "pipeline-healer-health";
