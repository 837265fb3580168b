//! One raw mail, parsed into what Switchboard needs: who, threading headers, the new words
//! for the bot, the whole text for people, files, and whether it is automated or a bounce.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};

/// A parsed inbound mail.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// Message-ID without angle brackets; made up from the content when missing.
    pub message_id: String,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// Sender address, lower case; `unknown:{message-id}` when the mail has none that can be
    /// replied to (each such mail is its own customer, never one shared "nobody"). Display
    /// name (for a mail without an address: what its From said, marked).
    pub from: String,
    pub from_name: Option<String>,
    pub subject: String,
    pub date_ms: Option<i64>,
    /// What the customer wrote this time: quoted history and signature removed.
    pub new_text: String,
    /// The whole text body (text/plain, or the HTML converted to text).
    pub full_text: String,
    /// The text was longer than [`MAX_TEXT_BYTES`] and was cut (the whole mail is kept as
    /// `original.eml`).
    pub cut: bool,
    /// The HTML body, sanitised (no scripts, styles, event handlers or remote content), for
    /// people to see it as sent.
    pub html: Option<String>,
    /// Files: name, content type, bytes.
    pub files: Vec<(String, String, Vec<u8>)>,
    /// Why this mail must not be answered automatically, if it must not.
    pub automated: Option<String>,
    /// A delivery status notification about one of our mails: its Message-ID and the reason.
    pub bounce: Option<(String, String)>,
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![clean_id(t)],
        HeaderValue::TextList(l) => l.iter().map(|t| clean_id(t)).collect(),
        _ => vec![],
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

/// A Message-ID as we key it: no angle brackets or whitespace.
pub fn clean_id(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

/// The longest text a mail is stored with: the cap of every channel, less room for the note
/// saying it was cut; the rest stays in
/// `original.eml`.
pub const MAX_TEXT_BYTES: usize = switchboard_channel::MAX_TEXT_BYTES - 256;

/// `text` cut to [`MAX_TEXT_BYTES`] at a character boundary, with a note; whether it was.
fn capped(text: String) -> (String, bool) {
    if text.len() <= MAX_TEXT_BYTES {
        return (text, false);
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = format!(
        "{}\n\n[cut: the mail's text is {} bytes; all of it is in original.eml]",
        &text[..end],
        text.len()
    );
    (cut, true)
}

/// `raw` with a blank line put where its headers stop, when a line that is neither a header
/// (`Name: value`) nor a folded continuation comes before any blank line; `None` when the
/// mail is well formed.
fn repair_separator(raw: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    let mut first = true;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return None;
        }
        let folded = !first && matches!(content[0], b' ' | b'\t');
        let header = content
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|colon| {
                colon > 0 && content[..colon].iter().all(|b| (33..=126).contains(b))
            });
        // mbox's "From " line may lead.
        let mbox = first && content.starts_with(b"From ");
        if !(folded || header || mbox) {
            if first {
                return None;
            }
            let mut out = Vec::with_capacity(raw.len() + 2);
            out.extend_from_slice(&raw[..at]);
            out.extend_from_slice(if line.ends_with(b"\r\n") {
                b"\r\n"
            } else {
                b"\n"
            });
            out.extend_from_slice(&raw[at..]);
            return Some(out);
        }
        first = false;
        at += line.len();
    }
    None
}

/// Names Big5 goes by that the MIME parser does not know (`cp950` is Microsoft's; Python's
/// email package writes `big5_tw`).
const BIG5_ALIASES: [&[u8]; 5] = [b"cp950", b"ms950", b"x-big5", b"big5_tw", b"big5-tw"];

/// `raw` with every Big5 alias in an encoded word (`=?cp950?B?...?=`) or a `charset=`
/// parameter written `big5`; `None` when there is none.
fn big5_aliases(raw: &[u8]) -> Option<Vec<u8>> {
    let lower = raw.to_ascii_lowercase();
    let mut out = Vec::new();
    let (mut copied, mut i) = (0, 0);
    while i < raw.len() {
        let rest = &lower[i..];
        let prefix = [&b"=?"[..], b"charset=\"", b"charset="]
            .into_iter()
            .find(|p| rest.starts_with(p))
            .map_or(0, <[u8]>::len);
        if prefix == 0 {
            i += 1;
            continue;
        }
        let at = i + prefix;
        let alias = BIG5_ALIASES.iter().find(|a| {
            lower[at..].starts_with(a)
                && !lower
                    .get(at + a.len())
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        });
        match alias {
            Some(a) => {
                out.extend_from_slice(&raw[copied..at]);
                out.extend_from_slice(b"big5");
                copied = at + a.len();
                i = copied;
            }
            None => i = at,
        }
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&raw[copied..]);
    Some(out)
}

