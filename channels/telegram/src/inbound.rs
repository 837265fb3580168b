//! Telegram updates turned into Switchboard events: which updates concern us, what thread and
//! ids they get, and which files they carry.

use serde::Deserialize;
use switchboard_channel::{
    ExternalMessageId, ExternalThread, ExternalUser, InboundEdit, InboundEvent, InboundMessage,
    Sender,
};
use teloxide::types::{
    CallbackQuery, ChatId, FileId, FileMeta, InlineKeyboardButtonKind, Message, MessageEntityKind,
    MessageId, MessageKind, ThreadId, Update, UpdateKind, User,
};

/// When the bot takes part in group chats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupPolicy {
    /// Only messages that mention the bot, reply to it, or are commands to it.
    #[default]
    Mentions,
    /// Every message in the group.
    All,
    /// Groups are ignored.
    Off,
}

/// The bot's own account, from `getMe`.
#[derive(Clone, Debug)]
pub struct Me {
    pub id: u64,
    pub username: String,
}

/// What one update asks of the connector.
// Short-lived, one per update: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    /// Store this event; `files` are to be fetched first and `callback` answered after.
    Submit {
        event: InboundEvent,
        files: Vec<FileRef>,
        callback: Option<String>,
    },
    /// Nothing for us (a group message not addressed to the bot, an update kind we ignore).
    Ignore(&'static str),
}

/// A file a message carries, before it is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub id: FileId,
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

/// The conversation a message belongs to: the chat, and in forums with `topics` on, the topic.
pub fn thread_of(msg: &Message, topics: bool) -> ExternalThread {
    match msg.thread_id {
        Some(t) if topics && msg.is_topic_message => {
            ExternalThread(format!("{}/{}", msg.chat.id.0, t.0.0))
        }
        _ => ExternalThread(msg.chat.id.0.to_string()),
    }
}

/// The chat and topic of a thread made by [`thread_of`].
pub fn parse_thread(thread: &ExternalThread) -> Option<(ChatId, Option<ThreadId>)> {
    let (chat, topic) = match thread.as_str().split_once('/') {
        Some((c, t)) => (c, Some(t.parse::<i32>().ok()?)),
        None => (thread.as_str(), None),
    };
    Some((
        ChatId(chat.parse().ok()?),
        topic.map(|t| ThreadId(MessageId(t))),
    ))
}

/// Telegram message ids are unique per chat only.
pub fn message_id(chat: ChatId, id: MessageId) -> ExternalMessageId {
    ExternalMessageId(format!("{}:{}", chat.0, id.0))
}

/// The chat and message of an id made by [`message_id`].
pub fn parse_message_id(id: &ExternalMessageId) -> Option<(ChatId, MessageId)> {
    let (chat, msg) = id.as_str().split_once(':')?;
    Some((ChatId(chat.parse().ok()?), MessageId(msg.parse().ok()?)))
}

fn sender(user: &User) -> Sender {
    Sender {
        id: ExternalUser(user.id.0.to_string()),
        name: Some(user.full_name()),
    }
}

/// Whether a group message is for the bot under `policy`.
fn addressed(msg: &Message, me: &Me, policy: GroupPolicy) -> bool {
    if msg.chat.is_private() {
        return true;
    }
    match policy {
        GroupPolicy::Off => return false,
        GroupPolicy::All => return true,
        GroupPolicy::Mentions => {}
    }
    let replied_to_bot = msg
        .reply_to_message()
        .and_then(|r| r.from.as_ref())
        .is_some_and(|u| u.id.0 == me.id);
    let handle = format!("@{}", me.username.to_lowercase());
    let mentioned = msg
        .parse_entities()
        .unwrap_or_default()
        .iter()
        .any(|e| match e.kind() {
            MessageEntityKind::Mention => e.text().to_lowercase() == handle,
            MessageEntityKind::TextMention { user } => user.id.0 == me.id,
            MessageEntityKind::BotCommand => e.text().to_lowercase().ends_with(&handle),
            _ => false,
        })
        || msg
            .text()
            .or(msg.caption())
            .is_some_and(|t| t.to_lowercase().contains(&handle));
    replied_to_bot || mentioned
}

