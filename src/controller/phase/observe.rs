//! A PhaseRun's observation: row counts for the schedule and every processor's table, and
//! the state of this run's Jobs. A failed query is an unknown count, never a zero.

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::api::phase::PhaseRun;
use crate::controller::Context;
use crate::decide::phase::{Count, Observation};
use crate::decide::phase_status::latest_jobs;
use crate::decide::rerun::PHASE_LABEL;
use crate::error::{Error, KubeResultExt};

pub async fn observe(ctx: &Context, run: &PhaseRun) -> Result<Observation, Error> {
    let date = run.spec.date.date();
    let count = |table: String, column: String| async move {
        match &ctx.row_counter {
            Some(counter) => match counter.count(&table, &column, date).await {
                Ok(rows) => Count::Rows(rows),
                Err(e) => Count::Unknown(e.to_string()),
            },
            None => Count::Unknown(
                "no BigQuery project is configured for phases (--phase-project)".to_owned(),
            ),
        }
    };
    let schedule = match &run.spec.schedule {
        Some(s) => Some(count(s.table.to_string(), s.date_column.to_string()).await),
        None => None,
    };
    let rows = futures::future::join_all(run.spec.processors.iter().map(|p| async {
        (
            p.name.clone(),
            count(p.table.to_string(), p.date_column.to_string()).await,
        )
    }))
    .await
    .into_iter()
    .collect();
    Ok(Observation {
        schedule_rows: schedule,
        rows,
        jobs: jobs(ctx, run).await?,
    })
}

/// The run's Jobs, when any processor has a Job trigger.
async fn jobs(
    ctx: &Context,
    run: &PhaseRun,
) -> Result<std::collections::BTreeMap<String, crate::decide::phase::JobState>, Error> {
    let has_job_trigger = run
        .spec
        .processors
        .iter()
        .any(|p| p.trigger.as_ref().is_some_and(|t| t.job.is_some()));
    if !has_job_trigger {
        return Ok(Default::default());
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let jobs = api
        .list(&ListParams::default().labels(&format!("{PHASE_LABEL}={}", run.name_any())))
        .await
        .at("listing the phase's Jobs")?;
    Ok(latest_jobs(&jobs.items))
}
