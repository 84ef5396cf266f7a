//! The controller's runtime: what the reconcilers (`controller/`) and the Firestore mirror
//! (`source/`) share without deciding anything. Caches and the watches that fill them, the
//! policy cache, the turns of bookkeeping writes, the batcher and work queue that gather
//! writes, and leader election. Nothing here imports `controller/`.

pub mod batcher;
pub mod bookkeeping;
pub mod cache;
pub mod decode;
pub mod leader;
pub mod policies;
pub mod workqueue;

/// The field manager and Event reporter of everything the reconcilers write.
pub const MANAGER: &str = "pipeline-healer";
