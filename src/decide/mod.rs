//! Pure decisions: functions of (observation, policy, now) with no I/O. The reconcilers
//! gather the inputs, call these, and carry out what they return.

pub mod alerts;
pub mod batch_status;
pub mod breaker;
pub mod conditions;
pub mod export;
pub mod heal;
pub mod health;
pub mod lease;
pub mod naming;
pub mod patterns;
pub mod pause;
pub mod phase;
pub mod phase_status;
pub mod plan;
pub mod rerun;
pub mod stall;
pub mod trust;
pub mod unfinished;
pub mod verify;
