//! Light Markdown, as knowledge-base answers are written, rendered for each network.
//!
//! The subset: `**bold**`, `*italic*` or `_italic_`, `` `code` ``, `[label](https://url)`
//! (http, https and mailto links only), lines starting with `- ` or `* ` as bullets. Markers
//! work within one line. Anything else, including unmatched markers and `snake_case`, is text.
//! Renderers escape all text, so no input can inject markup into the output.

/// How an outbound text is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    /// Shown as is (agent replies): never interpreted.
    #[default]
    Plain,
    /// Light Markdown (bot answers from the knowledge base).
    Markdown,
}

impl TextFormat {
    pub fn is_plain(&self) -> bool {
        *self == TextFormat::Plain
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Text(String),
    Bold(Vec<Node>),
    Italic(Vec<Node>),
    Code(String),
    Link { label: Vec<Node>, url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub bullet: bool,
    pub nodes: Vec<Node>,
}

/// Parses light Markdown into lines of styled text.
pub fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            match trimmed
                .strip_prefix("- ")
                .or_else(|| trimmed.strip_prefix("* "))
            {
                Some(rest) => Line {
                    bullet: true,
                    nodes: inline(rest),
                },
                None => Line {
                    bullet: false,
                    nodes: inline(line),
                },
            }
        })
        .collect()
}

fn inline(s: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let prev = s[..i].chars().next_back();
        if let Some((node, used)) = styled(rest, prev) {
            if !text.is_empty() {
                nodes.push(Node::Text(std::mem::take(&mut text)));
            }
            nodes.push(node);
            i += used;
            continue;
        }
        let c = rest.chars().next().expect("i is on a char boundary");
        text.push(c);
        i += c.len_utf8();
    }
    if !text.is_empty() {
        nodes.push(Node::Text(text));
    }
    nodes
}

/// A styled span at the start of `s`, with the bytes it used.
fn styled(s: &str, prev: Option<char>) -> Option<(Node, usize)> {
    if let Some(body) = s.strip_prefix("**") {
        let end = body.find("**").filter(|&e| e > 0)?;
        let inner = &body[..end];
        if inner.starts_with(char::is_whitespace) || inner.ends_with(char::is_whitespace) {
            return None;
        }
        return Some((Node::Bold(inline(inner)), end + 4));
    }
    if let Some(body) = s.strip_prefix('`') {
        let end = body.find('`').filter(|&e| e > 0)?;
        return Some((Node::Code(body[..end].to_owned()), end + 2));
    }
    if s.starts_with('[') {
        let close = s.find("](")?;
        let url_end = s[close + 2..].find(')')? + close + 2;
        let url = &s[close + 2..url_end];
        let safe = ["https://", "http://", "mailto:"]
            .iter()
            .any(|p| url.starts_with(p))
            && !url.contains(char::is_whitespace);
        if !safe || close == 1 {
            return None;
        }
        let label = inline(&s[1..close]);
        return Some((
            Node::Link {
                label,
                url: url.to_owned(),
            },
            url_end + 1,
        ));
    }
    let marker = s.chars().next().filter(|c| *c == '*' || *c == '_')?;
    // `_` inside a word (snake_case) is not emphasis.
    if marker == '_' && prev.is_some_and(char::is_alphanumeric) {
        return None;
    }
    let body = &s[1..];
    if body.starts_with(char::is_whitespace) || body.starts_with(marker) {
        return None;
    }
    let end = body.find(marker).filter(|&e| e > 0)?;
    if body[..end].ends_with(char::is_whitespace) {
        return None;
    }
    if marker == '_' && body[end + 1..].starts_with(char::is_alphanumeric) {
        return None;
    }
    Some((Node::Italic(inline(&body[..end])), end + 2))
}

/// The text a customer should read where there is no formatting: markers removed, links as
/// `label (url)`, bullets as `•`.
pub fn to_plain(markdown: &str) -> String {
    render(markdown, &Plain)
}

