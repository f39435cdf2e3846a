//! Words: how text and queries are cut into search terms.

use std::collections::HashMap;

/// Longest term kept; longer runs (hashes, base64) are cut to this.
const MAX_TERM_CHARS: usize = 48;

/// The search terms of `text`: runs of letters and digits, lowercased.
pub fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut term = String::with_capacity(w.len());
            for c in w.chars().take(MAX_TERM_CHARS) {
                term.extend(c.to_lowercase());
            }
            term
        })
}

/// A document's distinct terms, each with its strongest weight and the
/// line where that occurrence is (the first one among equals).
#[derive(Debug, Default)]
pub struct Terms {
    map: HashMap<String, (u8, u32)>,
}

impl Terms {
    /// Adds every term of `text`, found on `line` with `weight`.
    pub fn add_text(&mut self, text: &str, weight: u8, line: u32) {
        for term in terms(text) {
            let slot = self.map.entry(term).or_insert((weight, line));
            if weight > slot.0 {
                *slot = (weight, line);
            }
        }
    }

    /// The terms with their weight and line.
    pub fn into_entries(self) -> impl Iterator<Item = (String, u8, u32)> {
        self.map.into_iter().map(|(t, (w, l))| (t, w, l))
    }

    /// How many distinct terms.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Weight and line of one term, if present.
    pub fn get(&self, term: &str) -> Option<(u8, u32)> {
        self.map.get(term).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_lowercased_alphanumeric_runs() {
        let t: Vec<_> = terms("Hello, Wörld! foo_bar x2").collect();
        assert_eq!(t, ["hello", "wörld", "foo", "bar", "x2"]);
    }

    #[test]
    fn strongest_weight_wins_with_its_line() {
        let mut t = Terms::default();
        t.add_text("alpha beta", 1, 3);
        t.add_text("Alpha", 4, 7);
        t.add_text("alpha", 4, 9);
        assert_eq!(t.get("alpha"), Some((4, 7)));
        assert_eq!(t.get("beta"), Some((1, 3)));
    }
}
