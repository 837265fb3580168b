//! What the customer is doing, before any FAQ matching: asking for a person, writing about
//! something sensitive, upset, or only greeting, thanking, saying goodbye or asking whether
//! this is a bot. By words (always) and by meaning (with a model that knows the language).
//!
//! The words and examples live in `config/intents.toml` (shipped inside the binary;
//! `[bot] intents_file` adds an operator's own). Matching is pure and deterministic.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::embed::{EmbedError, Embedder, VectorCache, dot};
use super::text::has_cjk;

pub const SHIPPED: &str = include_str!("../../config/intents.toml");

/// What a message is, if it is more than a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Intent {
    Human,
    Sensitive,
    Frustrated,
    Greeting,
    Thanks,
    Goodbye,
    Bot,
}

impl Intent {
    pub const ALL: [Intent; 7] = [
        Intent::Human,
        Intent::Sensitive,
        Intent::Frustrated,
        Intent::Greeting,
        Intent::Thanks,
        Intent::Goodbye,
        Intent::Bot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Human => "human",
            Intent::Sensitive => "sensitive",
            Intent::Frustrated => "frustrated",
            Intent::Greeting => "greeting",
            Intent::Thanks => "thanks",
            Intent::Goodbye => "goodbye",
            Intent::Bot => "bot",
        }
    }

    /// Small talk gets a short reply, nothing more.
    pub fn is_small_talk(self) -> bool {
        matches!(
            self,
            Intent::Greeting | Intent::Thanks | Intent::Goodbye | Intent::Bot
        )
    }
}

/// How an intent was recognised, for the agents.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub intent: Intent,
    /// "words: 转人工" or "meaning: 0.95 like 我要找人工".
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Class {
    #[serde(default)]
    phrases: Vec<String>,
    #[serde(default)]
    pairs: Vec<Vec<String>>,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    people: Vec<String>,
    #[serde(default)]
    requests: Vec<String>,
    #[serde(default)]
    about: Vec<String>,
    #[serde(default)]
    alone: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    reply: Option<crate::model::lang::Localized>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    human: Class,
    #[serde(default)]
    sensitive: Class,
    #[serde(default)]
    frustrated: Class,
    #[serde(default)]
    greeting: Class,
    #[serde(default)]
    thanks: Class,
    #[serde(default)]
    goodbye: Class,
    #[serde(default)]
    bot: Class,
    #[serde(default)]
    not: Class,
}

impl File {
    fn class_mut(&mut self, i: Intent) -> &mut Class {
        match i {
            Intent::Human => &mut self.human,
            Intent::Sensitive => &mut self.sensitive,
            Intent::Frustrated => &mut self.frustrated,
            Intent::Greeting => &mut self.greeting,
            Intent::Thanks => &mut self.thanks,
            Intent::Goodbye => &mut self.goodbye,
            Intent::Bot => &mut self.bot,
        }
    }
}

fn extend(into: &mut Class, from: Class) {
    let normal = |v: Vec<String>| v.into_iter().map(|p| fold(&p));
    into.phrases.extend(normal(from.phrases));
    into.pairs.extend(
        from.pairs
            .into_iter()
            .map(|g| g.into_iter().map(|p| fold(&p)).collect()),
    );
    into.examples.extend(from.examples);
    into.people.extend(normal(from.people));
    into.requests.extend(normal(from.requests));
    into.about.extend(normal(from.about));
    into.alone.extend(normal(from.alone));
    into.ignore.extend(normal(from.ignore));
    if from.reply.is_some() {
        into.reply = from.reply;
    }
}

/// Example sentences embedded, for matching by meaning.
struct Examples {
    /// One normalised vector per example, row-major, and its class (`None`: `[not]`).
    vectors: Vec<f32>,
    classes: Vec<Option<Intent>>,
    texts: Vec<String>,
    dim: usize,
    /// A class is taken when its nearest example is at least this close: the cosine that
    /// 90% of the class examples reach to their nearest sibling (leave one out).
    threshold: f32,
}

pub struct Intents {
    classes: BTreeMap<Intent, Class>,
    not_examples: Vec<String>,
    examples: Option<Examples>,
}

