//! Chinese word segmentation for the lexical index: jieba, with a smaller dictionary.
//!
//! jieba's full dictionary (349,000 words) costs about 25 MB of memory in every daemon. The
//! bundled `data/jieba-dict.txt` keeps the 79,746 words its corpus saw at least 20 times
//! (jieba-rs 0.11's `dict.txt` filtered with `awk '$2 >= 20'`; MIT, as jieba-rs); rarer words
//! fall back to jieba's HMM and, in the index, to the character n-gram field. Customer
//! service vocabulary (到货, 退货, 快递, 人工...) is all in it.

use std::sync::OnceLock;

use jieba_rs::{Jieba, TokenizeMode};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

const DICTIONARY: &str = include_str!("data/jieba-dict.txt");

/// The one segmenter of the process; the dictionary loads on first use (~40 ms).
fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(|| {
        let mut jieba = Jieba::empty();
        jieba
            .load_dict(&mut DICTIONARY.as_bytes())
            .expect("the bundled dictionary parses");
        jieba
    })
}

/// A tantivy tokenizer: jieba in search mode (long words also yield their shorter words),
/// with HMM for unknown words. Cheap to clone: the segmenter is shared.
#[derive(Clone, Default)]
pub struct JiebaTokenizer;

pub struct JiebaTokens {
    tokens: std::vec::IntoIter<Token>,
    token: Token,
}

impl Tokenizer for JiebaTokenizer {
    type TokenStream<'a> = JiebaTokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> JiebaTokens {
        let tokens: Vec<Token> = jieba()
            .tokenize(text, TokenizeMode::Search, true)
            .into_iter()
            .map(|t| {
                let from = t.word.as_ptr() as usize - text.as_ptr() as usize;
                Token {
                    offset_from: from,
                    offset_to: from + t.word.len(),
                    position: t.start,
                    text: t.word.to_owned(),
                    position_length: t.end - t.start,
                }
            })
            .collect();
        JiebaTokens {
            tokens: tokens.into_iter(),
            token: Token::default(),
        }
    }
}

impl TokenStream for JiebaTokens {
    fn advance(&mut self) -> bool {
        match self.tokens.next() {
            Some(t) => {
                self.token = t;
                true
            }
            None => false,
        }
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut tokenizer = JiebaTokenizer;
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    #[test]
    fn shop_vocabulary_segments() {
        let got = words("我想退货，快递什么时候到货？转人工客服");
        for w in ["退货", "快递", "什么", "时候", "到货", "人工", "客服"] {
            assert!(got.iter().any(|g| g == w), "{w} not in {got:?}");
        }
    }

    #[test]
    fn offsets_point_into_the_text() {
        let text = "hello 多少天能到货";
        let mut tokenizer = JiebaTokenizer;
        let mut stream = tokenizer.token_stream(text);
        while stream.advance() {
            let t = stream.token();
            assert_eq!(&text[t.offset_from..t.offset_to], t.text);
        }
    }
}