/// Parses `raw`; `None` when it is not a mail at all.
pub fn parse(raw: &[u8]) -> Option<Mail> {
    // A body with no blank line after the headers: read it as a body (as Python's email
    // package does), not as broken headers to throw away.
    let repaired = repair_separator(raw);
    let raw = repaired.as_deref().unwrap_or(raw);
    let relabelled = big5_aliases(raw);
    let raw = relabelled.as_deref().unwrap_or(raw);
    let m = MessageParser::default().parse(raw)?;
    let from = m.from().and_then(|a| a.first());
    let written = from.and_then(|a| a.address()).unwrap_or_default().trim();
    let message_id = match m.message_id() {
        Some(id) if !clean_id(id).is_empty() => clean_id(id),
        // Stable for the same bytes, so a redelivery is still recognised.
        _ => {
            use sha2::Digest;
            format!(
                "{}@no-message-id.invalid",
                &hex::encode(sha2::Sha256::digest(raw))[..32]
            )
        }
    };
    let own_text = m
        .body_text(0)
        .map(|t| t.replace("\r\n", "\n"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    // Forwarded mails (`message/rfc822`, "forward as attachment"): their text is shown to
    // people after the mail's own; it is what the customer asks about when they wrote nothing.
    let forwarded: Vec<String> = m
        .attachments()
        .filter_map(|p| p.message())
        .map(|inner| {
            let text = inner.body_text(0).unwrap_or_default().replace("\r\n", "\n");
            format!(
                "[forwarded] {}\n{}",
                inner.subject().unwrap_or_default().trim(),
                text.trim()
            )
        })
        .collect();
    let full_text = std::iter::once(own_text.clone())
        .chain(forwarded.iter().cloned())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    let new_text = match strip_quotes(&own_text) {
        t if !t.trim().is_empty() => t,
        _ if !own_text.is_empty() => own_text.clone(),
        _ => full_text.clone(),
    };
    // Only a real HTML part (for plain mail, mail-parser would make HTML from the text).
    let html = match m.html_part(0) {
        Some(part) if part.is_text_html() => m.body_html(0).map(|h| sanitize(&h)),
        _ => None,
    };
    let mut files = Vec::new();
    for part in m.attachments() {
        if part.is_message() {
            // Kept whole, as a mail agents can open.
            let name = part
                .attachment_name()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("forwarded-{}.eml", files.len() + 1));
            files.push((name, "message/rfc822".to_owned(), part.contents().to_vec()));
            continue;
        }
        let content_type = part
            .content_type()
            .map(|c| match c.subtype() {
                Some(s) => format!("{}/{}", c.ctype(), s),
                None => c.ctype().to_owned(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let name = part
            .attachment_name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("attachment-{}", files.len() + 1));
        files.push((name, content_type, part.contents().to_vec()));
    }
    let (address, from_name) = match reply_address(written) {
        Some(a) => (a, from.and_then(|a| a.name()).map(str::to_owned)),
        None => {
            let said = from.and_then(|a| a.name()).unwrap_or(written).trim();
            let said = if said.is_empty() { "no sender" } else { said };
            (
                format!("unknown:{message_id}"),
                Some(format!("{said} (no valid address)")),
            )
        }
    };
    let (new_text, cut_new) = capped(new_text);
    let (full_text, cut_full) = capped(full_text);
    let mut mail = Mail {
        in_reply_to: ids(m.in_reply_to()),
        references: ids(m.references()),
        from_name,
        subject: m.subject().unwrap_or_default().trim().to_owned(),
        date_ms: m.date().map(|d| d.to_timestamp() * 1000),
        automated: automated(&m, &address),
        bounce: bounce(&m),
        from: address,
        message_id,
        new_text,
        full_text,
        html,
        files,
        cut: cut_new || cut_full,
    };
    if mail.bounce.is_some() {
        mail.automated = Some("delivery status notification".into());
    }
    Some(mail)
}

/// Safe HTML: formatting and links kept; scripts, styles, forms, event handlers and images
/// from elsewhere (tracking pixels) dropped.
fn sanitize(html: &str) -> String {
    ammonia::Builder::default()
        .url_schemes(["http", "https", "mailto"].into())
        .link_rel(Some("noopener noreferrer nofollow"))
        .rm_tags(["img"])
        .clean(html)
        .to_string()
}

/// RFC 3834 and common practice: mail that must not get an automatic answer.
fn automated(m: &mail_parser::Message<'_>, from: &str) -> Option<String> {
    let header = |name: &str| m.header_raw(name).map(|v| v.trim().to_ascii_lowercase());
    if let Some(v) = header("Auto-Submitted")
        && v != "no"
    {
        return Some(format!("Auto-Submitted: {v}"));
    }
    if let Some(v) = header("Precedence")
        && matches!(v.as_str(), "bulk" | "list" | "junk" | "auto_reply")
    {
        return Some(format!("Precedence: {v}"));
    }
    if m.header_raw("List-Id").is_some() {
        return Some("mailing list (List-Id)".into());
    }
    // A newsletter may carry only the unsubscribe headers.
    if m.header_raw("List-Unsubscribe").is_some() {
        return Some("newsletter (List-Unsubscribe)".into());
    }
    if header("X-Autoreply").is_some() || header("X-Autorespond").is_some() {
        return Some("auto-reply header".into());
    }
    // Exchange and Outlook out-of-office replies.
    if header("X-Auto-Response-Suppress").is_some_and(|v| v.contains("all") || v.contains("oof"))
        || m.header_raw("X-MS-Exchange-Inbox-Rules-Loop").is_some()
    {
        return Some("out-of-office reply (Exchange)".into());
    }
    let local = from.split('@').next().unwrap_or_default();
    let no_reply = local.replace(['-', '_', '.'], "");
    if matches!(
        no_reply.as_str(),
        "mailerdaemon" | "postmaster" | "noreply" | "donotreply" | ""
    ) {
        return Some(format!("sender {from}"));
    }
    None
}

/// A DSN (multipart/report; report-type=delivery-status) names the mail it is about in the
/// returned headers; the first Diagnostic-Code or Status says why.
/// The address a reply can go to, from what a From header gave: comments dropped, spaces in
/// the domain closed up (RFC 5322's obsolete syntax), a display name that leaked into the
/// local part left out, the first address of several; `None` when nothing valid is left.
pub fn reply_address(written: &str) -> Option<String> {
    let mut plain = String::with_capacity(written.len());
    let mut depth = 0usize;
    for c in written.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let candidate = if plain.matches('@').count() > 1 {
        plain
            .split_whitespace()
            .find(|t| t.contains('@'))?
            .to_owned()
    } else {
        plain
    };
    let (local, domain) = candidate.rsplit_once('@')?;
    let local = local.split_whitespace().last()?;
    let domain: String = domain.split_whitespace().collect();
    let address = format!("{local}@{domain}").to_lowercase();
    address.parse::<lettre::Address>().ok()?;
    Some(address)
}

fn bounce(m: &mail_parser::Message<'_>) -> Option<(String, String)> {
    let report = m.root_part().content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("multipart")
            && c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && c.attribute("report-type")
                .is_some_and(|r| r.eq_ignore_ascii_case("delivery-status"))
    });
    if !report {
        return None;
    }
    let mut original = None;
    let mut reason = String::from("the mail could not be delivered");
    for part in m.parts.iter() {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or_default().to_ascii_lowercase();
        match (ct.ctype().to_ascii_lowercase().as_str(), sub.as_str()) {
            ("message", "delivery-status") => {
                let text = String::from_utf8_lossy(part.contents());
                for line in text.lines() {
                    let lower = line.to_ascii_lowercase();
                    if lower.starts_with("diagnostic-code:") || lower.starts_with("status:") {
                        reason = line.trim().to_owned();
                        if lower.starts_with("diagnostic-code:") {
                            break;
                        }
                    }
                }
            }
            ("message" | "text", "rfc822" | "rfc822-headers") => {
                let headers = match part.message() {
                    Some(inner) => inner.message_id().map(clean_id),
                    None => find_header(&String::from_utf8_lossy(part.contents()), "message-id")
                        .map(|v| clean_id(&v)),
                };
                if original.is_none() {
                    original = headers;
                }
            }
            _ => {}
        }
    }
    original.map(|id| (id, reason))
}

fn find_header(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The new part of a reply: stops at the quoted history ("On ... wrote:", "在 ... 写道：",
/// "-----Original Message-----", an Outlook header block, `>` lines) and at a signature
/// ("-- " line).
pub fn strip_quotes(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let lower = t.to_lowercase();
        let attribution = (lower.starts_with("on ") && lower.ends_with("wrote:"))
            || (t.starts_with('在') && (t.ends_with("写道：") || t.ends_with("写道:")))
            || (lower.starts_with("le ") && lower.ends_with("a écrit :"))
            || (lower.starts_with("am ") && lower.ends_with("schrieb:"));
        // "On Mon, ... <x@y>\nwrote:" split over two lines.
        let split_attribution = lower.starts_with("on ")
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("wrote:"));
        let original = lower.contains("original message") && t.starts_with('-');
        let outlook =
            (lower.starts_with("from:") || t.starts_with("发件人:") || t.starts_with("发件人："))
                && lines[i + 1..].iter().take(4).any(|n| {
                    let n = n.trim().to_lowercase();
                    n.starts_with("sent:")
                        || n.starts_with("date:")
                        || n.starts_with("发送时间")
                        || n.starts_with("subject:")
                        || n.starts_with("主题")
                });
        if attribution || split_attribution || original || outlook || *line == "-- " || t == "--" {
            break;
        }
        if t.starts_with('>') {
            continue;
        }
        out.push(line);
    }
    out.join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_address_is_what_a_mangled_from_means() {
        let table = [
            ("bob@example.com", Some("bob@example.com")),
            ("Bob@Example.COM", Some("bob@example.com")),
            ("Big Bug bb@bug.com", Some("bb@bug.com")),
            (
                "tim@powerupdev.com concierge@powerupdev.com",
                Some("tim@powerupdev.com"),
            ),
            (
                "jdoe@machine(comment).  example",
                Some("jdoe@machine.example"),
            ),
            ("jdoe@machine.  example", Some("jdoe@machine.example")),
            ("foo", None),
            ("", None),
            ("@example.com", None),
            ("bob@", None),
        ];
        for (written, want) in table {
            assert_eq!(reply_address(written).as_deref(), want, "{written:?}");
        }
    }

    #[test]
    fn mail_without_a_valid_sender_is_its_own_customer() {
        let mail = |id: &str| {
            format!("From: foo\r\nSubject: hi\r\nMessage-ID: <{id}@x.test>\r\n\r\nHello\r\n")
        };
        let a = parse(mail("a").as_bytes()).unwrap();
        let b = parse(mail("b").as_bytes()).unwrap();
        assert_eq!(a.from, "unknown:a@x.test");
        assert_eq!(b.from, "unknown:b@x.test");
        assert_eq!(a.from_name.as_deref(), Some("foo (no valid address)"));
        let mangled =
            parse(b"From: Big Bug bb@bug.com\r\nMessage-ID: <m@x>\r\n\r\nHi\r\n").unwrap();
        assert_eq!(mangled.from, "bb@bug.com");
    }

    #[test]
    fn quoted_history_and_signatures_are_cut() {
        let cases = [
            (
                "Thanks, that worked!\n\nOn Tue, 3 Nov 2026 at 10:00, Support <s@x.test> wrote:\n> Try this\n",
                "Thanks, that worked!",
            ),
            ("Still broken.\n\n-- \nAnn Smith\nACME", "Still broken."),
            (
                "好的，谢谢\n\n在 2026年11月3日 10:00，客服 <s@x.test> 写道：\n> 请重试",
                "好的，谢谢",
            ),
            (
                "See below\n-----Original Message-----\nFrom: x\n",
                "See below",
            ),
            (
                "Yes please\n\nFrom: Support <s@x.test>\nSent: Monday\nSubject: Re: order\n\nold text",
                "Yes please",
            ),
            (
                "> quoted first\nmy answer inline\n> more quote",
                "my answer inline",
            ),
            (
                "On my way home I saw the parcel.",
                "On my way home I saw the parcel.",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(strip_quotes(input), want, "{input:?}");
        }
    }

    #[test]
    fn chinese_charsets_and_encoded_words() {
        // "订单在哪里" in GBK, quoted-printable; subject as an RFC 2047 GB2312 base64 word.
        let gbk = b"From: =?GB2312?B?1cXI/Q==?= <zhang@example.cn>\r\n\
Subject: =?GB2312?B?tqm1pc7KzOI=?=\r\n\
Message-ID: <gbk-1@example.cn>\r\n\
Content-Type: text/plain; charset=GBK\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n\
=B6=A9=B5=A5=D4=DA=C4=C4=C0=EF\r\n";
        let m = parse(gbk).unwrap();
        assert_eq!(m.subject, "订单问题");
        assert_eq!(m.from_name.as_deref(), Some("张三"));
        assert_eq!(m.new_text, "订单在哪里");
        assert_eq!(m.message_id, "gbk-1@example.cn");

        // The same bytes declared as the other GB charsets decode the same.
        for charset in ["GB2312", "GB18030", "gbk"] {
            // (The message is all ASCII: quoted-printable body, encoded-word headers.)
            let raw = std::str::from_utf8(gbk)
                .unwrap()
                .replace("charset=GBK", &format!("charset={charset}"));
            let m = parse(raw.as_bytes()).unwrap();
            assert_eq!(m.new_text, "订单在哪里", "{charset}");
        }

        // "退貨" in Big5.
        let big5 = b"From: chen@example.tw\r\nSubject: =?Big5?Q?=B0h=B3f?=\r\nContent-Type: text/plain; charset=Big5\r\n\r\n\xb0\x68\xb3\x66\r\n";
        let m = parse(big5).unwrap();
        assert_eq!(m.subject, "退貨");
        assert_eq!(m.new_text, "退貨");
        assert!(m.message_id.ends_with("@no-message-id.invalid"));
        assert_eq!(parse(big5).unwrap().message_id, m.message_id, "stable");
    }

    #[test]
    fn html_only_automated_and_bounces() {
        let html = b"From: a@x.test\r\nSubject: hi\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Where is <b>my order</b>?</p><script>x()</script>\r\n";
        let m = parse(html).unwrap();
        assert!(
            m.full_text.contains("Where is my order?"),
            "{:?}",
            m.full_text
        );
        assert!(!m.full_text.contains("x()"), "{:?}", m.full_text);
        let kept = m.html.unwrap();
        assert!(
            kept.contains("<b>my order</b>") && !kept.contains("script"),
            "{kept}"
        );
        assert_eq!(m.automated, None);

        let ooo = b"From: a@x.test\r\nAuto-Submitted: auto-replied\r\nSubject: Out of office\r\n\r\nAway\r\n";
        assert_eq!(
            parse(ooo).unwrap().automated.as_deref(),
            Some("Auto-Submitted: auto-replied")
        );
        let list = b"From: news@x.test\r\nList-Id: <news.x.test>\r\n\r\nNews\r\n";
        assert!(parse(list).unwrap().automated.is_some());
        let bulk = b"From: a@x.test\r\nPrecedence: bulk\r\n\r\nx\r\n";
        assert!(parse(bulk).unwrap().automated.is_some());

        let dsn = b"From: MAILER-DAEMON@mx.test\r\nTo: support@shop.test\r\nSubject: Undelivered Mail\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nYour mail could not be delivered.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\nFinal-Recipient: rfc822; ann@gone.test\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <sb-7-3@shop.test>\r\nSubject: Re: order\r\n\
--B--\r\n";
        let m = parse(dsn).unwrap();
        assert_eq!(
            m.bounce,
            Some((
                "sb-7-3@shop.test".into(),
                "Diagnostic-Code: smtp; 550 5.1.1 user unknown".into()
            ))
        );
        assert!(m.automated.is_some());
    }

    #[test]
    fn forwarded_mails_are_kept_and_read() {
        // "Forward as attachment", as Outlook and Gmail send it.
        let attached = "From: 王芳 <wang@example.test>\r\nTo: help@shop.test\r\n\
            Subject: Fwd: 订单 98765\r\nMessage-ID: <f1@example.test>\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
            --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n看看我收到的确认邮件，被扣了两次钱。\r\n\
            --b1\r\nContent-Type: message/rfc822\r\n\
            Content-Disposition: attachment; filename=\"order-98765.eml\"\r\n\r\n\
            From: orders@shop.test\r\nSubject: Order 98765\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
            Order 98765: 2 x Blue Kettle, charged EUR 59.98.\r\n\
            --b1--\r\n";
        let m = parse(attached.as_bytes()).unwrap();
        assert_eq!(m.new_text, "看看我收到的确认邮件，被扣了两次钱。");
        assert!(
            m.full_text
                .contains("[forwarded] Order 98765\nOrder 98765: 2 x Blue Kettle"),
            "{}",
            m.full_text
        );
        assert_eq!(m.files.len(), 1);
        assert_eq!(
            (m.files[0].0.as_str(), m.files[0].1.as_str()),
            ("order-98765.eml", "message/rfc822")
        );
        assert!(String::from_utf8_lossy(&m.files[0].2).contains("charged EUR 59.98"));

        // The whole body is the forwarded mail (GroupWise): its text is the question.
        let whole = "From: li@example.test\r\nSubject: Fwd: Delivery problem\r\n\
            Message-ID: <f2@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n\
            From: courier@example.test\r\nSubject: Delivery problem\r\n\r\n\
            The courier left my parcel 4711 in the rain.\r\n";
        let m = parse(whole.as_bytes()).unwrap();
        assert!(
            m.new_text.contains("parcel 4711 in the rain"),
            "{}",
            m.new_text
        );
        assert_eq!(m.files.len(), 1);
    }

    #[test]
    fn a_body_without_the_blank_line_after_the_headers_is_kept() {
        let raw = "From: zhao@example.test\nSubject: 有个问题\n我的快递三天没动了，怎么回事？\n还有一行\n";
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.subject, "有个问题");
        assert_eq!(m.new_text, "我的快递三天没动了，怎么回事？\n还有一行");
        // Well-formed mail, folded headers and an mbox line are left as they are.
        assert!(repair_separator(b"From: a@b\nSubject: x\n  folded\n\nbody\n").is_none());
        assert!(repair_separator(b"From a@b Mon Dec  7 2026\nFrom: a@b\n\nbody\n").is_none());
    }

    #[test]
    fn out_of_office_newsletters_and_no_reply_senders_are_automated() {
        let mail = |from: &str, header: &str| {
            format!(
                "From: {from}\r\n{header}Subject: Automatic reply: 订单\r\n\r\nI am out of the office until Monday. Where is my order?\r\n"
            )
        };
        for (from, header) in [
            (
                "away@example.org",
                "X-Auto-Response-Suppress: All\r\nX-MS-Exchange-Inbox-Rules-Loop: away@example.org\r\n",
            ),
            ("away@example.org", "Precedence: auto_reply\r\n"),
            (
                "news@example.org",
                "List-Unsubscribe: <mailto:unsub@example.org>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            ),
            ("Shop <do-not-reply@example.org>", ""),
            ("no_reply@example.org", ""),
        ] {
            let m = parse(mail(from, header).as_bytes()).unwrap();
            assert!(m.automated.is_some(), "{from} {header}");
        }
        let person = parse(mail("wang@example.org", "").as_bytes()).unwrap();
        assert_eq!(person.automated, None);
    }

    #[test]
    fn big5_under_any_of_its_names_is_decoded() {
        // 陳大文 in Big5, labelled as Windows, old Netscape and Python write it.
        for label in ["cp950", "x-big5", "big5_tw", "CP950"] {
            let raw = format!(
                "From: =?{label}?b?s6+kaqTl?= <chen@example.tw>\r\nSubject: =?{label}?B?s6+kaqTl?=\r\nContent-Type: text/plain; charset={label}\r\n\r\n"
            );
            let mut raw = raw.into_bytes();
            raw.extend_from_slice(b"\xb0\x68\xb3\x66\r\n");
            let m = parse(&raw).unwrap();
            assert_eq!(
                (
                    m.from_name.as_deref(),
                    m.subject.as_str(),
                    m.new_text.as_str()
                ),
                (Some("陳大文"), "陳大文", "退貨"),
                "{label}"
            );
        }
        // Words that only start like an alias are left alone.
        assert!(big5_aliases(b"Subject: =?cp9500?B?x?=\r\n").is_none());
    }

    #[test]
    fn a_huge_text_is_cut_and_says_so() {
        let body = "日志 line\n".repeat(20_000);
        let raw = format!("From: ops@example.test\r\nSubject: logs\r\n\r\n{body}");
        let m = parse(raw.as_bytes()).unwrap();
        assert!(m.cut);
        assert!(
            m.full_text.len() <= MAX_TEXT_BYTES + 200 && m.new_text.len() <= MAX_TEXT_BYTES + 200
        );
        assert!(
            m.full_text.ends_with("all of it is in original.eml]"),
            "{}",
            &m.full_text[m.full_text.len() - 80..]
        );
        assert!(!parse(b"From: a@b.test\r\n\r\nshort\r\n").unwrap().cut);
    }
}