/// Safe HTML: every text escaped, only `<b> <i> <code> <a href>` produced, lines joined by
/// `newline` (`"<br>"` for a web page, `"\n"` for Telegram's HTML mode).
pub fn to_html(markdown: &str, newline: &str) -> String {
    render(markdown, &Html { newline })
}

/// `text` as HTML text: `& < > "` escaped.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// One output syntax.
trait Syntax {
    fn text(&self, out: &mut String, text: &str);
    fn bold(&self, out: &mut String, inner: &str);
    fn italic(&self, out: &mut String, inner: &str);
    fn code(&self, out: &mut String, code: &str);
    fn link(&self, out: &mut String, label: &str, url: &str);
    fn bullet(&self) -> &str;
    fn newline(&self) -> &str;
}

fn render(markdown: &str, syntax: &dyn Syntax) -> String {
    let mut out = String::with_capacity(markdown.len() + 16);
    for (n, line) in parse(markdown).iter().enumerate() {
        if n > 0 {
            out.push_str(syntax.newline());
        }
        if line.bullet {
            out.push_str(syntax.bullet());
        }
        nodes(&line.nodes, syntax, &mut out);
    }
    out
}

fn nodes(list: &[Node], syntax: &dyn Syntax, out: &mut String) {
    for node in list {
        match node {
            Node::Text(t) => syntax.text(out, t),
            Node::Code(c) => syntax.code(out, c),
            Node::Bold(inner) | Node::Italic(inner) | Node::Link { label: inner, .. } => {
                let mut s = String::new();
                nodes(inner, syntax, &mut s);
                match node {
                    Node::Bold(_) => syntax.bold(out, &s),
                    Node::Italic(_) => syntax.italic(out, &s),
                    Node::Link { url, .. } => syntax.link(out, &s, url),
                    _ => unreachable!("matched above"),
                }
            }
        }
    }
}

struct Plain;

impl Syntax for Plain {
    fn text(&self, out: &mut String, text: &str) {
        out.push_str(text);
    }
    fn bold(&self, out: &mut String, inner: &str) {
        out.push_str(inner);
    }
    fn italic(&self, out: &mut String, inner: &str) {
        out.push_str(inner);
    }
    fn code(&self, out: &mut String, code: &str) {
        out.push_str(code);
    }
    fn link(&self, out: &mut String, label: &str, url: &str) {
        let bare = url.strip_prefix("mailto:").unwrap_or(url);
        if label == url || label == bare {
            out.push_str(bare);
        } else {
            out.push_str(&format!("{label} ({bare})"));
        }
    }
    fn bullet(&self) -> &str {
        "• "
    }
    fn newline(&self) -> &str {
        "\n"
    }
}

struct Html<'a> {
    newline: &'a str,
}

impl Syntax for Html<'_> {
    fn text(&self, out: &mut String, text: &str) {
        out.push_str(&escape_html(text));
    }
    fn bold(&self, out: &mut String, inner: &str) {
        out.push_str(&format!("<b>{inner}</b>"));
    }
    fn italic(&self, out: &mut String, inner: &str) {
        out.push_str(&format!("<i>{inner}</i>"));
    }
    fn code(&self, out: &mut String, code: &str) {
        out.push_str(&format!("<code>{}</code>", escape_html(code)));
    }
    fn link(&self, out: &mut String, label: &str, url: &str) {
        out.push_str(&format!("<a href=\"{}\">{label}</a>", escape_html(url)));
    }
    fn bullet(&self) -> &str {
        "• "
    }
    fn newline(&self) -> &str {
        self.newline
    }
}

