//! The live knowledge base: the files under `kb_dir`, plus what lives in the store —
//! imported entries, entries and question variants taught by agents — and the teach-back
//! proposals waiting for an admin. Every change bumps a version; the responder is rebuilt
//! from [`LiveKb::entries`] without a restart (SIGHUP or the API).
//!
//! Store layout (the `kb` key-value space): `e/ID` stored entries, `x/ID` extra questions of
//! an entry, `p/NNNNNNNNNNNNNNNN` proposals (hex id), `version`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard_channel::{ChannelState, now_ms};

use super::embed::{Embedder, StateCache};
use super::kb::{self, Entry, KbError};
use super::matcher::{MatchError, Matcher};
use super::responder::KbResponder;
use super::rules::near_duplicate;
use super::{Responder, Suggestion};
use crate::bot::config::BotConfig;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Files(#[from] KbError),
    #[error(transparent)]
    Match(#[from] MatchError),
    #[error(transparent)]
    Intents(#[from] super::intent::IntentError),
    #[error("knowledge-base storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Invalid(String),
    /// The proposal was decided already.
    #[error("{0}")]
    Conflict(String),
    #[error("no such {0}")]
    NotFound(&'static str),
}

fn storage(e: impl std::fmt::Display) -> LiveError {
    LiveError::Storage(e.to_string())
}

impl From<StoreError> for LiveError {
    fn from(e: StoreError) -> Self {
        storage(e)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEntry {
    entry: Entry,
    version: u64,
    source: String,
    updated_at_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ExtraQuestions {
    questions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Pending,
    Approved,
    Rejected,
}

/// What a teach-back proposal would change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ProposalChange {
    /// The question becomes a new variant of an existing entry.
    AddQuestion { entry: String },
    /// A new entry with the agent's answer.
    NewEntry { entry: Entry },
}

/// A knowledge-base entry close to a proposed question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NearDuplicate {
    pub entry: String,
    pub question: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proposal {
    pub id: u64,
    pub status: ProposalStatus,
    /// The customer's question.
    pub question: String,
    pub change: ProposalChange,
    pub conversation: Option<u64>,
    pub proposed_by: String,
    pub decided_by: Option<String>,
    /// Entries the question is already close to: a reviewer should look twice.
    pub near_duplicates: Vec<NearDuplicate>,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
}

/// What is new in a proposal: either the entry to extend, or a new entry.
pub struct NewProposal {
    pub question: String,
    pub entry: Option<String>,
    pub new_entry: Option<Entry>,
    pub conversation: Option<u64>,
    pub proposed_by: String,
}

pub struct LiveKb {
    /// Replaced by a config reload; read at each build.
    config: std::sync::RwLock<BotConfig>,
    kv: Arc<dyn ChannelState>,
    cache: StateCache,
    model: Option<Arc<Embedder>>,
    /// Read-modify-write of the stored records, one at a time.
    write: tokio::sync::Mutex<()>,
}

impl LiveKb {
    pub async fn open(
        store: &dyn Store,
        config: &BotConfig,
        model: Option<Arc<Embedder>>,
    ) -> Result<LiveKb, LiveError> {
        Ok(LiveKb {
            config: std::sync::RwLock::new(config.clone()),
            kv: store.kv("kb").await?,
            cache: StateCache(store.kv("embeddings").await?),
            model,
            write: tokio::sync::Mutex::new(()),
        })
    }

    fn config(&self) -> BotConfig {
        self.config.read().expect("kb config lock").clone()
    }

    /// Takes new bot settings (a config reload); the next build uses them. The model stays
    /// the one loaded at start.
    pub fn set_config(&self, config: &BotConfig) {
        *self.config.write().expect("kb config lock") = config.clone();
    }

    pub async fn version(&self) -> Result<u64, LiveError> {
        Ok(self
            .kv
            .get(b"version")
            .await
            .map_err(storage)?
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    async fn scan<T: for<'de> Deserialize<'de>>(&self, prefix: &[u8]) -> Result<Vec<T>, LiveError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .kv
                .scan(prefix, after.as_deref(), 1024)
                .await
                .map_err(storage)?;
            let Some(last) = page.last().map(|kv| kv.0.clone()) else {
                break;
            };
            for (_, v) in &page {
                out.push(serde_json::from_slice(v).map_err(storage)?);
            }
            after = Some(last);
        }
        Ok(out)
    }

    /// The entries the bot answers from: files, then stored entries (which replace a file
    /// entry of the same id), each with its taught questions.
    pub async fn entries(&self) -> Result<Vec<Entry>, LiveError> {
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        let kb_dir = self.config().kb_dir;
        for e in kb::load_dir(&kb_dir)? {
            merged.insert(e.id.clone(), e);
        }
        for s in self.scan::<StoredEntry>(b"e/").await? {
            merged.insert(s.entry.id.clone(), s.entry);
        }
        for (key, value) in self
            .kv
            .scan(b"x/", None, usize::MAX)
            .await
            .map_err(storage)?
        {
            let id = String::from_utf8_lossy(&key[2..]).into_owned();
            let extra: ExtraQuestions = serde_json::from_slice(&value).map_err(storage)?;
            if let Some(e) = merged.get_mut(&id) {
                for q in extra.questions {
                    if !e.questions.contains(&q) {
                        e.questions.push(q);
                    }
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    /// Builds a responder from the live entries (as [`LiveKb::entries`] reads them),
    /// embedding only what is not cached yet. CPU work: call it off the async runtime.
    pub fn build(
        &self,
        entries: Vec<Entry>,
        progress: &dyn Fn(usize),
    ) -> Result<KbResponder, LiveError> {
        let model = self
            .model
            .as_ref()
            .map(|m| (m.clone(), &self.cache as &dyn super::embed::VectorCache));
        let mut config = self.config();
        // Calibrated as it will decide: by meaning in the languages the model knows.
        let matcher =
            Matcher::build(entries, model, progress)?.with_model_languages(&config.model_languages);
        if config.calibrate {
            calibrate_config(&matcher, &mut config)?;
        }
        responder(matcher, &config, self.model.as_deref(), &self.cache)
    }

    /// [`LiveKb::build`] on a blocking thread; the responder in use keeps serving until the
    /// new one (with its calibration) is ready.
    pub async fn rebuild(self: &Arc<Self>) -> Result<Arc<KbResponder>, LiveError> {
        let kb = self.clone();
        let started = std::time::Instant::now();
        let entries = self.entries().await?;
        let responder = tokio::task::spawn_blocking(move || kb.build(entries, &|_| {}))
            .await
            .map_err(|e| LiveError::Storage(format!("rebuild task failed: {e}")))??;
        tracing::info!(
            entries = responder.matcher().entries().len(),
            variants = responder.matcher().variants(),
            ms = started.elapsed().as_millis() as u64,
            "knowledge base rebuilt"
        );
        Ok(Arc::new(responder))
    }

    async fn bump(&self, pairs: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<u64, LiveError> {
        let version = self.version().await? + 1;
        pairs.push((b"version".to_vec(), version.to_be_bytes().to_vec()));
        Ok(version)
    }

    async fn put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), LiveError> {
        let refs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        self.kv.put_all(&refs).await.map_err(storage)
    }

    /// Stores entries (replacing stored entries of the same id), all in one write.
    /// Returns the new version.
    pub async fn import(&self, entries: &[Entry], source: &str) -> Result<u64, LiveError> {
        for e in entries {
            if let Some(problem) = kb::entry_problem(e) {
                return Err(LiveError::Invalid(format!("entry `{}`: {problem}", e.id)));
            }
        }
        let _w = self.write.lock().await;
        let mut pairs = Vec::with_capacity(entries.len() + 1);
        let version = self.bump(&mut pairs).await?;
        for e in entries {
            let record = StoredEntry {
                entry: e.clone(),
                version,
                source: source.to_owned(),
                updated_at_ms: now_ms(),
            };
            pairs.push((
                format!("e/{}", e.id).into_bytes(),
                serde_json::to_vec(&record).map_err(storage)?,
            ));
        }
        self.put(pairs).await?;
        Ok(version)
    }

    fn proposal_key(id: u64) -> Vec<u8> {
        format!("p/{id:016x}").into_bytes()
    }

    pub async fn proposals(
        &self,
        status: Option<ProposalStatus>,
    ) -> Result<Vec<Proposal>, LiveError> {
        let mut all = self.scan::<Proposal>(b"p/").await?;
        all.retain(|p| status.is_none_or(|s| p.status == s));
        Ok(all)
    }

    pub async fn proposal(&self, id: u64) -> Result<Proposal, LiveError> {
        let bytes = self
            .kv
            .get(&Self::proposal_key(id))
            .await
            .map_err(storage)?
            .ok_or(LiveError::NotFound("proposal"))?;
        serde_json::from_slice(&bytes).map_err(storage)
    }

    /// Records a pending proposal, flagging entries it nearly duplicates (by the bot's own
    /// scores and by text similarity).
    pub async fn propose(
        &self,
        new: NewProposal,
        responder: Arc<dyn Responder>,
    ) -> Result<Proposal, LiveError> {
        let question = new.question.trim().to_owned();
        if question.is_empty() {
            return Err(LiveError::Invalid("the question is empty".into()));
        }
        let entries = self.entries().await?;
        let change = match (new.entry, new.new_entry) {
            (Some(id), None) => {
                if !entries.iter().any(|e| e.id == id) {
                    return Err(LiveError::NotFound("knowledge-base entry"));
                }
                ProposalChange::AddQuestion { entry: id }
            }
            (None, Some(mut entry)) => {
                if entries.iter().any(|e| e.id == entry.id) {
                    return Err(LiveError::Invalid(format!(
                        "entry `{}` exists; propose a question for it instead",
                        entry.id
                    )));
                }
                if !entry.questions.contains(&question) {
                    entry.questions.insert(0, question.clone());
                }
                if let Some(problem) = kb::entry_problem(&entry) {
                    return Err(LiveError::Invalid(problem.into()));
                }
                ProposalChange::NewEntry { entry }
            }
            _ => {
                return Err(LiveError::Invalid(
                    "give either `entry` (add the question to it) or `answer` (a new entry)".into(),
                ));
            }
        };
        let target = match &change {
            ProposalChange::AddQuestion { entry } => Some(entry.as_str()),
            ProposalChange::NewEntry { .. } => None,
        };
        // Scores of the two policies differ in scale; the lower answer threshold flags more.
        let config = self.config();
        let answer_at = config.semantic.answer.min(config.lexical.answer);
        // Matching is CPU work (a sentence through the model).
        let asked = question.clone();
        let suggested = tokio::task::spawn_blocking(move || responder.suggest(&asked, 3))
            .await
            .map_err(|e| LiveError::Storage(format!("matching task failed: {e}")))?;
        let mut near: Vec<NearDuplicate> = suggested
            .into_iter()
            .filter(|s: &Suggestion| s.score >= answer_at && Some(s.entry.as_str()) != target)
            .map(|s| NearDuplicate {
                entry: s.entry,
                question: s.question,
                score: s.score,
            })
            .collect();
        for e in entries.iter().filter(|e| Some(e.id.as_str()) != target) {
            if let Some(q) = e.questions.iter().find(|q| near_duplicate(q, &question))
                && !near.iter().any(|n| n.entry == e.id)
            {
                near.push(NearDuplicate {
                    entry: e.id.clone(),
                    question: q.clone(),
                    score: super::text::similarity(q, &question),
                });
            }
        }
        let id = self.kv.next_id().await.map_err(storage)?;
        let proposal = Proposal {
            id,
            status: ProposalStatus::Pending,
            question,
            change,
            conversation: new.conversation,
            proposed_by: new.proposed_by,
            decided_by: None,
            near_duplicates: near,
            created_at_ms: now_ms(),
            decided_at_ms: None,
        };
        let _w = self.write.lock().await;
        self.put(vec![(
            Self::proposal_key(id),
            serde_json::to_vec(&proposal).map_err(storage)?,
        )])
        .await?;
        Ok(proposal)
    }

    /// Approves or rejects a pending proposal; an approval changes the knowledge base in the
    /// same write. The caller rebuilds the responder afterwards.
    pub async fn decide(&self, id: u64, approve: bool, by: &str) -> Result<Proposal, LiveError> {
        let _w = self.write.lock().await;
        let mut p = self.proposal(id).await?;
        if p.status != ProposalStatus::Pending {
            let done = match p.status {
                ProposalStatus::Approved => "approved",
                _ => "rejected",
            };
            return Err(LiveError::Conflict(format!(
                "proposal {id} is already {done}"
            )));
        }
        p.status = if approve {
            ProposalStatus::Approved
        } else {
            ProposalStatus::Rejected
        };
        p.decided_by = Some(by.to_owned());
        p.decided_at_ms = Some(now_ms());
        let mut pairs = Vec::new();
        if approve {
            let version = self.bump(&mut pairs).await?;
            match &p.change {
                ProposalChange::AddQuestion { entry } => {
                    let key = format!("x/{entry}").into_bytes();
                    let mut extra: ExtraQuestions =
                        match self.kv.get(&key).await.map_err(storage)? {
                            Some(v) => serde_json::from_slice(&v).map_err(storage)?,
                            None => ExtraQuestions::default(),
                        };
                    if !extra.questions.contains(&p.question) {
                        extra.questions.push(p.question.clone());
                    }
                    pairs.push((key, serde_json::to_vec(&extra).map_err(storage)?));
                }
                ProposalChange::NewEntry { entry } => {
                    let record = StoredEntry {
                        entry: entry.clone(),
                        version,
                        source: format!("taught by {by}"),
                        updated_at_ms: now_ms(),
                    };
                    pairs.push((
                        format!("e/{}", entry.id).into_bytes(),
                        serde_json::to_vec(&record).map_err(storage)?,
                    ));
                }
            }
        }
        pairs.push((
            Self::proposal_key(id),
            serde_json::to_vec(&p).map_err(storage)?,
        ));
        self.put(pairs).await?;
        Ok(p)
    }

    /// Drops what proposals keep of erased conversations: pending and rejected proposals from
    /// them go; an approved one keeps its question (reviewed, it is knowledge now) without the
    /// link. Returns how many proposals went.
    pub async fn forget_conversations(&self, ids: &[u64]) -> Result<usize, LiveError> {
        let _w = self.write.lock().await;
        let mut gone = Vec::new();
        let mut unlinked = Vec::new();
        for mut p in self.scan::<Proposal>(b"p/").await? {
            if !p.conversation.is_some_and(|c| ids.contains(&c)) {
                continue;
            }
            if p.status == ProposalStatus::Approved {
                p.conversation = None;
                unlinked.push((
                    Self::proposal_key(p.id),
                    serde_json::to_vec(&p).map_err(storage)?,
                ));
            } else {
                gone.push(Self::proposal_key(p.id));
            }
        }
        if !unlinked.is_empty() {
            self.put(unlinked).await?;
        }
        let keys: Vec<&[u8]> = gone.iter().map(Vec::as_slice).collect();
        self.kv.remove_all(&keys).await.map_err(storage)?;
        Ok(gone.len())
    }

    /// Makes the knowledge-base writes so far durable.
    pub async fn sync(&self) -> Result<(), LiveError> {
        self.kv.sync().await.map_err(storage)
    }
}

/// Problems a reviewer should fix: duplicate ids, the same question in two entries, near
/// duplicates across entries, empty answers. One line each.
pub fn check(entries: &[Entry]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut questions: BTreeMap<String, &str> = BTreeMap::new();
    for e in entries {
        if !ids.insert(e.id.as_str()) {
            problems.push(format!("{}: duplicate id", e.id));
        }
        if let Some(p) = kb::entry_problem(e) {
            problems.push(format!("{}: {p}", e.id));
        }
        for q in &e.questions {
            let n = super::text::normalise(q);
            match questions.get(&n) {
                Some(other) if *other != e.id => {
                    problems.push(format!("{}: question \"{q}\" is also in {other}", e.id))
                }
                _ => {
                    questions.insert(n, &e.id);
                }
            }
        }
    }
    // Near duplicates across entries: bigram similarity, compared within a length band.
    let mut all: Vec<(&str, &str)> = entries
        .iter()
        .flat_map(|e| e.questions.iter().map(move |q| (e.id.as_str(), q.as_str())))
        .collect();
    all.sort_by_key(|(_, q)| q.chars().count());
    for (i, (id, q)) in all.iter().enumerate() {
        let len = q.chars().count();
        for (other_id, other) in &all[i + 1..] {
            if other.chars().count() > len + len / 2 + 2 {
                break;
            }
            if id != other_id
                && super::text::normalise(q) != super::text::normalise(other)
                && near_duplicate(q, other)
            {
                problems.push(format!(
                    "{id}: question \"{q}\" nearly duplicates \"{other}\" of {other_id}"
                ));
            }
        }
    }
    problems
}

/// The responder the daemon decides with: `matcher` with `config`'s thresholds and texts, and
/// the conversation intents (the shipped ones and `config.intents_file`'s), embedded with
/// `model` when there is one. `kb eval` decides with the same.
pub fn responder(
    matcher: Matcher,
    config: &BotConfig,
    model: Option<&Embedder>,
    cache: &dyn super::embed::VectorCache,
) -> Result<KbResponder, LiveError> {
    let mut intents = super::intent::Intents::load(config.intents_file.as_deref())?;
    if let Some(model) = model {
        intents.embed(model, cache)?;
    }
    Ok(KbResponder::new(matcher, config).with_intents(intents))
}

/// Replaces the configured thresholds by those calibrated on `matcher`'s knowledge base
/// (words only, and with the model when there is one), and logs what was chosen.
fn calibrate_config(matcher: &Matcher, config: &mut BotConfig) -> Result<(), LiveError> {
    let mut policies = super::matcher::Policies {
        semantic: config.semantic,
        lexical: config.lexical,
    };
    let chosen =
        super::calibrate::calibrate_policies(matcher, &mut policies, config.max_wrong_rate)?;
    (config.semantic, config.lexical) = (policies.semantic, policies.lexical);
    for (scores, c) in chosen {
        let p = c.policy;
        tracing::info!(
            scores,
            policy = %p,
            answer = p.answer,
            answer_probability = p.confidence.map_or(f32::NAN, |c| c.answer),
            margin = p.margin,
            clarify = p.clarify,
            lexical_weight = p.lexical_weight,
            top_k = p.top_k,
            centroid_weight = p.centroid_weight,
            est_accuracy = c.in_scope_accuracy,
            est_wrong = c.wrong_answer_rate,
            est_held_out_answered = c.held_out_answered,
            est_off_topic_answered = c.off_topic_answered,
            note = c.note.as_deref().unwrap_or(""),
            "bot thresholds calibrated"
        );
    }
    Ok(())
}
