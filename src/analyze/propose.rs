//! `analyze --propose`: what would make healing needed less, from the records alone, with no
//! I/O.
//!
//! A policy proposal is replayed before it is made: every heal's recorded decision
//! (`details.decision`, see [`RecordedDecision`]) goes through the controller's own stall
//! decision with the changed policy, so "8 of 13 heals avoided" is what this controller would
//! have done, not an estimate. Findings name what no policy fixes (a processor re-run day
//! after day, heals that keep failing) and where upstream to look. A proposal without
//! evidence is not made.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::pyrepr::state_as_json;
use super::record::{BatchRecord, Record};
use super::report::root_cause_key;
use crate::api::event::{BATCH_CLEANUP, PHASE_RERUN};
use crate::api::schema::{PositiveDuration, is_dns_label, is_snake_case};
use crate::decide::stall::{RecordedDecision, StallPolicy, Verdict};

/// Heals a skip reason must be outstanding in, and failures a root cause must have, before a
/// proposal rests on them (`--min-occurrences`).
pub const DEFAULT_MIN_OCCURRENCES: u32 = 3;
/// A processor re-run on this many of the last [`RECENT_DATES`] dates has a cause upstream.
const RECURRING_RERUN_DATES: usize = 3;
const RECENT_DATES: i64 = 7;
/// The most healing ids a proposal lists as its evidence.
const EVIDENCE_SHOWN: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    PermanentSkipReason,
    StallAfter,
    Finding,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposal {
    pub kind: Kind,
    /// The namespace whose policy (or pipeline) it is about; None: rows without one (the
    /// original's).
    pub namespace: Option<String>,
    /// The skip reason to add (`permanent_skip_reason`); null otherwise.
    pub reason: Option<String>,
    /// What to do and what it would have changed, in one line.
    pub summary: String,
    /// Every heal of the type the proposal is about in the window (and namespace).
    pub heals_considered: usize,
    /// Of those, the heals whose recorded decision could be replayed (rows from before
    /// decisions were recorded cannot be).
    pub heals_replayed: usize,
    /// Heals the change would not have needed.
    pub heals_avoided: usize,
    /// Healing ids the proposal rests on (at most 50).
    pub evidence: Vec<String>,
    /// The HealingPolicy manifest to commit; null for a finding.
    pub patch: Option<String>,
    /// `stall_after`: the proposed value, and the heals it makes later and by how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heals_delayed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_delay_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay_s: Option<f64>,
    /// `stall_after`: the batches that paused past stallAfter and finished by themselves.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<String>,
    /// `finding`: the dates it happened on, and what to fix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Date>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The change the patch makes, for `--propose-patch` to combine.
    #[serde(skip)]
    change: Option<PolicyChange>,
}

/// A change to one namespace's HealingPolicy, from the policy its latest heal recorded.
#[derive(Clone, Debug, PartialEq)]
struct PolicyChange {
    namespace: Option<String>,
    /// `default` for the built-in defaults (a policy of that name replaces them).
    name: String,
    base: StallPolicy,
    edit: Edit,
}

#[derive(Clone, Debug, PartialEq)]
enum Edit {
    AddSkipReason(String),
    StallAfter(SignedDuration),
}

impl PolicyChange {
    fn new(namespace: Option<&str>, recorded: &RecordedDecision, edit: Edit) -> Self {
        Self {
            namespace: namespace.map(str::to_owned),
            name: recorded
                .policy_name
                .clone()
                .unwrap_or_else(|| "default".into()),
            base: recorded.policy.clone(),
            edit,
        }
    }

    fn apply(&self, policy: &mut StallPolicy) {
        match &self.edit {
            Edit::AddSkipReason(reason) => {
                policy.permanent_skip_reasons.insert(reason.clone());
            }
            Edit::StallAfter(d) => policy.stall_after = *d,
        }
    }

    fn describe(&self) -> String {
        match &self.edit {
            Edit::AddSkipReason(reason) => format!("add {reason} to permanentSkipReasons"),
            Edit::StallAfter(d) => format!("stallAfter {}", duration_text(*d)),
        }
    }
}

/// Every proposal's policy change in one manifest per policy (several YAML documents when
/// several namespaces have one); None when no proposal changes a policy.
pub fn combined_patch(proposals: &[Proposal], file: Option<&PolicyFile>) -> Option<String> {
    let mut by_policy: BTreeMap<(Option<&str>, &str), Vec<&PolicyChange>> = BTreeMap::new();
    for change in proposals.iter().filter_map(|p| p.change.as_ref()) {
        by_policy
            .entry((change.namespace.as_deref(), change.name.as_str()))
            .or_default()
            .push(change);
    }
    let documents: Vec<String> = by_policy
        .into_values()
        .filter_map(|changes| manifest(&changes, file))
        .collect();
    (!documents.is_empty()).then(|| documents.join("---\n"))
}

impl Proposal {
    /// The change this proposal's patch makes; none for a namespace that is not a name (a
    /// row written outside the controller), which no manifest could be for.
    fn set_change(&mut self, change: PolicyChange) {
        if change
            .namespace
            .as_deref()
            .is_some_and(|ns| !is_dns_label(ns))
        {
            return;
        }
        self.change = Some(change);
    }

    fn new(kind: Kind, namespace: Option<&str>, summary: String) -> Self {
        Self {
            kind,
            namespace: namespace.map(str::to_owned),
            reason: None,
            summary,
            heals_considered: 0,
            heals_replayed: 0,
            heals_avoided: 0,
            evidence: Vec::new(),
            patch: None,
            stall_after: None,
            heals_delayed: None,
            mean_delay_s: None,
            max_delay_s: None,
            batches: Vec::new(),
            days: Vec::new(),
            upstream: None,
            change: None,
        }
    }
}