impl Intents {
    /// The shipped file plus `extra` (an operator's file), words only until
    /// [`Intents::embed`].
    pub fn load(extra: Option<&Path>) -> Result<Intents, IntentError> {
        let mut merged = File::default();
        let mut add = |text: &str, path: &str| -> Result<(), IntentError> {
            let mut file: File = toml::from_str(text).map_err(|e| IntentError::File {
                path: path.into(),
                message: e.to_string(),
            })?;
            for i in Intent::ALL {
                let class = std::mem::take(file.class_mut(i));
                extend(merged.class_mut(i), class);
            }
            merged.not.examples.append(&mut file.not.examples);
            Ok(())
        };
        add(SHIPPED, "<shipped config/intents.toml>")?;
        if let Some(path) = extra {
            let text = std::fs::read_to_string(path).map_err(|e| IntentError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            add(&text, &path.display().to_string())?;
        }
        let classes = Intent::ALL
            .into_iter()
            .map(|i| (i, std::mem::take(merged.class_mut(i))))
            .collect();
        Ok(Intents {
            classes,
            not_examples: merged.not.examples,
            examples: None,
        })
    }

    /// Embeds the examples (through `cache`), so that [`Intents::by_meaning`] can be used.
    pub fn embed(
        &mut self,
        embedder: &Embedder,
        cache: &dyn VectorCache,
    ) -> Result<(), IntentError> {
        let mut texts = Vec::new();
        let mut classes = Vec::new();
        for (&i, c) in &self.classes {
            for e in &c.examples {
                texts.push(e.clone());
                classes.push(Some(i));
            }
        }
        for e in &self.not_examples {
            texts.push(e.clone());
            classes.push(None);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed_all(&refs, cache, &|_| {})?;
        let dim = embedder.dim();
        // Leave one out: each class example's nearest other example of its class.
        let mut nearest: Vec<f32> = Vec::new();
        for (a, ca) in classes.iter().enumerate() {
            let Some(ca) = ca else { continue };
            let va = &vectors[a * dim..(a + 1) * dim];
            let best = classes
                .iter()
                .enumerate()
                .filter(|&(b, cb)| b != a && cb.as_ref() == Some(ca))
                .map(|(b, _)| dot(va, &vectors[b * dim..(b + 1) * dim]))
                .fold(f32::NEG_INFINITY, f32::max);
            if best.is_finite() {
                nearest.push(best);
            }
        }
        nearest.sort_by(f32::total_cmp);
        let threshold = nearest.get(nearest.len() / 10).copied().unwrap_or(1.0);
        self.examples = Some(Examples {
            vectors,
            classes,
            texts,
            dim,
            threshold,
        });
        Ok(())
    }

    /// The reply to small talk, in the customer's language.
    pub fn reply(&self, intent: Intent, language: &str) -> Option<&str> {
        self.classes
            .get(&intent)?
            .reply
            .as_ref()
            .map(|r| r.pick(language))
    }

    /// By words only.
    pub fn by_words(&self, text: &str) -> Option<Found> {
        let folded = fold(text);
        let human = &self.classes[&Intent::Human];
        let mut t = folded.clone();
        for i in &human.ignore {
            t = t.replace(i.as_str(), " ");
        }
        let words = |i: Intent, t: &str| -> Option<String> {
            let c = &self.classes[&i];
            if let Some(p) = c.phrases.iter().find(|p| contains(t, p)) {
                return Some(p.clone());
            }
            c.pairs
                .iter()
                .find(|g| !g.is_empty() && g.iter().all(|w| contains(t, w)))
                .map(|g| g.join(" + "))
        };
        let found = |intent, w: String| {
            Some(Found {
                intent,
                why: format!("words: {w}"),
            })
        };
        // "Are you a real person?" asks about us, not for a person.
        if let Some(f) = self.small_talk(&folded, &[Intent::Bot]) {
            return Some(f);
        }
        if !self.about_people_folded(&t)
            && let Some(w) = words(Intent::Human, &t).or_else(|| asks_for_people(human, &t))
        {
            return found(Intent::Human, w);
        }
        for i in [Intent::Sensitive, Intent::Frustrated] {
            if let Some(w) = words(i, &folded) {
                return found(i, w);
            }
        }
        self.small_talk(
            &folded,
            &[Intent::Greeting, Intent::Thanks, Intent::Goodbye],
        )
    }

    /// Whether a message about people is about their hours or phone number (a question for
    /// the knowledge base, not a request): "人工客服几点上班".
    pub fn about_people(&self, text: &str) -> bool {
        self.about_people_folded(&fold(text))
    }

    fn about_people_folded(&self, folded: &str) -> bool {
        self.classes[&Intent::Human]
            .about
            .iter()
            .any(|a| contains(folded, a))
    }

    /// Small talk of these kinds, when that is all the message says.
    fn small_talk(&self, folded: &str, kinds: &[Intent]) -> Option<Found> {
        for &i in kinds {
            let c = &self.classes[&i];
            let mut rest = folded.to_owned();
            let mut hit = None;
            // Longest first: "有人在吗" whole, not "在吗" leaving "有人".
            let mut phrases: Vec<&String> = c.phrases.iter().collect();
            phrases.sort_by_key(|p| std::cmp::Reverse(p.chars().count()));
            for p in phrases {
                if contains(&rest, p) {
                    rest = rest.replace(p.as_str(), " ");
                    hit.get_or_insert(p.clone());
                }
            }
            if let Some(p) = hit
                && is_filler(&rest)
            {
                return Some(Found {
                    intent: i,
                    why: format!("words: {p}"),
                });
            }
        }
        None
    }

    /// By meaning: the class of the nearest example, if it is close enough and nearer than
    /// every question of the knowledge base (`kb_best`: their best cosine to `query`).
    pub fn by_meaning(&self, query: &[f32], kb_best: f32) -> Option<Found> {
        let ex = self.examples.as_ref()?;
        let (best, at) = ex
            .vectors
            .chunks_exact(ex.dim)
            .map(|v| dot(v, query))
            .enumerate()
            .fold(
                (f32::NEG_INFINITY, 0),
                |(b, at), (i, s)| {
                    if s > b { (s, i) } else { (b, at) }
                },
            );
        let intent = ex.classes.get(at).copied().flatten()?;
        (best >= ex.threshold && best > kb_best).then(|| Found {
            intent,
            why: format!(
                "meaning: {best:.2} like \"{}\" (knowledge base {kb_best:.2})",
                ex.texts[at]
            ),
        })
    }
}

/// A person word with a request word just before it, or a message that is only a person
/// word. (The caller has ruled out messages about people's hours or phone number.)
fn asks_for_people(c: &Class, t: &str) -> Option<String> {
    let trimmed: String = t
        .chars()
        .filter(|ch| !ch.is_ascii_punctuation() && !is_cjk_punct(*ch))
        .collect::<String>()
        .trim()
        .to_owned();
    let core = strip_fillers(&trimmed);
    // The word alone, or said again and again: "人工人工人工", "agent agent".
    let squeezed: String = core.split_whitespace().collect();
    let alone = |a: &String| {
        let a_squeezed: String = a.split_whitespace().collect();
        core == *a
            || (!a_squeezed.is_empty()
                && !squeezed.is_empty()
                && squeezed.len().is_multiple_of(a_squeezed.len())
                && squeezed == a_squeezed.repeat(squeezed.len() / a_squeezed.len()))
    };
    if let Some(a) = c.alone.iter().find(|a| alone(a)) {
        return Some(a.clone());
    }
    for person in &c.people {
        for (at, _) in t.match_indices(person.as_str()) {
            if !has_cjk(person) && !word_at(t, at, person.len()) {
                continue;
            }
            let before = &t[..at];
            let near = if has_cjk(person) {
                let start = before.char_indices().rev().nth(4).map_or(0, |(i, _)| i);
                &before[start..]
            } else {
                let words: Vec<&str> = before.split_whitespace().collect();
                let from = words.len().saturating_sub(5);
                let start = words.get(from).map_or(before.len(), |w| {
                    w.as_ptr() as usize - before.as_ptr() as usize
                });
                &before[start..]
            };
            if let Some(r) = c.requests.iter().find(|r| contains(near, r)) {
                return Some(format!("{r} … {person}"));
            }
        }
    }
    None
}

/// Lower case, Traditional characters folded to Simplified, full-width to half-width.
pub fn fold(text: &str) -> String {
    text.chars()
        .map(|c| {
            let c = match c as u32 {
                0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                0x3000 => ' ',
                _ => c,
            };
            super::zh::simplified(c)
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// `phrase` in `text`: anywhere for Chinese, on word boundaries otherwise.
fn contains(text: &str, phrase: &str) -> bool {
    if phrase.is_empty() {
        return false;
    }
    if has_cjk(phrase) {
        return text.contains(phrase);
    }
    text.match_indices(phrase)
        .any(|(at, _)| word_at(text, at, phrase.len()))
}

fn word_at(text: &str, at: usize, len: usize) -> bool {
    let before = text[..at].chars().next_back();
    let after = text[at + len..].chars().next();
    let edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric() || has_cjk(&c.to_string()));
    edge(before) && edge(after)
}

fn is_cjk_punct(c: char) -> bool {
    matches!(c as u32, 0x3000..=0x303F | 0xFF00..=0xFF0F | 0xFF1A..=0xFF20 | 0xFE30..=0xFE4F)
        || matches!(c, '～' | '…' | '—' | '·')
}

/// Particles and polite words that add nothing.
const FILLERS: [&str; 32] = [
    "吗", "呢", "啊", "呀", "吧", "哦", "嗯", "啦", "了", "的", "请", "一下", "呗", "哈", "亲",
    "非常", "太", "好", "please", "pls", "there", "ok", "okay", "so", "very", "much", "a", "lot",
    "you", "all", "guys", "again",
];

fn strip_fillers(text: &str) -> String {
    let mut t = text.to_owned();
    for f in FILLERS {
        if has_cjk(f) {
            t = t.replace(f, "");
        }
    }
    t.split_whitespace()
        .filter(|w| !FILLERS.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether what is left of a message says nothing more (punctuation, particles, a name).
fn is_filler(rest: &str) -> bool {
    let cleaned: String = rest
        .chars()
        .filter(|c| !c.is_ascii_punctuation() && !is_cjk_punct(*c) && !c.is_whitespace())
        .filter(|c| !matches!(*c as u32, 0x1F300..=0x1FAFF | 0x2600..=0x27BF))
        .collect();
    let core = strip_fillers(&cleaned);
    let cjk = core.chars().filter(|c| has_cjk(&c.to_string())).count();
    let latin_words = strip_fillers(rest)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.is_ascii())
        .count();
    cjk <= 1 && latin_words <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By words, each class in Simplified Chinese, Traditional Chinese and English, and the
    /// questions that look like them but stay questions.
    #[test]
    fn words_tell_the_classes_apart() {
        let intents = Intents::load(None).unwrap();
        let cases: &[(&str, Option<Intent>)] = &[
            ("转人工", Some(Intent::Human)),
            ("轉人工", Some(Intent::Human)),
            ("人工人工人工", Some(Intent::Human)),
            ("agent agent", Some(Intent::Human)),
            ("get me a representative", Some(Intent::Human)),
            ("被扣了兩次錢", Some(Intent::Sensitive)),
            ("有人用我的账号买东西", Some(Intent::Sensitive)),
            ("someone hacked my account", Some(Intent::Sensitive)),
            ("什麼爛服務，氣死我了", Some(Intent::Frustrated)),
            ("你们这客服效率也太低了吧", Some(Intent::Frustrated)),
            (
                "this is a complete waste of my time",
                Some(Intent::Frustrated),
            ),
            // The longest phrase first: "在吗" alone would leave "有人" and miss.
            ("有人在吗", Some(Intent::Greeting)),
            ("收到，谢谢", Some(Intent::Thanks)),
            ("have a nice day, bye", Some(Intent::Goodbye)),
            ("你是機器人嗎", Some(Intent::Bot)),
            // Questions about people, and ordinary questions.
            ("人工客服几点上班", None),
            ("customer service hours", None),
            ("账户怎么注销", None),
            ("how long does delivery take", None),
            ("人工智能", None),
            // Words that only sound like a request or a threat.
            ("please call me tom from now on", None),
            ("call me an uber to the station", None),
            ("how do i get to the court house on foot", None),
            ("can someone call me back today", Some(Intent::Human)),
            ("I will take you to court", Some(Intent::Sensitive)),
        ];
        for &(text, want) in cases {
            let got = intents.by_words(text).map(|f| f.intent);
            assert_eq!(got, want, "{text}");
        }
    }
}
