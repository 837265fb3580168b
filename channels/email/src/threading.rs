//! Which conversation an inbound mail joins. Pure rules over what the channel remembers.
//!
//! 1. A header reply: the first of `In-Reply-To`, then `References` newest first, that names a
//!    message of a known conversation **of the same sender** joins that conversation.
//! 2. A reply without usable headers (its subject starts with `Re:`, `回复:`, `答复:`... or it
//!    names messages we do not know): the sender's conversation with the same subject, when
//!    its last mail is within the window.
//! 3. Anything else starts a new conversation, named by the mail's own Message-ID.

/// What the channel knows of a message id: the conversation and its customer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Known {
    pub thread: String,
    pub owner: String,
}

/// What the channel knows of a sender's subject: the conversation and its last mail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BySubject {
    pub thread: String,
    pub at_ms: i64,
}

/// The channel's memory, as the rules need it.
pub trait Index {
    fn message(&self, message_id: &str) -> Option<Known>;
    fn subject(&self, owner: &str, subject_key: &str) -> Option<BySubject>;
}

/// What the channel knows that [`place`] may ask about one mail, read beforehand (see
/// [`Known::wanted`]), so that the rules stay pure.
#[derive(Debug, Default)]
pub struct Found {
    pub messages: std::collections::HashMap<String, Known>,
    /// The sender's conversation with the mail's subject key.
    pub subject: Option<BySubject>,
}

impl Index for Found {
    fn message(&self, message_id: &str) -> Option<Known> {
        self.messages.get(message_id).cloned()
    }
    fn subject(&self, _owner: &str, _subject_key: &str) -> Option<BySubject> {
        self.subject.clone()
    }
}

impl Known {
    /// The message ids [`place`] may look up for `h`, and the subject key it may look up for
    /// `h.from`: everything a [`Found`] for `h` needs.
    pub fn wanted(h: &Headers) -> (Vec<&str>, String) {
        let mut ids: Vec<&str> = h
            .in_reply_to
            .iter()
            .chain(h.references.iter())
            .map(String::as_str)
            .collect();
        ids.push(&h.message_id);
        ids.sort_unstable();
        ids.dedup();
        (ids, subject_key(&h.subject).0)
    }
}

/// The threading headers of one inbound mail.
#[derive(Clone, Debug, Default)]
pub struct Headers {
    pub message_id: String,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// The sender's address, lower case.
    pub from: String,
    pub subject: String,
    pub date_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Joins a conversation named in its headers.
    Reply(String),
    /// Joins the sender's conversation with the same subject.
    Subject(String),
    /// Starts a conversation named by its own Message-ID.
    New(String),
}

impl Placement {
    pub fn thread(&self) -> &str {
        match self {
            Self::Reply(t) | Self::Subject(t) | Self::New(t) => t,
        }
    }
}

const REPLY_PREFIXES: [&str; 8] = [
    "re:", "aw:", "sv:", "antw:", "回复:", "答复:", "回覆:", "答覆:",
];
const FORWARD_PREFIXES: [&str; 5] = ["fw:", "fwd:", "wg:", "转发:", "轉寄:"];

/// The subject without reply and forward prefixes (`Re: RE:回复：` ...), whitespace collapsed,
/// lower case; and whether a reply prefix was there.
pub fn subject_key(subject: &str) -> (String, bool) {
    // Full-width colons are common in Chinese mail clients.
    let mut s = subject.replace('：', ":");
    let mut replied = false;
    loop {
        let trimmed = s.trim_start();
        let lower = trimmed.to_lowercase();
        // Bracketed counters some clients add: "Re[2]:".
        let without_counter = strip_counter(&lower);
        let hit = REPLY_PREFIXES
            .iter()
            .map(|p| (p, true))
            .chain(FORWARD_PREFIXES.iter().map(|p| (p, false)))
            .find(|(p, _)| without_counter.starts_with(**p));
        match hit {
            Some((p, is_reply)) => {
                replied |= is_reply;
                let cut = trimmed.len() - without_counter.len() + p.len();
                s = trimmed[cut..].to_owned();
            }
            None => break,
        }
    }
    let key = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    (key, replied)
}

/// "re[2]: x" -> "re: x" (kept in the same byte positions relative to the end).
fn strip_counter(lower: &str) -> String {
    for p in ["re[", "aw["] {
        if let Some(rest) = lower.strip_prefix(p)
            && let Some(end) = rest.find("]:")
            && rest[..end].chars().all(|c| c.is_ascii_digit())
        {
            return format!("{}:{}", &p[..2], &rest[end + 2..]);
        }
    }
    lower.to_owned()
}

