//! The tokenizer of the `line` field: tantivy's `SimpleTokenizer`, then
//! `RemoveLongFilter`, then `LowerCaser`, fused into one pass.
//!
//! A token is a maximal run of alphanumeric characters (`char::is_alphanumeric`);
//! one of [`INDEX_MAX_TOKEN_BYTES`] bytes or more is dropped (its position is
//! still counted); the rest is lowercased character by character (no final
//! sigma rule). The tokens, positions and offsets are exactly those of the
//! three-stage chain, which built the indexes already written (a property
//! test holds them equal); the fused pass scans ASCII a byte at a time and
//! copies each token once, where the chain took three dynamic calls and a
//! second pass per token (5 % of the archiver's CPU in profiles).

use sluice_schema::archive::INDEX_MAX_TOKEN_BYTES;
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

#[derive(Debug, Clone, Default)]
pub struct LineTokenizer {
    token: Token,
}

pub struct LineTokenStream<'a> {
    text: &'a str,
    /// Byte offset of the next character to look at.
    at: usize,
    token: &'a mut Token,
}

impl Tokenizer for LineTokenizer {
    type TokenStream<'a> = LineTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> LineTokenStream<'a> {
        self.token.reset();
        LineTokenStream {
            text,
            at: 0,
            token: &mut self.token,
        }
    }
}

impl LineTokenStream<'_> {
    /// The character at byte `at`, whether it is part of a token, and its
    /// length in bytes.
    fn char_at(&self, at: usize) -> (bool, usize, bool) {
        let byte = self.text.as_bytes()[at];
        if byte.is_ascii() {
            return (byte.is_ascii_alphanumeric(), 1, true);
        }
        let c = self.text[at..].chars().next().expect("at a char boundary");
        (c.is_alphanumeric(), c.len_utf8(), false)
    }
}

impl TokenStream for LineTokenStream<'_> {
    fn advance(&mut self) -> bool {
        let len = self.text.len();
        loop {
            // Skip to the next token.
            while self.at < len {
                let (word, width, _) = self.char_at(self.at);
                if word {
                    break;
                }
                self.at += width;
            }
            if self.at >= len {
                self.token.text.clear();
                return false;
            }
            let start = self.at;
            let mut ascii = true;
            while self.at < len {
                let (word, width, is_ascii) = self.char_at(self.at);
                if !word {
                    break;
                }
                ascii &= is_ascii;
                self.at += width;
            }
            self.token.position = self.token.position.wrapping_add(1);
            if self.at - start > INDEX_MAX_TOKEN_BYTES {
                continue;
            }
            let word = &self.text[start..self.at];
            self.token.offset_from = start;
            self.token.offset_to = self.at;
            self.token.text.clear();
            if ascii {
                self.token.text.push_str(word);
                self.token.text.make_ascii_lowercase();
            } else {
                for c in word.chars() {
                    self.token.text.extend(c.to_lowercase());
                }
            }
            return true;
        }
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};

    use super::*;

    /// The chain the indexes were first built with.
    fn chain() -> TextAnalyzer {
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(INDEX_MAX_TOKEN_BYTES + 1))
            .filter(LowerCaser)
            .build()
    }

    fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(String, usize, usize, usize)> {
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            let t = stream.token();
            out.push((t.text.clone(), t.position, t.offset_from, t.offset_to));
        }
        out
    }

    #[test]
    fn splits_drops_and_lowercases() {
        let mut fused = TextAnalyzer::from(LineTokenizer::default());
        let long = "x".repeat(INDEX_MAX_TOKEN_BYTES + 1);
        let text = format!("ERROR blk_-42: Über {long} ok ΣΑΣ");
        let got: Vec<String> = tokens(&mut fused, &text).into_iter().map(|t| t.0).collect();
        assert_eq!(got, ["error", "blk", "42", "über", "ok", "σασ"]);
    }

    proptest! {
        #[test]
        fn same_tokens_as_the_chain(text in "(\\PC|[a-zA-Z0-9 ._-]){0,200}", long in 120usize..140) {
            let text = format!("{text} {} {text}", "Ab".repeat(long / 2));
            let mut fused = TextAnalyzer::from(LineTokenizer::default());
            prop_assert_eq!(tokens(&mut fused, &text), tokens(&mut chain(), &text));
        }
    }
}
