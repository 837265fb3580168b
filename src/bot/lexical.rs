//! Lexical retrieval: tantivy BM25 over every question variant, in memory.
//!
//! Three fields per variant: English words (lower-cased, stop words removed, stemmed), Chinese
//! words (jieba) and Chinese character 1–2-grams. jieba mis-segments short questions
//! (多少天能到货 → 多少/天能/到货), so a Chinese query searches both Chinese fields. Queries are
//! analysed with the field's own analyser and run as an OR of terms: tantivy's `QueryParser`
//! would turn unspaced Chinese into one phrase and find nothing.
//!
//! Scores are made comparable across queries by dividing an entry's best BM25 by the query's
//! *attainable* score (the sum of its terms' idf, which is what a variant containing every
//! term once, at average length, scores). A query whose words the knowledge base has never
//! seen stays low, which is what lets lexical-only matching hand off at all.

use std::collections::HashMap;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    Language, LowerCaser, NgramTokenizer, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, Searcher, TantivyDocument, Term};

use super::text::has_cjk;

#[derive(Debug, thiserror::Error)]
#[error("lexical index: {0}")]
pub struct LexicalError(#[from] tantivy::TantivyError);

pub struct Lexical {
    index: Index,
    reader: IndexReader,
    en: Field,
    zh: Field,
    zh_ng: Field,
}

fn text_field(tokenizer: &str) -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer)
            .set_index_option(IndexRecordOption::WithFreqs),
    )
}

fn jieba() -> TextAnalyzer {
    TextAnalyzer::builder(super::zh::JiebaTokenizer)
        .filter(LowerCaser)
        .build()
}

impl Lexical {
    /// Indexes `(entry, question)` pairs. Entry numbers are the caller's.
    pub fn build<'a>(
        variants: impl IntoIterator<Item = (u32, &'a str)>,
    ) -> Result<Lexical, LexicalError> {
        let mut sb = Schema::builder();
        let entry = sb.add_u64_field("entry", FAST);
        let variant = sb.add_u64_field("variant", FAST);
        let en = sb.add_text_field("en", text_field("en_stem"));
        let zh = sb.add_text_field("zh", text_field("jieba"));
        let zh_ng = sb.add_text_field("zh_ng", text_field("zh_ngram"));
        let index = Index::create_in_ram(sb.build());
        let en_stem = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(StopWordFilter::new(Language::English).expect("English stop words"))
            .filter(Stemmer::new(Language::English))
            .build();
        index.tokenizers().register("en_stem", en_stem);
        index.tokenizers().register("jieba", jieba());
        index.tokenizers().register(
            "zh_ngram",
            TextAnalyzer::builder(NgramTokenizer::new(1, 2, false)?)
                .filter(LowerCaser)
                .build(),
        );
        let mut writer = index.writer_with_num_threads(1, 64 << 20)?;
        for (v, (n, text)) in variants.into_iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_u64(entry, u64::from(n));
            doc.add_u64(variant, v as u64);
            doc.add_text(en, text);
            if has_cjk(text) {
                let folded = simplified(text);
                doc.add_text(zh, &folded);
                doc.add_text(zh_ng, &folded);
            }
            writer.add_document(doc)?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(Lexical {
            index,
            reader,
            en,
            zh,
            zh_ng,
        })
    }

    fn terms(&self, field: Field, text: &str) -> Result<Vec<Term>, LexicalError> {
        let mut terms: Vec<Term> = Vec::new();
        self.index
            .tokenizer_for_field(field)?
            .token_stream(text)
            .process(&mut |t| {
                let term = Term::from_field_text(field, &t.text);
                if !t.text.trim().is_empty() && !terms.contains(&term) {
                    terms.push(term);
                }
            });
        Ok(terms)
    }

    /// The best variant per entry, as a share of what the query could score: at most
    /// `limit` entries, best first.
    pub fn score(&self, text: &str, limit: usize) -> Result<Vec<(u32, f32)>, LexicalError> {
        self.score_without(text, limit, &|_| false)
    }