/// Places one mail; `window_ms` bounds the subject rule.
pub fn place(h: &Headers, index: &dyn Index, window_ms: i64) -> Placement {
    let named = h.in_reply_to.iter().chain(h.references.iter().rev());
    let mut named_any = false;
    for id in named {
        named_any = true;
        if let Some(k) = index.message(id)
            && k.owner == h.from
        {
            return Placement::Reply(k.thread);
        }
    }
    let (key, replied) = subject_key(&h.subject);
    if (replied || named_any)
        && !key.is_empty()
        && let Some(s) = index.subject(&h.from, &key)
        && h.date_ms - s.at_ms <= window_ms
    {
        return Placement::Subject(s.thread);
    }
    match index.message(&h.message_id) {
        // This very mail again (fetched twice): where it went the first time.
        Some(k) if k.owner == h.from => Placement::Reply(k.thread),
        // Another sender reused the Message-ID (fixed ids from a broken mailer, a copied
        // one): a conversation of this sender's own.
        Some(_) => Placement::New(format!("{}:{}:{}", h.from.len(), h.from, h.message_id)),
        None => Placement::New(h.message_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Memory {
        messages: HashMap<String, Known>,
        subjects: HashMap<(String, String), BySubject>,
    }

    impl Index for Memory {
        fn message(&self, id: &str) -> Option<Known> {
            self.messages.get(id).cloned()
        }
        fn subject(&self, owner: &str, key: &str) -> Option<BySubject> {
            self.subjects
                .get(&(owner.to_owned(), key.to_owned()))
                .cloned()
        }
    }

    const DAY: i64 = 86_400_000;

    fn memory() -> Memory {
        let mut m = Memory::default();
        let known = |thread: &str, owner: &str| Known {
            thread: thread.into(),
            owner: owner.into(),
        };
        // Alice's conversation: her first mail and our reply.
        m.messages.insert(
            "a1@alice.test".into(),
            known("a1@alice.test", "alice@alice.test"),
        );
        m.messages.insert(
            "sb-1-2@support.test".into(),
            known("a1@alice.test", "alice@alice.test"),
        );
        m.messages
            .insert("b1@bob.test".into(), known("b1@bob.test", "bob@bob.test"));
        m.subjects.insert(
            ("alice@alice.test".into(), "where is my order".into()),
            BySubject {
                thread: "a1@alice.test".into(),
                at_ms: 10 * DAY,
            },
        );
        m
    }

    fn mail(from: &str, subject: &str, irt: &[&str], refs: &[&str], day: i64) -> Headers {
        Headers {
            message_id: format!("new-{day}@x.test"),
            in_reply_to: irt.iter().map(|s| s.to_string()).collect(),
            references: refs.iter().map(|s| s.to_string()).collect(),
            from: from.into(),
            subject: subject.into(),
            date_ms: day * DAY,
        }
    }

    #[test]
    fn the_threading_table() {
        let m = memory();
        let a = "alice@alice.test";
        let w = 14 * DAY;
        let cases: Vec<(&str, Headers, Placement)> = vec![
            (
                "reply to our reply",
                mail(
                    a,
                    "Re: Where is my order",
                    &["sb-1-2@support.test"],
                    &[],
                    11,
                ),
                Placement::Reply("a1@alice.test".into()),
            ),
            (
                "only References, newest known wins",
                mail(a, "x", &[], &["a1@alice.test", "unknown@z"], 11),
                Placement::Reply("a1@alice.test".into()),
            ),
            (
                "In-Reply-To unknown, References known",
                mail(a, "x", &["gone@z"], &["a1@alice.test"], 11),
                Placement::Reply("a1@alice.test".into()),
            ),
            (
                "someone else's thread is not joined",
                mail(
                    "eve@evil.test",
                    "Re: Where is my order",
                    &["a1@alice.test"],
                    &[],
                    11,
                ),
                Placement::New("new-11@x.test".into()),
            ),
            (
                "no headers, Re: subject within the window",
                mail(a, "RE: re:  Where is   my order", &[], &[], 20),
                Placement::Subject("a1@alice.test".into()),
            ),
            (
                "Chinese reply prefix, full-width colon",
                mail(a, "回复：Where is my order", &[], &[], 20),
                Placement::Subject("a1@alice.test".into()),
            ),
            (
                "answer prefix and counter",
                mail(a, "Re[2]: 答复: where is my order", &[], &[], 20),
                Placement::Subject("a1@alice.test".into()),
            ),
            (
                "subject rule outside the window",
                mail(a, "Re: Where is my order", &[], &[], 30),
                Placement::New("new-30@x.test".into()),
            ),
            (
                "same subject, no reply prefix: a new conversation",
                mail(a, "Where is my order", &[], &[], 20),
                Placement::New("new-20@x.test".into()),
            ),
            (
                "new subject from the same sender",
                mail(a, "Invoice copy please", &[], &[], 11),
                Placement::New("new-11@x.test".into()),
            ),
            (
                "subject rule is per sender",
                mail("bob@bob.test", "Re: Where is my order", &[], &[], 11),
                Placement::New("new-11@x.test".into()),
            ),
            (
                "unknown headers fall back to the subject",
                mail(a, "Where is my order", &["lost@z"], &[], 12),
                Placement::Subject("a1@alice.test".into()),
            ),
            (
                "the same mail fetched again goes where it went",
                Headers {
                    message_id: "a1@alice.test".into(),
                    ..mail(a, "Where is my order", &[], &[], 10)
                },
                Placement::Reply("a1@alice.test".into()),
            ),
            (
                "a Message-ID another sender used starts this sender's own conversation",
                Headers {
                    message_id: "b1@bob.test".into(),
                    ..mail("carol@c.test", "Hello", &[], &[], 12)
                },
                Placement::New("12:carol@c.test:b1@bob.test".into()),
            ),
        ];
        for (what, headers, want) in cases {
            assert_eq!(place(&headers, &m, w), want, "{what}");
        }
    }

    #[test]
    fn subject_keys() {
        assert_eq!(
            subject_key("Re: Fwd: RE:  Hello  World"),
            ("hello world".into(), true)
        );
        assert_eq!(subject_key("Fwd: Hello"), ("hello".into(), false));
        assert_eq!(
            subject_key("回复: 转发：订单问题"),
            ("订单问题".into(), true)
        );
        assert_eq!(subject_key("Re[3]: x"), ("x".into(), true));
        assert_eq!(subject_key("Recipe"), ("recipe".into(), false));
    }
}
