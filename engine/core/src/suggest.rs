//! "Did you mean": the closest known name to a mistyped one, for every place a user types names
//! (services and nodes here, command names in the shell).

/// The candidate closest to `word` by edit distance, when it is close enough to be what the
/// user meant.
///
/// - Distance is the edit distance (insertions, deletions, substitutions and swaps of two
///   neighbours, one character each), counted in characters, not bytes, and ignoring case: `Web` is at
///   distance 0 from `web`.
/// - A candidate is close enough when its distance is at most `word.chars().count() / 3`
///   (but always allows 1) and never more than 3: one typo in a short name, up to three in a
///   long one.
/// - A candidate equal to `word` is never suggested: the user typed it already, so it cannot
///   be what they meant instead.
/// - On a tie, the first candidate in iteration order wins, so callers decide (give names in
///   a stable order for a stable suggestion).
///
/// ```
/// use essaim_core::suggest::closest;
/// assert_eq!(closest("webb", ["web", "db"]), Some("web"));
/// assert_eq!(closest("cache", ["web", "db"]), None);
/// ```
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    let folded: Vec<char> = word.to_lowercase().chars().collect();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let other: Vec<char> = candidate.to_lowercase().chars().collect();
        let distance = levenshtein(&folded, &other);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// The edit distance between `a` and `b`, where swapping two neighbours (`wbe` for `web`)
/// is one edit, as people mistype (the optimal string alignment distance).
fn levenshtein(a: &[char], b: &[char]) -> usize {
    // Two rows back are needed to see a swap.
    let mut before: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            let mut best = substitute.min(row[j] + 1).min(previous[j + 1] + 1);
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                best = best.min(before[j - 1] + 1);
            }
            row[j + 1] = best;
        }
        before = std::mem::replace(&mut previous, row);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        levenshtein(&a, &b)
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("web", "webb"), 1);
        // A swap of neighbours is one typo.
        assert_eq!(distance("web", "wbe"), 1);
        assert_eq!(distance("drian", "drain"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        // Characters, not bytes: one accented letter is one edit.
        assert_eq!(distance("café", "cafe"), 1);
    }

    #[test]
    fn one_typo_in_a_short_name_is_suggested() {
        assert_eq!(closest("webb", ["web", "db"]), Some("web"));
        assert_eq!(closest("wbe", ["web", "db"]), Some("web"));
        assert_eq!(closest("wb", ["web", "api"]), Some("web"));
        assert_eq!(closest("m3", ["m1", "worker"]), Some("m1"));
    }

    #[test]
    fn names_too_far_away_are_not_suggested() {
        assert_eq!(closest("cache", ["web", "db"]), None);
        // Two edits in a four-letter name is a different name.
        assert_eq!(closest("wbbe", ["web"]), None);
        assert_eq!(closest("anything", std::iter::empty()), None);
    }

    #[test]
    fn longer_names_allow_more_typos_but_never_more_than_three() {
        assert_eq!(
            closest("frontnd-api", ["frontend-api"]),
            Some("frontend-api")
        );
        assert_eq!(
            closest("frnotend-xyz", ["frontend-api"]),
            None,
            "four edits"
        );
        assert_eq!(
            closest("frntend-ap", ["frontend-api"]),
            Some("frontend-api")
        );
        // 30 characters would allow 10 by length alone; the cap is 3.
        let long = "a-very-long-service-name-for-x";
        assert_eq!(closest("a-very-long-service-name-xxxxx", [long]), None);
    }

    #[test]
    fn case_does_not_count_as_a_difference() {
        assert_eq!(closest("WEB", ["db", "web"]), Some("web"));
        assert_eq!(closest("Webb", ["web"]), Some("web"));
    }

    #[test]
    fn the_word_itself_is_never_suggested() {
        assert_eq!(closest("web", ["web"]), None);
        assert_eq!(closest("web", ["web", "webs"]), Some("webs"));
    }

    #[test]
    fn a_tie_goes_to_the_first_candidate() {
        assert_eq!(closest("wec", ["web", "wed"]), Some("web"));
        assert_eq!(closest("wec", ["wed", "web"]), Some("wed"));
        // A closer candidate later on still wins.
        assert_eq!(closest("Web", ["wed", "web"]), Some("web"));
    }
}
