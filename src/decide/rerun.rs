//! How one processor is re-run: the request or the Job its trigger describes, built from the
//! PhaseRun and checked against the operator's allowlists ([`Trust`]) before anything is
//! sent or created. Pure: the reconciler records the intent with what this returns, then
//! carries it out.

use k8s_openapi::api::batch::v1::{Job, JobTemplateSpec};
use kube::{Resource, ResourceExt};

use super::naming::percent_encode;
use super::trust::{AllowedRequest, Refusal, Trust};
use crate::api::phase::{PhaseRun, Processor};

/// Labels of a Job trigger's Job: which PhaseRun, processor and attempt it is.
pub const PHASE_LABEL: &str = "healing.pipeline.dev/phase-run";
pub const PROCESSOR_LABEL: &str = "healing.pipeline.dev/processor";
pub const ATTEMPT_LABEL: &str = "healing.pipeline.dev/attempt";

/// What re-running a processor does.
#[derive(Clone, Debug, PartialEq)]
pub enum Rerun {
    /// POST to an allowed URL (with an ID token for an allowed audience).
    Http(AllowedRequest),
    /// Create this Job.
    Job(Box<Job>),
}

/// Why a processor cannot be re-run as its spec says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RerunError {
    /// The operator's allowlists refuse it: nothing is sent, minted or created.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The spec cannot be acted on (no trigger, a template that is not a JobTemplateSpec).
    #[error("{0}")]
    Invalid(String),
}

impl Rerun {
    /// A short phrase for the HealingEvent's action.
    pub fn how(&self) -> &'static str {
        match self {
            Self::Http(_) => "POSTed to its endpoint",
            Self::Job(_) => "created a Job",
        }
    }
}

/// The re-run of `processor` for attempt `attempt`, or why there is none.
pub fn rerun(
    trust: &Trust,
    run: &PhaseRun,
    processor: &Processor,
    attempt: u32,
) -> Result<Rerun, RerunError> {
    let trigger = processor
        .trigger
        .as_ref()
        .ok_or_else(|| RerunError::Invalid("no trigger is configured".into()))?;
    let date = run.spec.date.to_string();
    match (&trigger.http, &trigger.job) {
        (Some(http), _) => {
            let url = url_for(&http.url, &date, &processor.name);
            Ok(Rerun::Http(
                trust.check_http(&url, http.audience.as_deref())?,
            ))
        }
        (None, Some(job)) => {
            let job = build_job(run, &processor.name, &job.template, attempt)?;
            if let Some(spec) = job.spec.as_ref() {
                trust.check_job(spec)?;
            }
            Ok(Rerun::Job(Box::new(job)))
        }
        (None, None) => Err(RerunError::Invalid(
            "the trigger names neither http nor job".into(),
        )),
    }
}

/// The URL with `{date}` and `{processor}` substituted (both URL-encoded).
pub fn url_for(template: &str, date: &str, processor: &str) -> String {
    template
        .replace("{date}", &percent_encode(date))
        .replace("{processor}", &percent_encode(processor))
}

