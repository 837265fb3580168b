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

/// Traditional characters common in customer messages, with their Simplified forms, sorted:
/// enough to match phrases written once in Simplified Chinese (`bot::intent`), not a
/// general converter.
const TRADITIONAL: &[&str] = &[
    "瘋疯爭争煩烦亂乱惡恶賠赔償偿遲迟觸触歸归闆板儘尽擾扰騷骚訟讼凍冻註注係系竊窃詢询專专",
    "個个們们傳传價价億亿優优兩两劃划動动務务勝胜區区協协參参叢丛員员問问啟启單单嗎吗",
    "國国圍围圖图團团報报場场塊块壓压壞坏夠够夢梦奪夺奮奋婦妇媽妈孫孙學学實实寧宁寫写",
    "寶宝將将尋寻對对導导屆届層层屬属島岛師师帳账幣币幫帮廣广張张強强彈弹彥彦徑径從从",
    "復复愛爱態态慣惯憑凭應应戰战戲戏戶户換换損损搖摇擊击擔担據据攝摄數数斷断於于時时",
    "曆历曉晓書书會会東东條条業业樓楼標标樣样樹树橋桥機机權权歐欧歡欢歲岁歷历殺杀殼壳",
    "氣气沒没漢汉潔洁災灾為为無无熱热燈灯營营爛烂爺爷牆墙狀状獎奖獨独現现環环產产畫画",
    "異异療疗發发盜盗盡尽監监盤盘確确碼码禮礼種种稱称穩稳窮穷競竞筆笔節节範范簡简糧粮",
    "紀纪約约紅红純纯紙纸級级細细終终組组結结絕绝絡络給给統统經经綠绿維维網网緊紧線线",
    "練练總总績绩繫系續续罰罚義义習习聖圣聞闻聯联職职聽听脫脱腦脑臉脸與与舉举舊旧艱艰",
    "莊庄華华萬万葉叶蓋盖藝艺藥药蘇苏處处號号蟲虫術术衛卫衝冲裝装製制複复覆复見见規规",
    "視视親亲覺觉觀观訂订計计訊讯記记設设許许訴诉詐诈試试話话詳详語语誤误說说調调談谈",
    "請请論论諾诺謝谢證证識识護护讀读變变讓让貝贝負负財财貢贡貧贫貨货責责貴贵買买費费",
    "資资賊贼賓宾賣卖質质賬账購购賽赛趕赶趙赵跡迹踐践車车軍军軟软較较載载輕轻輸输轉转",
    "辦办這这連连進进運运過过違违遠远適适選选遺遗還还邊边郵邮鄉乡醫医釋释針针釣钓鈔钞",
    "銀银銷销鋪铺錄录錢钱錯错鍵键鎖锁鏈链長长門门閉闭開开閒闲間间閱阅關关陰阴陳陈陸陆",
    "陽阳隊队階阶際际隨随險险隱隐雙双雜杂雞鸡離离難难雲云電电靈灵韓韩頁页頂顶項项順顺",
    "須须預预領领頭头頻频題题額额顏颜類类顧顾風风飛飞飯饭飲饮飽饱餘余館馆馬马騙骗驗验",
    "驚惊體体髮发鬥斗鬧闹魚鱼魯鲁鮮鲜鳥鸟麗丽麥麦麼么黃黄點点齊齐齡龄龍龙",
];

/// The Simplified form of `c` when it is one of the Traditional characters above.
pub fn simplified(c: char) -> char {
    static TABLE: std::sync::OnceLock<Vec<(char, char)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t: Vec<(char, char)> = TRADITIONAL
            .iter()
            .flat_map(|row| {
                let cs: Vec<char> = row.chars().collect();
                cs.chunks_exact(2).map(|p| (p[0], p[1])).collect::<Vec<_>>()
            })
            .collect();
        t.sort_unstable();
        t
    });
    table
        .binary_search_by_key(&c, |p| p.0)
        .map_or(c, |i| table[i].1)
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