/// A heal record as the proposals read it.
struct Heal<'a> {
    record: &'a Record,
    batch_id: Option<String>,
    decision: Option<RecordedDecision>,
}

impl<'a> Heal<'a> {
    fn of(record: &'a Record) -> Self {
        let before = record.before_state.as_deref().map(state_as_json);
        let details = record.metadata.as_deref().map(state_as_json);
        Self {
            record,
            batch_id: before
                .as_ref()
                .and_then(|b| b.get("batch_id")?.as_str().map(str::to_owned)),
            // A record that was tampered with, or written before decisions were recorded,
            // simply cannot be replayed.
            decision: details
                .and_then(|d| serde_json::from_value(d.get("decision")?.clone()).ok())
                .filter(RecordedDecision::plausible),
        }
    }

    /// An action taken, not a dry run or a skip.
    fn is_action(&self) -> bool {
        !self.record.dry_run && !self.record.circuit_skipped()
    }
}

/// The proposals over `records` (already selected: in the window, each once, in time order)
/// and the batches finished in the window (None: no outcomes to read); patches change `file`
/// where it is the policy concerned.
pub fn propose(
    records: &[&Record],
    batches: Option<&[BatchRecord]>,
    min_occurrences: usize,
    file: Option<&PolicyFile>,
) -> Vec<Proposal> {
    let min_occurrences = min_occurrences.max(1);
    let mut by_namespace: BTreeMap<Option<&str>, Vec<Heal>> = BTreeMap::new();
    for r in records {
        by_namespace
            .entry(r.namespace.as_deref())
            .or_default()
            .push(Heal::of(r));
    }
    let mut proposals = Vec::new();
    for (namespace, heals) in &by_namespace {
        let finished: Vec<&BatchRecord> = batches
            .unwrap_or_default()
            .iter()
            .filter(|b| b.namespace.as_deref() == *namespace)
            .collect();
        let stalls: Vec<&Heal> = heals
            .iter()
            .filter(|h| h.record.healing_type == BATCH_CLEANUP)
            .collect();
        proposals.extend(skip_reasons(
            *namespace,
            &stalls,
            &finished,
            min_occurrences,
        ));
        proposals.extend(stall_after(*namespace, &stalls, &finished));
        proposals.extend(recurring_reruns(*namespace, heals));
        proposals.extend(failing_root_causes(*namespace, heals, min_occurrences));
    }
    proposals.sort_by(|a, b| {
        let key = |p: &Proposal| {
            (
                p.kind,
                std::cmp::Reverse(p.heals_avoided),
                p.namespace.clone(),
                p.reason.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    for p in &mut proposals {
        p.patch = p.change.as_ref().and_then(|c| manifest(&[c], file));
    }
    proposals
}

/// The policy the latest replayable heal was decided under: what a patch changes.
fn latest_policy<'h>(stalls: &[&'h Heal]) -> Option<&'h RecordedDecision> {
    stalls.iter().rev().find_map(|h| h.decision.as_ref())
}

/// Skip reasons outstanding in at least `min_occurrences` heals whose players never
/// completed afterwards: added to `permanentSkipReasons`, replayed over every heal.
fn skip_reasons(
    namespace: Option<&str>,
    stalls: &[&Heal],
    finished: &[&BatchRecord],
    min_occurrences: usize,
) -> Vec<Proposal> {
    let actions: Vec<&Heal> = stalls.iter().copied().filter(|h| h.is_action()).collect();
    let Some(latest) = latest_policy(&actions) else {
        return Vec::new();
    };
    let mut outstanding_in: BTreeMap<&str, Vec<&Heal>> = BTreeMap::new();
    for h in &actions {
        if let Some(d) = &h.decision {
            // Only a reason a HealingPolicy can hold is a proposal (the workers' reports may
            // hold anything).
            for (reason, _) in d.observation.outstanding_skips(&d.policy) {
                if is_snake_case(reason) {
                    outstanding_in.entry(reason).or_default().push(h);
                }
            }
        }
    }
    let later = Later::index(stalls, finished);
    let replayed = actions.iter().filter(|h| h.decision.is_some()).count();
    let mut out = Vec::new();
    for (reason, occurrences) in outstanding_in {
        // Added since (the latest heal's policy has it): done already.
        if latest.policy.permanent_skip_reasons.contains(reason) {
            continue;
        }
        if occurrences.len() < min_occurrences
            || occurrences
                .iter()
                .any(|h| later.completed_afterwards(h, reason))
        {
            continue;
        }
        let avoided: Vec<&Heal> = actions
            .iter()
            .copied()
            .filter(|h| {
                h.decision.as_ref().is_some_and(|d| {
                    let mut changed = d.policy.clone();
                    changed.permanent_skip_reasons.insert(reason.to_owned());
                    !matches!(d.replay(&changed), Verdict::Stalled(_))
                })
            })
            .collect();
        if avoided.is_empty() {
            continue;
        }
        let considered = actions.len();
        let mut p = Proposal::new(
            Kind::PermanentSkipReason,
            namespace,
            format!(
                "Add {reason} to permanentSkipReasons{}: {} of {considered} heals avoided, \
                 {:.0} % ({reason} was outstanding in {} heals and its players never \
                 completed afterwards)",
                in_namespace(namespace),
                avoided.len(),
                avoided.len() as f64 * 100.0 / considered as f64,
                occurrences.len(),
            ),
        );
        p.reason = Some(reason.to_owned());
        p.heals_considered = considered;
        p.heals_replayed = replayed;
        p.heals_avoided = avoided.len();
        p.evidence = evidence(&avoided);
        p.set_change(PolicyChange::new(
            namespace,
            latest,
            Edit::AddSkipReason(reason.to_owned()),
        ));
        out.push(p);
    }
    out
}

/// A namespace's records of each batch, to look for what happened after a heal.
struct Later<'h> {
    stalls: HashMap<&'h str, Vec<&'h Heal<'h>>>,
    finished: HashMap<&'h str, Vec<&'h BatchRecord>>,
}

