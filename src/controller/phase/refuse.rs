//! A PhaseRun naming a table the controller may not query is refused before any query:
//! state `Invalid`, condition `TableRefused` naming the table, project and flag, one Failed
//! HealingEvent per spec generation (root cause `table_not_allowed`) and a Warning Event. It
//! waits for its spec to change.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::warn;

use super::status::{publish, write};
use crate::api::event::{Outcome, PHASE_RERUN};
use crate::api::phase::PhaseRun;
use crate::controller::{Context, record};
use crate::decide::phase_status::{refusal_intent, refusal_message, refused_status};
use crate::decide::trust::Refusal;
use crate::decide::verify;
use crate::error::Error;

/// None: every table is allowed (nothing was done).
pub async fn refuse_tables(
    ctx: &Context,
    run: &PhaseRun,
    now: Timestamp,
) -> Result<Option<Action>, Error> {
    let tables = run
        .spec
        .schedule
        .iter()
        .map(|s| &s.table)
        .chain(run.spec.processors.iter().map(|p| &p.table));
    let refusals: Vec<Refusal> = tables
        .filter_map(|t| ctx.config.trust.check_table(t).err())
        .collect();
    let Some(event) = refusal_intent(run, &refusals, now) else {
        return Ok(None);
    };
    let message = refusal_message(&refusals);
    let id = event.name_any();
    if record::intent(ctx, &event).await? {
        let ns = run.namespace().unwrap_or_default();
        let queried = serde_json::json!({"queried": false});
        let status = verify::finished(&event.spec, Outcome::Failed, &message, Some(queried), now);
        record::outcome(ctx, &ns, &id, PHASE_RERUN, &status).await?;
        warn!(phase_run = %run.name_any(), healing_id = %id, reason = %message, "PhaseRun refused: a table is outside the allowed projects");
        let note = format!("{message} (HealingEvent {id})");
        publish(ctx, run, EventType::Warning, "TableRefused", note).await;
    }
    let status = refused_status(run, &message, now);
    Ok(Some(
        write(ctx, run, &status, Action::await_change()).await?,
    ))
}