/// The text as the engine should see it: mentions of the bot and `@bot` suffixes of commands
/// removed, so "@shop_bot where is my order" matches like "where is my order".
fn clean_text(text: &str, me: &Me) -> String {
    let handle = format!("@{}", me.username);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = find_ascii_ci(rest, &handle) {
        out.push_str(&rest[..i]);
        rest = &rest[i + handle.len()..];
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Byte offset of `needle` (ASCII, as Telegram usernames are) in `hay`, ignoring ASCII case.
fn find_ascii_ci(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..=h.len().checked_sub(n.len())?).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// A file with the name and type Telegram gave it, or ours.
fn file(meta: &FileMeta, name: Option<&String>, fallback: String, mime: Option<String>) -> FileRef {
    let content_type = mime.unwrap_or_else(|| "application/octet-stream".into());
    FileRef {
        id: meta.id.clone(),
        name: name.cloned().unwrap_or(fallback),
        content_type,
        size: meta.size.into(),
    }
}

/// The files of a message: the largest size of a photo, a document, a voice note, a sticker,
/// a video, a round video note, an audio file, an animation (Telegram's GIFs are MP4).
pub fn files(msg: &Message) -> Vec<FileRef> {
    let mut out = Vec::new();
    if let Some(photo) = msg
        .photo()
        // Sizes come from the network: a hostile width × height must not overflow.
        .and_then(|sizes| {
            sizes
                .iter()
                .max_by_key(|p| u64::from(p.width) * u64::from(p.height))
        })
    {
        out.push(FileRef {
            id: photo.file.id.clone(),
            name: format!("photo-{}.jpg", photo.file.unique_id),
            content_type: "image/jpeg".into(),
            size: photo.file.size.into(),
        });
    }
    if let Some(doc) = msg.document() {
        out.push(FileRef {
            id: doc.file.id.clone(),
            name: doc
                .file_name
                .clone()
                .unwrap_or_else(|| format!("document-{}", doc.file.unique_id)),
            content_type: doc
                .mime_type
                .as_ref()
                .map_or("application/octet-stream".into(), |m| m.to_string()),
            size: doc.file.size.into(),
        });
    }
    if let Some(voice) = msg.voice() {
        out.push(FileRef {
            id: voice.file.id.clone(),
            name: format!("voice-{}.ogg", voice.file.unique_id),
            content_type: voice
                .mime_type
                .as_ref()
                .map_or("audio/ogg".into(), |m| m.to_string()),
            size: voice.file.size.into(),
        });
    }
    if let Some(sticker) = msg.sticker() {
        let (ext, mime) = if sticker.is_animated() {
            ("tgs", "application/x-tgsticker")
        } else if sticker.is_video() {
            ("webm", "video/webm")
        } else {
            ("webp", "image/webp")
        };
        out.push(FileRef {
            id: sticker.file.id.clone(),
            name: format!("sticker-{}.{ext}", sticker.file.unique_id),
            content_type: mime.into(),
            size: sticker.file.size.into(),
        });
    }
    if let Some(v) = msg.video() {
        let fallback = format!("video-{}.mp4", v.file.unique_id);
        let mime = mime(v.mime_type.as_ref(), "video/mp4");
        out.push(file(&v.file, v.file_name.as_ref(), fallback, mime));
    }
    if let Some(v) = msg.video_note() {
        let fallback = format!("video-note-{}.mp4", v.file.unique_id);
        out.push(file(&v.file, None, fallback, Some("video/mp4".into())));
    }
    if let Some(a) = msg.audio() {
        let fallback = format!("audio-{}.mp3", a.file.unique_id);
        let mime = mime(a.mime_type.as_ref(), "audio/mpeg");
        out.push(file(&a.file, a.file_name.as_ref(), fallback, mime));
    }
    if let Some(a) = msg.animation() {
        let fallback = format!("animation-{}.mp4", a.file.unique_id);
        let mime = mime(a.mime_type.as_ref(), "video/mp4");
        out.push(file(&a.file, a.file_name.as_ref(), fallback, mime));
    }
    out
}

/// The file's own type, or `or`.
fn mime<M: ToString>(m: Option<&M>, or: &str) -> Option<String> {
    Some(m.map_or(or.to_owned(), |m| m.to_string()))
}

/// What a message without text or file says, as text for people: a location, a place, a
/// contact card, a poll, a die; `None` for what we cannot show.
fn described(msg: &Message) -> Option<String> {
    if let Some(v) = msg.venue() {
        let l = &v.location;
        return Some(format!(
            "[place] {} · {} ({:.6}, {:.6}) https://www.openstreetmap.org/?mlat={:.6}&mlon={:.6}",
            v.title, v.address, l.latitude, l.longitude, l.latitude, l.longitude
        ));
    }
    if let Some(l) = msg.location() {
        return Some(format!(
            "[location] {:.6}, {:.6} https://www.openstreetmap.org/?mlat={:.6}&mlon={:.6}",
            l.latitude, l.longitude, l.latitude, l.longitude
        ));
    }
    if let Some(c) = msg.contact() {
        let name = match &c.last_name {
            Some(last) => format!("{} {last}", c.first_name),
            None => c.first_name.clone(),
        };
        return Some(format!("[contact] {name} {}", c.phone_number));
    }
    if let Some(p) = msg.poll() {
        let options: Vec<&str> = p.options.iter().map(|o| o.text.as_str()).collect();
        return Some(format!("[poll] {} ({})", p.question, options.join(" / ")));
    }
    if let Some(d) = msg.dice() {
        return Some(format!("[dice] {:?} {}", d.emoji, d.value));
    }
    None
}

/// Why an update teloxide could not read is ignored.
pub const UNREADABLE: &str = "an update this client cannot read";

/// What to do with one update.
pub fn action(update: &Update, me: &Me, groups: GroupPolicy, topics: bool) -> Action {
    match &update.kind {
        UpdateKind::Message(msg) => message(msg, me, groups, topics),
        UpdateKind::EditedMessage(msg) => edit(msg, me, groups, topics),
        UpdateKind::CallbackQuery(q) => callback(q, topics),
        UpdateKind::Error(_) => Action::Ignore(UNREADABLE),
        _ => Action::Ignore("update kind not handled"),
    }
}

fn message(msg: &Message, me: &Me, groups: GroupPolicy, topics: bool) -> Action {
    let Some(from) = msg.from.as_ref() else {
        return Action::Ignore("no sender (channel post)");
    };
    if from.is_bot {
        return Action::Ignore("from a bot");
    }
    if !addressed(msg, me, groups) {
        return Action::Ignore("group message not addressed to the bot");
    }
    let raw = msg.text().or(msg.caption()).unwrap_or_default();
    let mut text = clean_text(raw, me);
    let files = files(msg);
    if text.is_empty() && files.is_empty() {
        text = match described(msg) {
            Some(d) => d,
            // Something a customer sent that we cannot show: stored all the same, marked,
            // so nobody is left unanswered.
            None if matches!(msg.kind, MessageKind::Common(_)) => {
                tracing::info!(
                    chat = msg.chat.id.0,
                    message = msg.id.0,
                    "a Telegram message of a kind we cannot show; stored as a placeholder"
                );
                "[a Telegram message of a kind Switchboard cannot show]".into()
            }
            None => return Action::Ignore("a service message (members, pins, titles...)"),
        };
    }
    let inbound = InboundMessage {
        thread: thread_of(msg, topics),
        sender: sender(from),
        message_id: message_id(msg.chat.id, msg.id),
        text: text.clone(),
        attachments: vec![],
        sent_at_ms: Some(msg.date.timestamp_millis()),
        automated: None,
        earlier_id: None,
        subject: None,
        payload: None,
    };
    let is_start = text == "/start" || text.starts_with("/start ");
    Action::Submit {
        event: if is_start {
            InboundEvent::Start(inbound)
        } else {
            InboundEvent::Message(inbound)
        },
        files,
        callback: None,
    }
}

fn edit(msg: &Message, me: &Me, groups: GroupPolicy, topics: bool) -> Action {
    if msg.from.as_ref().is_none_or(|u| u.is_bot) || !addressed(msg, me, groups) {
        return Action::Ignore("edit of a message that is not ours to see");
    }
    let text = clean_text(msg.text().or(msg.caption()).unwrap_or_default(), me);
    Action::Submit {
        event: InboundEvent::Edit(InboundEdit {
            thread: thread_of(msg, topics),
            message_id: message_id(msg.chat.id, msg.id),
            text,
            edited_at_ms: msg.edit_date().map(|d| d.timestamp_millis()),
        }),
        files: vec![],
        callback: None,
    }
}

/// A pressed inline button: stored as the label the customer saw (found on the message the
/// button was on), with its data as the payload the bot reads.
fn callback(q: &CallbackQuery, topics: bool) -> Action {
    let (Some(data), Some(origin)) = (q.data.as_ref(), q.message.as_ref()) else {
        return Action::Ignore("callback without data or message");
    };
    let thread = match origin.regular_message() {
        Some(m) => thread_of(m, topics),
        None => ExternalThread(origin.chat().id.0.to_string()),
    };
    let label = origin
        .regular_message()
        .and_then(|m| m.reply_markup())
        .into_iter()
        .flat_map(|k| k.inline_keyboard.iter().flatten())
        .find(|b| matches!(&b.kind, InlineKeyboardButtonKind::CallbackData(d) if d == data))
        .map(|b| b.text.clone());
    Action::Submit {
        event: InboundEvent::Message(InboundMessage {
            thread,
            sender: sender(&q.from),
            message_id: ExternalMessageId(format!("cb:{}", q.id.0)),
            text: label.unwrap_or_else(|| data.clone()),
            attachments: vec![],
            sent_at_ms: None,
            automated: None,
            earlier_id: None,
            subject: None,
            payload: Some(data.clone()),
        }),
        files: vec![],
        callback: Some(q.id.0.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Me {
        Me {
            id: 42,
            username: "shop_bot".into(),
        }
    }

    fn update(kind: &str, msg: serde_json::Value) -> Update {
        // From text, as on the wire: teloxide reads update kinds from borrowed keys only.
        serde_json::from_str(&json!({"update_id": 1, (kind): msg}).to_string()).unwrap()
    }

    fn group_msg(text: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut m = json!({
            "message_id": 5, "date": 1_700_000_000,
            "chat": {"id": -100123, "type": "supergroup", "title": "Shop", "is_forum": true},
            "from": {"id": 7, "is_bot": false, "first_name": "Li", "last_name": "Wei"},
            "text": text,
        });
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    }

    #[test]
    fn groups_answer_mentions_replies_and_commands_only() {
        let u = update("message", group_msg("anyone here?", json!({})));
        assert!(matches!(
            action(&u, &me(), GroupPolicy::Mentions, true),
            Action::Ignore(_)
        ));
        assert!(matches!(
            action(&u, &me(), GroupPolicy::All, true),
            Action::Submit { .. }
        ));

        let mention = group_msg(
            "@Shop_Bot where is my order",
            json!({"entities": [{"type": "mention", "offset": 0, "length": 9}]}),
        );
        match action(
            &update("message", mention),
            &me(),
            GroupPolicy::Mentions,
            true,
        ) {
            Action::Submit {
                event: InboundEvent::Message(m),
                ..
            } => {
                assert_eq!(m.text, "where is my order");
                assert_eq!(m.thread.as_str(), "-100123");
                assert_eq!(m.message_id.as_str(), "-100123:5");
                assert_eq!(m.sender.name.as_deref(), Some("Li Wei"));
            }
            other => panic!("{other:?}"),
        }

        let reply = group_msg(
            "thanks, and refunds?",
            json!({"reply_to_message": {"message_id": 4, "date": 1_700_000_000,
                "chat": {"id": -100123, "type": "supergroup", "title": "Shop"},
                "from": {"id": 42, "is_bot": true, "first_name": "Shop"}, "text": "hi"}}),
        );
        assert!(matches!(
            action(
                &update("message", reply),
                &me(),
                GroupPolicy::Mentions,
                true
            ),
            Action::Submit { .. }
        ));

        let topic = group_msg(
            "/human@shop_bot",
            json!({"message_thread_id": 77, "is_topic_message": true,
                "entities": [{"type": "bot_command", "offset": 0, "length": 15}]}),
        );
        match action(
            &update("message", topic.clone()),
            &me(),
            GroupPolicy::Mentions,
            true,
        ) {
            Action::Submit {
                event: InboundEvent::Message(m),
                ..
            } => {
                assert_eq!(m.text, "/human");
                assert_eq!(m.thread.as_str(), "-100123/77");
                assert_eq!(
                    parse_thread(&m.thread),
                    Some((ChatId(-100123), Some(ThreadId(MessageId(77)))))
                );
            }
            other => panic!("{other:?}"),
        }
        match action(
            &update("message", topic),
            &me(),
            GroupPolicy::Mentions,
            false,
        ) {
            Action::Submit { event, .. } => assert_eq!(event.thread().as_str(), "-100123"),
            other => panic!("{other:?}"),
        }
        let u = update("message", group_msg("@shop_bot hi", json!({})));
        assert!(matches!(
            action(&u, &me(), GroupPolicy::Off, true),
            Action::Ignore(_)
        ));
    }

    #[test]
    fn private_start_photos_edits_and_buttons() {
        let private = |extra: serde_json::Value| {
            let mut m = json!({"message_id": 9, "date": 1_700_000_000,
                "chat": {"id": 1001, "type": "private", "first_name": "Ann"},
                "from": {"id": 1001, "is_bot": false, "first_name": "Ann"}});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            m
        };
        let start = update("message", private(json!({"text": "/start promo"})));
        assert!(matches!(
            action(&start, &me(), GroupPolicy::Mentions, true),
            Action::Submit {
                event: InboundEvent::Start(_),
                ..
            }
        ));

        let photo = update(
            "message",
            private(json!({"caption": "broken box", "photo": [
                {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 1000},
                {"file_id": "big", "file_unique_id": "b", "width": 800, "height": 800, "file_size": 90000}
            ]})),
        );
        match action(&photo, &me(), GroupPolicy::Mentions, true) {
            Action::Submit {
                event: InboundEvent::Message(m),
                files,
                ..
            } => {
                assert_eq!(m.text, "broken box");
                assert_eq!(files.len(), 1);
                assert_eq!(files[0].id.0, "big");
                assert_eq!(files[0].size, 90000);
            }
            other => panic!("{other:?}"),
        }

        let edited = update(
            "edited_message",
            private(json!({"text": "new words", "edit_date": 1_700_000_100})),
        );
        match action(&edited, &me(), GroupPolicy::Mentions, true) {
            Action::Submit {
                event: InboundEvent::Edit(e),
                ..
            } => {
                assert_eq!(e.message_id.as_str(), "1001:9");
                assert_eq!(e.text, "new words");
                assert_eq!(e.edited_at_ms, Some(1_700_000_100_000));
            }
            other => panic!("{other:?}"),
        }

        let pressed: Update = serde_json::from_str(&json!({"update_id": 3, "callback_query": {
            "id": "cbq1", "chat_instance": "ci", "data": "kb:returns-en",
            "from": {"id": 1001, "is_bot": false, "first_name": "Ann"},
            "message": private(json!({"text": "Did you mean?", "from": {"id": 42, "is_bot": true, "first_name": "Shop"}}))
        }}).to_string())
        .unwrap();
        match action(&pressed, &me(), GroupPolicy::Mentions, true) {
            Action::Submit {
                event: InboundEvent::Message(m),
                callback,
                ..
            } => {
                assert_eq!(m.text, "kb:returns-en");
                assert_eq!(m.message_id.as_str(), "cb:cbq1");
                assert_eq!(m.thread.as_str(), "1001");
                assert_eq!(callback.as_deref(), Some("cbq1"));
            }
            other => panic!("{other:?}"),
        }
        let service = update("message", private(json!({"new_chat_title": "x"})));
        assert!(matches!(
            action(&service, &me(), GroupPolicy::Mentions, true),
            Action::Ignore(_)
        ));
        assert_eq!(
            parse_message_id(&ExternalMessageId::new("-100:7")),
            Some((ChatId(-100), MessageId(7)))
        );
    }

    /// A private message from a customer with `extra` fields in place of text.
    fn private(extra: serde_json::Value) -> Update {
        let mut m = json!({
            "message_id": 30, "date": 1_700_000_000,
            "chat": {"id": 77, "type": "private", "first_name": "小明"},
            "from": {"id": 77, "is_bot": false, "first_name": "小明"},
        });
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        update("message", m)
    }

    fn submitted(u: &Update) -> (String, Vec<FileRef>) {
        match action(u, &me(), GroupPolicy::Mentions, false) {
            Action::Submit {
                event: InboundEvent::Message(m),
                files,
                ..
            } => (m.text, files),
            other => panic!("not submitted: {other:?}"),
        }
    }

    #[test]
    fn every_kind_of_customer_message_is_kept_and_service_messages_are_not() {
        let f =
            |id: &str, size: u64| json!({"file_id": id, "file_unique_id": id, "file_size": size});
        let video = json!({"caption": "包裹到的时候就是这样", "video": {"width": 1280, "height": 720,
            "duration": 8, "mime_type": "video/mp4", "file_id": "BAAC", "file_unique_id": "v1", "file_size": 1_843_200}});
        let (text, files) = submitted(&private(video));
        assert_eq!(text, "包裹到的时候就是这样");
        assert_eq!(
            (files.len(), files[0].content_type.as_str()),
            (1, "video/mp4")
        );
        assert_eq!(files[0].name, "video-v1.mp4");
        let note = json!({"video_note": {"length": 240, "duration": 5, "file_id": "n1", "file_unique_id": "n1", "file_size": 100}});
        assert_eq!(submitted(&private(note)).1[0].name, "video-note-n1.mp4");
        let mut audio = json!({"duration": 60, "title": "录音", "file_name": "留言.m4a", "mime_type": "audio/mp4"});
        audio
            .as_object_mut()
            .unwrap()
            .extend(f("a1", 5000).as_object().unwrap().clone());
        let (_, files) = submitted(&private(json!({ "audio": audio })));
        assert_eq!(
            (files[0].name.as_str(), files[0].content_type.as_str()),
            ("留言.m4a", "audio/mp4")
        );
        let mut gif = json!({"width": 200, "height": 200, "duration": 2});
        gif.as_object_mut()
            .unwrap()
            .extend(f("g1", 900).as_object().unwrap().clone());
        // Telegram sends an animation as a document too (for old clients).
        let both = json!({ "animation": gif, "document": f("g1", 900) });
        assert_eq!(submitted(&private(both)).1.len(), 1);

        let location = json!({"location": {"latitude": 31.2304, "longitude": 121.4737}});
        let (text, files) = submitted(&private(location));
        assert!(files.is_empty());
        assert!(
            text.starts_with("[location] 31.230400, 121.473700 https://"),
            "{text}"
        );
        let venue = json!({"venue": {"location": {"latitude": 22.5, "longitude": 114.1},
            "title": "自提点", "address": "深圳市南山区"}, "location": {"latitude": 22.5, "longitude": 114.1}});
        let (text, _) = submitted(&private(venue));
        assert!(text.starts_with("[place] 自提点 · 深圳市南山区"), "{text}");
        let contact = json!({"contact": {"phone_number": "+8613800000000", "first_name": "王", "last_name": "芳"}});
        assert_eq!(
            submitted(&private(contact)).0,
            "[contact] 王 芳 +8613800000000"
        );

        // A member joining a group is not something a customer said.
        let joined = update(
            "message",
            group_msg(
                "",
                json!({"new_chat_members": [
            {"id": 9, "is_bot": false, "first_name": "新人"}]}),
            ),
        );
        let mut m = serde_json::to_value(&joined).unwrap();
        m["message"].as_object_mut().unwrap().remove("text");
        let joined: Update = serde_json::from_str(&m.to_string()).unwrap();
        assert!(matches!(
            action(&joined, &me(), GroupPolicy::All, true),
            Action::Ignore(_)
        ));
    }
}