impl<'h> Later<'h> {
    fn index(stalls: &[&'h Heal<'h>], finished: &[&'h BatchRecord]) -> Self {
        let mut by_batch: HashMap<&str, Vec<&Heal>> = HashMap::new();
        for h in stalls {
            if let Some(id) = &h.batch_id {
                by_batch.entry(id).or_default().push(h);
            }
        }
        let mut finished_by_batch: HashMap<&str, Vec<&BatchRecord>> = HashMap::new();
        for b in finished {
            finished_by_batch.entry(&b.batch_id).or_default().push(b);
        }
        Self {
            stalls: by_batch,
            finished: finished_by_batch,
        }
    }

    /// Whether a later record shows players of `reason` in `heal`'s batch completing after
    /// all: a later observation of the batch with fewer of them skipped and more completed,
    /// or the batch finishing with every player done by its workers.
    fn completed_afterwards(&self, heal: &Heal, reason: &str) -> bool {
        let (Some(batch_id), Some(decision)) = (&heal.batch_id, &heal.decision) else {
            return false;
        };
        let skipped_then = decision.observation.skipped.get(reason).copied();
        let later_observation = self.stalls.get(batch_id.as_str()).is_some_and(|of_batch| {
            of_batch.iter().any(|later| {
                later.record.timestamp > heal.record.timestamp
                    && later.decision.as_ref().is_some_and(|d| {
                        d.observation.skipped.get(reason).copied() < skipped_then
                            && d.observation.completed > decision.observation.completed
                    })
            })
        });
        let finished_by_workers = self
            .finished
            .get(batch_id.as_str())
            .is_some_and(|of_batch| {
                of_batch.iter().any(|b| {
                    b.finished_time > heal.record.timestamp && b.completed_by_its_workers()
                })
            });
        later_observation || finished_by_workers
    }
}

/// With batches recorded as having paused at least as long as `stallAfter` and finished by
/// themselves: the `stallAfter` that would have healed none of them, replayed over every heal
/// for the delay it adds.
fn stall_after(
    namespace: Option<&str>,
    stalls: &[&Heal],
    finished: &[&BatchRecord],
) -> Option<Proposal> {
    let actions: Vec<&Heal> = stalls.iter().copied().filter(|h| h.is_action()).collect();
    let latest = latest_policy(&actions).or_else(|| latest_policy(stalls))?;
    let current = latest.policy.stall_after;
    // A pause longer than a batch's maximum age cannot have happened: a tampered row.
    let recovered: Vec<(&BatchRecord, f64)> = finished
        .iter()
        .filter(|b| b.pauses > 0)
        .filter_map(|b| Some((*b, b.longest_pause_seconds?)))
        .filter(|(_, s)| *s >= current.as_secs_f64() && *s <= latest.policy.max_age.as_secs_f64())
        .collect();
    let longest = recovered.iter().map(|(_, s)| *s).reduce(f64::max)?;
    let proposed = round_up(SignedDuration::try_from_secs_f64(longest).ok()?);
    let changed = |p: &StallPolicy| StallPolicy {
        stall_after: proposed,
        ..p.clone()
    };
    let mut delays: Vec<(&Heal, f64)> = Vec::new();
    for h in &actions {
        let Some(d) = &h.decision else { continue };
        if let Verdict::Progressing {
            stall_at: Some(at), ..
        } = d.replay(&changed(&d.policy))
        {
            delays.push((h, at.duration_since(d.at).as_secs_f64()));
        }
    }
    let delayed: Vec<&Heal> = delays.iter().map(|(h, _)| *h).collect();
    let mean_delay = (!delays.is_empty())
        .then(|| delays.iter().map(|(_, s)| s).sum::<f64>() / delays.len() as f64);
    let max_delay = delays.iter().map(|(_, s)| *s).reduce(f64::max);
    let proposed_text = duration_text(proposed);
    let mut p = Proposal::new(
        Kind::StallAfter,
        namespace,
        format!(
            "Raise stallAfter from {} to {proposed_text}{}: {} batch(es) paused up to {} and \
             then finished by themselves, which {proposed_text} would not have healed; it \
             delays {} of {} heals{}",
            duration_text(current),
            in_namespace(namespace),
            recovered.len(),
            super::render::duration(Some(longest)),
            delayed.len(),
            actions.len(),
            mean_delay.map_or(String::new(), |m| format!(
                " by {} on average (at most {})",
                super::render::duration(Some(m)),
                super::render::duration(max_delay)
            )),
        ),
    );
    p.heals_considered = actions.len();
    p.heals_replayed = actions.iter().filter(|h| h.decision.is_some()).count();
    // The pauses it would not have healed (each was past the current stallAfter).
    p.heals_avoided = recovered.len();
    p.evidence = evidence(&delayed);
    p.batches = recovered.iter().map(|(b, _)| b.batch_id.clone()).collect();
    p.stall_after = Some(proposed_text.clone());
    p.heals_delayed = Some(delayed.len());
    p.mean_delay_s = mean_delay;
    p.max_delay_s = max_delay;
    p.set_change(PolicyChange::new(
        namespace,
        latest,
        Edit::StallAfter(proposed),
    ));
    Some(p)
}

/// Strictly above `d`: the next whole minute, or the next 5 s under a minute.
fn round_up(d: SignedDuration) -> SignedDuration {
    let step = if d < SignedDuration::from_mins(1) {
        5
    } else {
        60
    };
    SignedDuration::from_secs((d.as_secs() / step + 1) * step)
}

/// One processor's re-runs: their dates, and the heals.
type Reruns<'a> = (BTreeSet<Date>, Vec<&'a Heal<'a>>);

/// Processors re-run for missing rows on at least 3 of the last 7 dates: the cause is
/// upstream, and re-running hides it.
fn recurring_reruns(namespace: Option<&str>, heals: &[Heal]) -> Vec<Proposal> {
    let reruns: Vec<(&Heal, String, String, Date)> = heals
        .iter()
        .filter(|h| h.is_action() && h.record.healing_type == PHASE_RERUN)
        .filter(|h| root_cause_key(h.record).starts_with("missing_rows:"))
        .filter_map(|h| {
            let before = state_as_json(h.record.before_state.as_deref()?);
            let text = |key: &str| before.get(key)?.as_str().map(str::to_owned);
            Some((
                h,
                text("processor")?,
                text("table")?,
                text("date")?.parse().ok()?,
            ))
        })
        .collect();
    let Some(latest) = reruns.iter().map(|(_, _, _, date)| *date).max() else {
        return Vec::new();
    };
    let first = latest
        .checked_sub(jiff::Span::new().days(RECENT_DATES - 1))
        .unwrap_or(latest);
    let considered = heals
        .iter()
        .filter(|h| h.is_action() && h.record.healing_type == PHASE_RERUN)
        .count();
    let mut by_processor: BTreeMap<(&str, &str), Reruns> = BTreeMap::new();
    for (h, processor, table, date) in &reruns {
        if *date >= first {
            let entry = by_processor.entry((processor, table)).or_default();
            entry.0.insert(*date);
            entry.1.push(h);
        }
    }
    by_processor
        .into_iter()
        .filter(|(_, (dates, _))| dates.len() >= RECURRING_RERUN_DATES)
        .map(|((processor, table), (dates, reruns))| {
            let listed: Vec<String> = dates.iter().map(ToString::to_string).collect();
            let mut p = Proposal::new(
                Kind::Finding,
                namespace,
                format!(
                    "{processor} was re-run on {} of the last {RECENT_DATES} dates ({}){}: \
                     {table} keeps missing rows; fix {processor} or what feeds it, a re-run \
                     only fills the gap afterwards",
                    dates.len(),
                    listed.join(", "),
                    in_namespace(namespace),
                ),
            );
            p.heals_considered = considered;
            p.evidence = evidence(&reruns);
            p.days = dates.into_iter().collect();
            p.upstream = Some(format!("{processor} ({table})"));
            p
        })
        .collect()
}

/// Root causes whose heals fail at least `min_occurrences` times and more often than not:
/// healing does not fix them.
fn failing_root_causes(
    namespace: Option<&str>,
    heals: &[Heal],
    min_occurrences: usize,
) -> Vec<Proposal> {
    let mut by_cause: BTreeMap<(&str, String), Vec<&Heal>> = BTreeMap::new();
    for h in heals.iter().filter(|h| h.is_action()) {
        by_cause
            .entry((&h.record.healing_type, root_cause_key(h.record)))
            .or_default()
            .push(h);
    }
    by_cause
        .into_iter()
        .filter_map(|((healing_type, cause), of_cause)| {
            let failed: Vec<&Heal> = of_cause
                .iter()
                .copied()
                .filter(|h| !h.record.success)
                .collect();
            // More failures than successes: a stall whose first attempt failed and whose
            // retry healed it is healing that works.
            if failed.len() < min_occurrences || failed.len() * 2 <= of_cause.len() {
                return None;
            }
            let days: BTreeSet<Date> = failed
                .iter()
                .map(|h| utc_date(h.record.timestamp))
                .collect();
            let mut p = Proposal::new(
                Kind::Finding,
                namespace,
                format!(
                    "{healing_type} heals of {cause} keep failing{}: {} of {} failed, on {} \
                     day(s); healing does not fix it, so fix {cause} at its source",
                    in_namespace(namespace),
                    failed.len(),
                    of_cause.len(),
                    days.len(),
                ),
            );
            p.heals_considered = heals
                .iter()
                .filter(|h| h.is_action() && h.record.healing_type == healing_type)
                .count();
            p.evidence = evidence(&failed);
            p.days = days.into_iter().collect();
            p.upstream = Some(cause);
            Some(p)
        })
        .collect()
}

fn utc_date(t: Timestamp) -> Date {
    t.to_zoned(jiff::tz::TimeZone::UTC).date()
}

fn in_namespace(namespace: Option<&str>) -> String {
    namespace.map_or(String::new(), |ns| format!(" in namespace {ns}"))
}

fn evidence(heals: &[&Heal]) -> Vec<String> {
    heals
        .iter()
        .take(EVIDENCE_SHOWN)
        .map(|h| h.record.healing_id.clone())
        .collect()
}

/// A duration as a HealingPolicy writes it (`15m`, `1m30s`).
fn duration_text(d: SignedDuration) -> String {
    PositiveDuration::from_span(d)
        .map_or_else(|| format!("{}s", d.as_secs()), |p| p.as_str().to_owned())
}

/// The person's own HealingPolicy manifest (`--policy FILE`, from their GitOps repository): a
/// patch to its policy is this file with the change made and every other field as written,
/// and its name and namespace, not the records', say which policy it is.
#[derive(Clone, Debug)]
pub struct PolicyFile {
    document: serde_yaml::Value,
    name: String,
    namespace: Option<String>,
}

impl PolicyFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        let document: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        if document.get("kind").and_then(|k| k.as_str()) != Some("HealingPolicy") {
            return Err("its kind is not HealingPolicy".into());
        }
        // Every spec field has a default, so a file may leave the spec out.
        let mut typed = document.clone();
        if let Some(root) = typed.as_mapping_mut()
            && root.get("spec").is_none_or(serde_yaml::Value::is_null)
        {
            root.insert(
                "spec".into(),
                serde_yaml::Value::Mapping(Default::default()),
            );
        }
        let policy: crate::api::HealingPolicy =
            serde_yaml::from_value(typed).map_err(|e| format!("not a HealingPolicy: {e}"))?;
        let name = policy
            .metadata
            .name
            .ok_or_else(|| "metadata.name is missing".to_owned())?;
        Ok(Self {
            document,
            name,
            namespace: policy.metadata.namespace,
        })
    }

    /// Whether `change` is to this file's policy: the same namespace, or, for a file without
    /// one (kustomize sets it), the same name.
    fn holds(&self, change: &PolicyChange) -> bool {
        match &self.namespace {
            Some(ns) => change.namespace.as_deref() == Some(ns.as_str()),
            None => change.name == self.name,
        }
    }

    /// The file with `changes` made.
    fn changed(&self, changes: &[&PolicyChange]) -> Option<serde_yaml::Value> {
        use serde_yaml::Value;
        let mut document = self.document.clone();
        let root = document.as_mapping_mut()?;
        let spec = root
            .entry(Value::from("spec"))
            .or_insert_with(|| Value::Mapping(Default::default()));
        if spec.is_null() {
            *spec = Value::Mapping(Default::default());
        }
        let spec = spec.as_mapping_mut()?;
        for change in changes {
            match &change.edit {
                Edit::AddSkipReason(reason) => {
                    // Absent, the list is the defaults; written, it replaces them.
                    let mut reasons: Vec<String> = match spec.get("permanentSkipReasons") {
                        Some(list) => serde_yaml::from_value(list.clone()).ok()?,
                        None => crate::api::policy::ORIGINAL_PERMANENT_SKIP_REASONS
                            .map(str::to_owned)
                            .to_vec(),
                    };
                    if !reasons.contains(reason) {
                        reasons.push(reason.clone());
                    }
                    let reasons = serde_yaml::to_value(reasons).ok()?;
                    spec.insert("permanentSkipReasons".into(), reasons);
                }
                Edit::StallAfter(d) => {
                    spec.insert("stallAfter".into(), duration_text(*d).into());
                }
            }
        }
        Some(document)
    }
}