    /// [`Lexical::score`] as if the variants (numbered in the order indexed) for which `skip`
    /// holds were not there: calibration holds questions out this way.
    pub fn score_without(
        &self,
        text: &str,
        limit: usize,
        skip: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<(u32, f32)>, LexicalError> {
        let (fields, text): (&[Field], _) = if has_cjk(text) {
            (&[self.zh, self.zh_ng], simplified(text))
        } else {
            (&[self.en], text.to_owned())
        };
        let searcher = self.reader.searcher();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut attainable = 0.0f32;
        for &field in fields {
            for term in self.terms(field, &text)? {
                attainable += idf(&searcher, &term)?;
                clauses.push((
                    Occur::Should,
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                ));
            }
        }
        if clauses.is_empty() || attainable <= 0.0 {
            return Ok(Vec::new());
        }
        let query = BooleanQuery::new(clauses);
        // Variants per entry vary; fetch enough hits to see `limit` distinct entries.
        let hits = searcher.search(
            &query,
            &TopDocs::with_limit(limit * 8 + 32).order_by_score(),
        )?;
        let mut best: HashMap<u32, f32> = HashMap::new();
        let column = |name: &str| -> Result<Vec<_>, LexicalError> {
            Ok(searcher
                .segment_readers()
                .iter()
                .map(|s| s.fast_fields().u64(name))
                .collect::<Result<_, _>>()?)
        };
        let (entries, variants) = (column("entry")?, column("variant")?);
        for (score, addr) in hits {
            let seg = addr.segment_ord as usize;
            let Some(entry) = entries[seg].first(addr.doc_id) else {
                continue;
            };
            if variants[seg]
                .first(addr.doc_id)
                .is_some_and(|v| skip(v as usize))
            {
                continue;
            }
            let slot = best.entry(entry as u32).or_insert(0.0);
            *slot = slot.max(score / attainable);
        }
        let mut out: Vec<(u32, f32)> = best.into_iter().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(limit);
        Ok(out)
    }
}

/// Chinese in Simplified characters: a question written in Traditional (請問怎麼註銷帳號)
/// meets the same words as its Simplified twin, in the index and in the query alike, and
/// jieba's Simplified dictionary segments it.
fn simplified(text: &str) -> String {
    text.chars().map(super::zh::simplified).collect()
}

/// BM25's idf, as tantivy computes it. A word no question contains counts as a common
/// word (in a quarter of the questions): it lowers the score, as an unmatched part of the
/// message should, without letting every unknown word sink a small knowledge base.
fn idf(searcher: &Searcher, term: &Term) -> Result<f32, LexicalError> {
    let n = searcher.num_docs() as f32;
    let df = match searcher.doc_freq(term)? {
        0 => n / 4.0,
        df => df as f32,
    };
    Ok((1.0 + (n - df + 0.5) / (df + 0.5)).ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Lexical {
        Lexical::build([
            (0, "多少天能到货"),
            (0, "How long does delivery take?"),
            (1, "怎么退货"),
            (1, "How do I return an item?"),
            (2, "如何修改收货地址"),
            (2, "How can I change my delivery address?"),
        ])
        .unwrap()
    }

    #[test]
    fn chinese_matches_through_words_and_ngrams() {
        let lex = index();
        // jieba splits these differently; the n-gram field still finds the entry.
        assert_eq!(lex.score("几天能收到货", 3).unwrap()[0].0, 0);
        assert_eq!(lex.score("我想退货", 3).unwrap()[0].0, 1);
        assert_eq!(lex.score("地址填错了能改吗", 3).unwrap()[0].0, 2);
    }

    #[test]
    fn traditional_and_simplified_chinese_meet() {
        let lex = Lexical::build([
            (0, "怎么注销账号"),
            (1, "怎么退货"),
            (2, "退款多久到账"),
            (3, "帳號被鎖了怎麼辦"),
        ])
        .unwrap();
        let hits = lex.score("請問怎麼註銷帳號", 3).unwrap();
        assert_eq!(hits[0].0, 0, "{hits:?}");
        assert!(hits[0].1 > 0.5, "{hits:?}");
        assert_eq!(lex.score("账号被锁了", 3).unwrap()[0].0, 3);
    }

    #[test]
    fn english_is_stemmed_and_scores_are_relative() {
        let lex = index();
        let hits = lex.score("returning items", 3).unwrap();
        assert_eq!(hits[0].0, 1);
        let full = lex.score("How long does delivery take?", 3).unwrap()[0].1;
        let unseen = lex.score("delivery of pizza to the moon", 3).unwrap()[0].1;
        assert!(full > 0.8, "{full}");
        assert!(unseen < full / 2.0, "{unseen} vs {full}");
        assert!(lex.score("zzz qqq", 3).unwrap().is_empty());
    }
}