/// The Job for `processor` from its template: `{date}` and `{processor}` substituted (both
/// validated values), labelled for the PhaseRun, owned by it.
pub fn build_job(
    run: &PhaseRun,
    processor: &str,
    template: &serde_json::Value,
    attempt: u32,
) -> Result<Job, RerunError> {
    let invalid = |e: serde_json::Error| RerunError::Invalid(e.to_string());
    let text = serde_json::to_string(template).map_err(invalid)?;
    let text = text
        .replace("{date}", &run.spec.date.to_string())
        .replace("{processor}", processor);
    let template: JobTemplateSpec = serde_json::from_str(&text).map_err(|e| {
        RerunError::Invalid(format!("the Job template is not a JobTemplateSpec: {e}"))
    })?;
    let mut metadata = template.metadata.unwrap_or_default();
    let base = super::naming::healing_id(
        "",
        &format!("{}-{processor}", run.name_any()),
        &[&attempt.to_string()],
    );
    metadata.name = Some(
        base.trim_start_matches('-')
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches('-')
            .to_owned(),
    );
    metadata.namespace = run.namespace();
    let labels = metadata.labels.get_or_insert_with(Default::default);
    labels.insert(PHASE_LABEL.into(), run.name_any());
    labels.insert(PROCESSOR_LABEL.into(), processor.to_owned());
    labels.insert(ATTEMPT_LABEL.into(), attempt.to_string());
    metadata.owner_references = run.controller_owner_ref(&()).map(|r| vec![r]);
    Ok(Job {
        metadata,
        spec: template.spec,
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::trust::{TRIGGER_NOT_ALLOWED, UrlPrefix};

    #[test]
    fn placeholders_are_substituted_and_encoded() {
        assert_eq!(
            url_for(
                "https://s.run.app/{processor}?game_date={date}",
                "2026-11-24",
                "nbac_schedule"
            ),
            "https://s.run.app/nbac_schedule?game_date=2026-11-24"
        );
        assert_eq!(
            url_for("http://x/{processor}", "d", "a b&c"),
            "http://x/a%20b%26c"
        );
    }

    fn run(trigger: serde_json::Value) -> PhaseRun {
        let mut run: PhaseRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PhaseRun",
            "metadata": {"name": "phase4-2026-11-24", "namespace": "pipeline", "uid": "u1"},
            "spec": {"phase": "phase4", "date": "2026-11-24", "processors": [
                {"name": "PlayerDailyCache", "table": "d.player_daily_cache",
                 "dateColumn": "game_date", "trigger": trigger}]},
        }))
        .unwrap();
        run.metadata.namespace = Some("pipeline".into());
        run
    }

    #[test]
    fn the_url_is_checked_after_substitution() {
        let trust = Trust {
            url_prefixes: vec![UrlPrefix::parse("https://good.run.app/PlayerDailyCache").unwrap()],
            ..Default::default()
        };
        let allowed = run(serde_json::json!({"http": {"url": "https://good.run.app/{processor}"}}));
        let Ok(Rerun::Http(request)) = rerun(&trust, &allowed, &allowed.spec.processors[0], 1)
        else {
            panic!("refused");
        };
        assert_eq!(
            request.url.as_str(),
            "https://good.run.app/PlayerDailyCache"
        );
        // A processor name cannot move the URL off its prefix: it is encoded.
        let escaped = run(serde_json::json!({"http": {"url": "https://good.run.app/{date}"}}));
        let refused = rerun(&trust, &escaped, &escaped.spec.processors[0], 1).unwrap_err();
        let RerunError::Refused(refusal) = refused else {
            panic!("not a refusal: {refused}");
        };
        assert_eq!(refusal.root_cause(), TRIGGER_NOT_ALLOWED);
    }

    #[test]
    fn a_job_is_labelled_owned_and_checked() {
        let trigger = serde_json::json!({"job": {"template": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "run", "image": "r", "args": ["{processor}", "{date}"]}]}}}}}});
        let phase = run(trigger);
        let Ok(Rerun::Job(job)) = rerun(&Trust::default(), &phase, &phase.spec.processors[0], 2)
        else {
            panic!("refused");
        };
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels[PROCESSOR_LABEL], "PlayerDailyCache");
        assert_eq!(labels[ATTEMPT_LABEL], "2");
        assert_eq!(job.metadata.namespace.as_deref(), Some("pipeline"));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.containers[0].args.clone().unwrap(),
            ["PlayerDailyCache", "2026-11-24"]
        );

        let privileged = serde_json::json!({"job": {"template": {"spec": {"template": {"spec": {
            "hostNetwork": true,
            "containers": [{"name": "run", "image": "r"}]}}}}}});
        let phase = run(privileged);
        let refused = rerun(&Trust::default(), &phase, &phase.spec.processors[0], 1).unwrap_err();
        assert!(refused.to_string().contains("hostNetwork"), "{refused}");
    }
}