fn utf16_units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Splits `text` into pieces of at most `limit` UTF-16 units, preferring to cut after a blank
/// line, then a line, then a sentence, then a space; a single word longer than the limit is
/// cut at a character boundary. Rendered Markdown is never longer than its source (markers are
/// dropped, and escapes count once after parsing), so the rendered parts fit too.
pub fn split(text: &str, limit: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text.trim_end();
    while utf16_units(rest) > limit {
        // The longest prefix within the limit, in bytes.
        let mut end = 0;
        let mut used = 0;
        for (i, c) in rest.char_indices() {
            used += c.len_utf16();
            if used > limit {
                break;
            }
            end = i + c.len_utf8();
        }
        let window = &rest[..end];
        let cut = [("\n\n", 2), ("\n", 1), (". ", 2), ("。", 3), (" ", 1)]
            .iter()
            .filter_map(|(sep, len)| window.rfind(sep).map(|i| i + len))
            .find(|&i| i > end / 2)
            .unwrap_or(end);
        let (head, tail) = rest.split_at(cut);
        if !head.trim().is_empty() {
            parts.push(head.trim_end());
        }
        rest = tail.trim_start_matches(['\n', ' ']);
    }
    if !rest.trim().is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subset_renders_as_plain_text_and_html() {
        let md = "**Returns**: within *30 days*, see [our policy](https://shop.example/returns).\n- keep the `order number`\n- 退货请联系 _客服_";
        assert_eq!(
            to_plain(md),
            "Returns: within 30 days, see our policy (https://shop.example/returns).\n• keep the order number\n• 退货请联系 客服"
        );
        assert_eq!(
            to_html(md, "<br>"),
            "<b>Returns</b>: within <i>30 days</i>, see <a href=\"https://shop.example/returns\">our policy</a>.<br>• keep the <code>order number</code><br>• 退货请联系 <i>客服</i>"
        );
    }

    #[test]
    fn unmatched_or_wordy_markers_stay_text() {
        for s in [
            "2 * 3 = 6",
            "a ** b",
            "file_name_here",
            "price *unclosed",
            "[label](javascript:alert(1))",
            "[](https://x.example)",
            "`",
            "** **",
        ] {
            assert_eq!(to_plain(s), s, "{s}");
        }
    }

    #[test]
    fn html_escapes_everything_it_did_not_make() {
        let md = "<script>alert(\"x\")</script> & **<b>** [a<b](https://x.example/?q=\"><img>)";
        let html = to_html(md, "\n");
        assert!(
            !html.contains("<script>") && !html.contains("<img>"),
            "{html}"
        );
        assert_eq!(
            html,
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; <b>&lt;b&gt;</b> <a href=\"https://x.example/?q=&quot;&gt;&lt;img&gt;\">a&lt;b</a>"
        );
    }

    #[test]
    fn nesting_and_mail_links() {
        assert_eq!(
            to_html("**bold and *italic* inside**", "\n"),
            "<b>bold and <i>italic</i> inside</b>"
        );
        assert_eq!(
            to_plain(
                "[mail us](mailto:help@shop.example) or [help@shop.example](mailto:help@shop.example)"
            ),
            "mail us (help@shop.example) or help@shop.example"
        );
    }

    #[test]
    fn long_texts_split_on_boundaries_within_the_limit() {
        let para = "word ".repeat(300); // 1,500 characters
        let text = format!("{para}\n\n{para}\n\n{para}\n\n{para}");
        let parts = split(&text, 4096);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| utf16_units(p) <= 4096));
        assert!(parts[0].ends_with("word"), "cut at a paragraph end");
        let joined: String = parts.join(" ");
        assert_eq!(joined.split_whitespace().count(), 1200, "no word lost");

        // One unbroken run is cut hard; astral characters count two units.
        let emoji = "😀".repeat(3000);
        let parts = split(&emoji, 4096);
        assert_eq!(parts.len(), 2);
        assert_eq!(utf16_units(parts[0]), 4096);
        assert_eq!(parts.concat(), emoji);

        // Sentences when there are no lines.
        let sentences = "This is a sentence. ".repeat(400);
        let parts = split(&sentences, 1000);
        assert!(
            parts.iter().all(|p| p.ends_with('.')),
            "{:?}",
            &parts[0][..50]
        );
        assert!(split("  \n ", 10).is_empty());
    }
}