/// The HealingPolicy manifest with `changes` (all to one policy) made: to `file` when it is
/// that policy, else to the thresholds the latest heal recorded.
fn manifest(changes: &[&PolicyChange], file: Option<&PolicyFile>) -> Option<String> {
    let first = changes.first()?;
    let described: Vec<String> = changes.iter().map(|c| c.describe()).collect();
    if let Some(file) = file.filter(|f| f.holds(first)) {
        let yaml = serde_yaml::to_string(&file.changed(changes)?).ok()?;
        return Some(format!(
            "# Proposed by `pipeline-healer analyze --propose`: {}.\n{yaml}",
            described.join("; ")
        ));
    }
    let mut policy = first.base.clone();
    for change in changes {
        change.apply(&mut policy);
    }
    let mut spec = serde_json::Map::new();
    spec.insert(
        "stallAfter".into(),
        duration_text(policy.stall_after).into(),
    );
    // Written only when the policy set it: absent, it follows stallAfter.
    if policy.watch_after != first.base.stall_after / 2 {
        spec.insert(
            "watchAfter".into(),
            duration_text(policy.watch_after).into(),
        );
    }
    spec.insert(
        "minCompletionPercent".into(),
        policy.min_completion_percent.into(),
    );
    spec.insert("maxAge".into(), duration_text(policy.max_age).into());
    spec.insert(
        "permanentSkipReasons".into(),
        policy
            .permanent_skip_reasons
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .into(),
    );
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), first.name.clone().into());
    if let Some(ns) = &first.namespace {
        metadata.insert("namespace".into(), ns.clone().into());
    }
    let manifest = serde_json::json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1",
        "kind": "HealingPolicy",
        "metadata": metadata,
        "spec": spec,
    });
    let yaml = serde_yaml::to_string(&manifest).ok()?;
    Some(format!(
        "# Proposed by `pipeline-healer analyze --propose`: {}.\n\
         # The stall thresholds are the ones the heals recorded and no other field is set:\n\
         # give your policy's file with --policy to have it changed instead.\n{yaml}",
        described.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::HealingPolicySpec;
    use crate::api::policy::ORIGINAL_PERMANENT_SKIP_REASONS;
    use crate::decide::stall::BatchObservation;

    const INJURY: &str = "player_injury_out";

    fn at(minute: i64) -> Timestamp {
        "2026-11-24T12:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minute)
    }

    /// The defaults without the injury reason: the original's example.
    fn policy() -> StallPolicy {
        let mut p = StallPolicy::from(&HealingPolicySpec::default());
        p.permanent_skip_reasons.remove(INJURY);
        p
    }

    /// A succeeded heal of batch `batch` at `minute`, 100 players expected and `completed`
    /// done, last progress 20 minutes before.
    fn heal(batch: &str, minute: i64, completed: u64, skipped: &[(&str, u64)]) -> Record {
        let observation = BatchObservation {
            expected: Some(100),
            completed,
            skipped: skipped.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
            last_progress: Some(at(minute - 20)),
            created_at: Some(at(minute - 60)),
            ..Default::default()
        };
        let decision = RecordedDecision {
            policy_name: Some("nba".into()),
            policy: policy(),
            observation,
            at: at(minute),
        };
        assert!(
            matches!(decision.verdict(), Verdict::Stalled(_)),
            "{decision:?}"
        );
        Record {
            namespace: Some("nba".into()),
            before_state: Some(serde_json::json!({"batch_id": batch}).to_string()),
            metadata: Some(serde_json::json!({"decision": decision}).to_string()),
            outcome: Some("Succeeded".into()),
            ..Record::sample(
                &format!("batch-cleanup-{batch}-{minute}"),
                at(minute),
                "no_progress",
            )
        }
    }

    fn run(records: &[Record], batches: Option<&[BatchRecord]>) -> Vec<Proposal> {
        let refs: Vec<&Record> = records.iter().collect();
        propose(&refs, batches, DEFAULT_MIN_OCCURRENCES as usize, None)
    }

    /// 13 stalls: 8 outstanding only on injured players (95 done, 5 injured), 5 also on
    /// another reason (90 done, 5 injured, 5 retried for rate limits).
    fn injury_example() -> Vec<Record> {
        (0..13)
            .map(|i| {
                let b = format!("b{i}");
                if i < 8 {
                    heal(&b, i * 30, 95, &[(INJURY, 5)])
                } else {
                    heal(&b, i * 30, 90, &[(INJURY, 5), ("rate_limited", 5)])
                }
            })
            .collect()
    }

    #[test]
    fn the_originals_injury_example_is_eight_of_thirteen() {
        let proposals = run(&injury_example(), None);
        let skips: Vec<&Proposal> = proposals
            .iter()
            .filter(|p| p.kind == Kind::PermanentSkipReason)
            .collect();
        assert_eq!(skips.len(), 1, "{proposals:#?}");
        let p = skips[0];
        assert_eq!(p.reason.as_deref(), Some(INJURY));
        assert_eq!((p.heals_considered, p.heals_avoided), (13, 8));
        assert!(
            p.summary.contains("8 of 13 heals avoided, 62 %"),
            "{}",
            p.summary
        );
        assert_eq!(p.evidence.len(), 8);
        assert!(p.evidence.iter().all(|id| {
            let n: i64 = id.rsplit('-').next().unwrap().parse().unwrap();
            n < 8 * 30
        }));
        // rate_limited was outstanding in 5 heals too, but adding it avoids none alone.
        assert!(
            proposals
                .iter()
                .all(|p| p.reason.as_deref() != Some("rate_limited"))
        );
        // The patch is the recorded policy with the reason added, under its recorded name.
        let patch: serde_yaml::Value = serde_yaml::from_str(p.patch.as_deref().unwrap()).unwrap();
        assert_eq!(patch["kind"], "HealingPolicy");
        assert_eq!(patch["metadata"]["name"], "nba");
        assert_eq!(patch["metadata"]["namespace"], "nba");
        let reasons: BTreeSet<String> =
            serde_yaml::from_value(patch["spec"]["permanentSkipReasons"].clone()).unwrap();
        let expected: BTreeSet<String> = ORIGINAL_PERMANENT_SKIP_REASONS.map(str::to_owned).into();
        assert_eq!(reasons, expected);
        assert_eq!(patch["spec"]["stallAfter"], "15m");
        // The manifest is a HealingPolicy the API would take.
        let typed: crate::api::HealingPolicy =
            serde_yaml::from_str(p.patch.as_deref().unwrap()).unwrap();
        assert_eq!(typed.spec.permanent_skip_reasons.len(), 9);
    }

    #[test]
    fn fewer_occurrences_than_the_minimum_propose_nothing() {
        let records: Vec<Record> = injury_example().into_iter().take(2).collect();
        assert!(run(&records, None).is_empty());
        let refs: Vec<&Record> = records.iter().collect();
        assert_eq!(propose(&refs, None, 2, None).len(), 1);
    }

    #[test]
    fn a_reason_whose_players_completed_later_is_not_proposed() {
        let mut records = injury_example();
        // b0's injured players are seen again later, fewer and with more completed.
        records.push({
            let mut later = heal("b0", 13 * 30, 97, &[(INJURY, 2)]);
            later.success = false;
            later
        });
        assert!(
            run(&records, None)
                .iter()
                .all(|p| p.kind != Kind::PermanentSkipReason)
        );
        // A batch that its workers finished after the heal says the same.
        let finished = [BatchRecord {
            namespace: Some("nba".into()),
            batch_id: "b3".into(),
            finished: "completed".into(),
            finished_time: at(200),
            pauses: 0,
            longest_pause_seconds: None,
        }];
        let proposals = run(&injury_example(), Some(&finished));
        assert!(
            proposals
                .iter()
                .all(|p| p.kind != Kind::PermanentSkipReason)
        );
        // An auto-completed one (our heal) does not.
        let healed = [BatchRecord {
            finished: "auto_completed".into(),
            ..finished[0].clone()
        }];
        assert_eq!(run(&injury_example(), Some(&healed)).len(), 1);
    }

    #[test]
    fn a_reason_the_policy_has_gained_since_is_not_proposed_again() {
        let mut records = injury_example();
        // The latest heal was decided under a policy that counts injuries already.
        let latest = records.last().unwrap().clone();
        records.push(forged(
            &Record {
                healing_id: "after-the-change".into(),
                timestamp: latest.timestamp + SignedDuration::from_mins(1),
                ..latest
            },
            |d| {
                d["policy"]["permanent_skip_reasons"]
                    .as_array_mut()
                    .unwrap()
                    .push("player_injury_out".into())
            },
        ));
        let proposals = run(&records, None);
        assert!(
            proposals
                .iter()
                .all(|p| p.reason.as_deref() != Some(INJURY)),
            "{proposals:#?}"
        );
        // Under that policy the last batch waited only on rate limits: adding those would
        // have spared its heal (and no other).
        let rate = proposals
            .iter()
            .find(|p| p.reason.as_deref() == Some("rate_limited"))
            .expect("rate_limited proposed");
        assert_eq!((rate.heals_avoided, rate.heals_considered), (1, 14));
    }

    #[test]
    fn no_heals_propose_nothing() {
        assert!(run(&[], None).is_empty());
        // Dry runs are not heals.
        let dry: Vec<Record> = injury_example()
            .into_iter()
            .map(|mut r| {
                r.dry_run = true;
                r
            })
            .collect();
        assert!(run(&dry, None).is_empty());
    }

    #[test]
    fn rows_without_a_recorded_decision_are_considered_but_not_replayed() {
        let mut records = injury_example();
        records.push({
            let mut old = heal("old", -30, 95, &[(INJURY, 5)]);
            old.metadata = Some("{'missing_players': ['a']}".into());
            old
        });
        let proposals = run(&records, None);
        assert_eq!(proposals[0].heals_considered, 14);
        assert_eq!(proposals[0].heals_replayed, 13);
        assert_eq!(proposals[0].heals_avoided, 8);
    }

    #[test]
    fn batches_that_paused_past_stall_after_and_recovered_raise_it() {
        let records = injury_example();
        let recovered = |id: &str, longest: f64| BatchRecord {
            namespace: Some("nba".into()),
            batch_id: id.into(),
            finished: "completed".into(),
            finished_time: at(10),
            pauses: 1,
            longest_pause_seconds: Some(longest),
        };
        // Pauses shorter than stallAfter (15 min) are no evidence.
        assert!(
            run(&records, Some(&[recovered("r1", 600.0)]))
                .iter()
                .all(|p| p.kind != Kind::StallAfter)
        );
        let batches = [
            recovered("r1", 600.0),
            recovered("r2", 1000.0),
            recovered("r3", 1100.5),
        ];
        let proposals = run(&records, Some(&batches));
        let p = proposals
            .iter()
            .find(|p| p.kind == Kind::StallAfter)
            .expect("a stall_after proposal");
        // 1100.5 s is 18m20.5s: the next whole minute is 19m.
        assert_eq!(p.stall_after.as_deref(), Some("19m"));
        assert_eq!(p.batches, ["r2", "r3"]);
        assert_eq!(p.heals_avoided, 2);
        // Every heal was decided 20 minutes after its last progress: 19m heals them all as
        // soon (no delay), so none is delayed.
        assert_eq!(p.heals_delayed, Some(0));
        let patch: crate::api::HealingPolicy =
            serde_yaml::from_str(p.patch.as_deref().unwrap()).unwrap();
        assert_eq!(patch.spec.stall_after.as_str(), "19m");
        // The combined manifest carries both changes to the one policy.
        let combined = combined_patch(&proposals, None).unwrap();
        let both: crate::api::HealingPolicy = serde_yaml::from_str(&combined).unwrap();
        assert_eq!(both.spec.stall_after.as_str(), "19m");
        assert!(both.spec.permanent_skip_reasons.iter().any(|r| r == INJURY));
    }

    #[test]
    fn a_raised_stall_after_delays_heals_decided_sooner() {
        // Decided 20 minutes after the last progress; 25m would wait 5 more minutes.
        let records = injury_example();
        let batches = [BatchRecord {
            namespace: Some("nba".into()),
            batch_id: "r".into(),
            finished: "completed".into(),
            finished_time: at(10),
            pauses: 1,
            longest_pause_seconds: Some(24.0 * 60.0 + 10.0),
        }];
        let proposals = run(&records, Some(&batches));
        let p = proposals
            .iter()
            .find(|p| p.kind == Kind::StallAfter)
            .unwrap();
        assert_eq!(p.stall_after.as_deref(), Some("25m"));
        assert_eq!(p.heals_delayed, Some(13));
        assert_eq!(p.mean_delay_s, Some(300.0));
        assert_eq!(p.evidence.len(), 13);
    }

    /// `record` with its recorded decision changed by `forge`.
    fn forged(record: &Record, forge: impl Fn(&mut serde_json::Value)) -> Record {
        let mut details: serde_json::Value =
            serde_json::from_str(record.metadata.as_deref().unwrap()).unwrap();
        forge(&mut details["decision"]);
        Record {
            metadata: Some(details.to_string()),
            ..record.clone()
        }
    }

    #[test]
    fn forged_decisions_are_not_replayed_and_forged_reasons_not_proposed() {
        let honest = injury_example();
        type Forgery = fn(&mut serde_json::Value);
        let forgeries: [(&str, Forgery); 4] = [
            // Timestamp arithmetic near the end of time would overflow.
            ("at", |d| d["at"] = "9999-12-31T23:59:59Z".into()),
            ("policy name", |d| {
                d["policy_name"] = "x\n---\nkind: ClusterRoleBinding".into()
            }),
            ("percent", |d| {
                d["policy"]["min_completion_percent"] = (-5.0).into()
            }),
            ("reasons", |d| {
                d["policy"]["permanent_skip_reasons"] = serde_json::json!(["Not Snake"])
            }),
        ];
        for (what, forge) in forgeries {
            let records: Vec<Record> = honest.iter().map(|r| forged(r, forge)).collect();
            let proposals = run(&records, None);
            assert!(proposals.is_empty(), "{what}: {proposals:#?}");
        }
        // A reason no HealingPolicy can hold is no proposal, however often it is outstanding.
        let hostile = "player_injury_out\n---\nkind: Secret";
        let records: Vec<Record> = (0..13)
            .map(|i| heal(&format!("b{i}"), i * 30, 95, &[(hostile, 5)]))
            .collect();
        assert!(run(&records, None).is_empty());
    }

    #[test]
    fn a_policy_file_is_changed_and_keeps_every_other_field() {
        let file = PolicyFile::parse(
            "apiVersion: healing.pipeline.dev/v1alpha1\nkind: HealingPolicy\n\
             metadata: {name: nba-policy, namespace: nba}\n\
             spec:\n  dryRun: true\n  pausedTypes: [phase_rerun]\n  stallAfter: 10m\n  \
             permanentSkipReasons: [no_features, player_not_found]\n",
        )
        .unwrap();
        let refs: Vec<Record> = injury_example();
        let refs: Vec<&Record> = refs.iter().collect();
        let proposals = propose(&refs, None, 3, Some(&file));
        let patch: crate::api::HealingPolicy =
            serde_yaml::from_str(proposals[0].patch.as_deref().unwrap()).unwrap();
        // The file's name and fields, not the records' (which said `nba` and 15m).
        assert_eq!(patch.metadata.name.as_deref(), Some("nba-policy"));
        assert!(patch.spec.dry_run);
        assert_eq!(patch.spec.paused_types, ["phase_rerun"]);
        assert_eq!(patch.spec.stall_after.as_str(), "10m");
        // The file's reasons, with the new one.
        assert_eq!(
            patch.spec.permanent_skip_reasons,
            ["no_features", "player_not_found", INJURY]
        );
        // Another namespace's file does not apply.
        let other = PolicyFile::parse(
            "apiVersion: healing.pipeline.dev/v1alpha1\nkind: HealingPolicy\n\
             metadata: {name: default, namespace: other}\n",
        )
        .unwrap();
        let proposals = propose(&refs, None, 3, Some(&other));
        assert!(
            proposals[0]
                .patch
                .as_deref()
                .unwrap()
                .contains("name: nba\n")
        );
        for bad in [
            "kind: ConfigMap\nmetadata: {name: x}",
            "kind: HealingPolicy\n",
            "[",
            "kind: HealingPolicy\nmetadata: {name: x}\nspec: {stallAfter: soon}",
        ] {
            assert!(PolicyFile::parse(bad).is_err(), "{bad}");
        }
    }

    fn rerun(date: &str, processor: &str, success: bool, minute: i64) -> Record {
        Record {
            healing_id: format!("phase-rerun-{processor}-{date}-{minute}"),
            healing_type: PHASE_RERUN.into(),
            success,
            before_state: Some(
                serde_json::json!({"phase": "phase4", "date": date, "processor": processor, "table": "t"})
                    .to_string(),
            ),
            metadata: None,
            root_cause: Some(format!("missing_rows:t_{processor}")),
            ..heal("x", minute, 95, &[])
        }
    }

    #[test]
    fn a_processor_rerun_on_three_of_seven_dates_is_a_finding() {
        let two = [
            rerun("2026-11-20", "PlayerDailyCache", true, 1),
            rerun("2026-11-22", "PlayerDailyCache", true, 2),
        ];
        assert!(run(&two, None).is_empty());
        let mut three = two.to_vec();
        three.push(rerun("2026-11-24", "PlayerDailyCache", true, 3));
        // Outside the last 7 dates of the latest: not counted.
        three.push(rerun("2026-11-10", "MLFeatureStore", true, 4));
        three.push(rerun("2026-11-11", "MLFeatureStore", true, 5));
        three.push(rerun("2026-11-24", "MLFeatureStore", true, 6));
        let proposals = run(&three, None);
        assert_eq!(proposals.len(), 1, "{proposals:#?}");
        let p = &proposals[0];
        assert_eq!(p.kind, Kind::Finding);
        assert_eq!(p.patch, None);
        assert_eq!(p.days.len(), 3);
        assert_eq!(p.upstream.as_deref(), Some("PlayerDailyCache (t)"));
        assert_eq!(p.heals_considered, 6);
    }

    #[test]
    fn a_root_cause_whose_heals_keep_failing_is_a_finding() {
        let mut records: Vec<Record> = (0..4)
            .map(|i| {
                let mut r = heal(&format!("f{i}"), i * 60 * 24, 95, &[]);
                r.success = i == 0;
                r.root_cause = Some("consolidation_failed".into());
                r
            })
            .collect();
        let proposals = run(&records, None);
        let p = proposals.iter().find(|p| p.kind == Kind::Finding).unwrap();
        assert_eq!(p.upstream.as_deref(), Some("consolidation_failed"));
        assert_eq!(p.evidence.len(), 3);
        assert_eq!(p.days.len(), 3);
        // Mostly succeeding: not a finding.
        for r in &mut records {
            r.success = true;
        }
        records[0].success = false;
        assert!(run(&records, None).iter().all(|p| p.kind != Kind::Finding));
    }
}
