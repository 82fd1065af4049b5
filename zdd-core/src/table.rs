//! Tables for people (`zdd-ps --table`, `zdd-releases --table`,
//! `zdd-history --table`), laid out the way `docker ps` does.
//!
//! One layout for every tool: a header line, then one line per row; each
//! column padded to its widest value plus three spaces; a missing value is
//! `-`; every line ends with `\n`, none with spaces.

/// Spaces between columns.
const GAP: usize = 3;

/// The table of `rows` under `header`. A row shorter than the header is
/// padded with `-`.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows.iter().map(|row| {
            let mut row: Vec<String> = row.iter().take(columns).cloned().collect();
            row.resize(columns, "-".into());
            row
        }))
        .collect();
    let mut widths = vec![0; columns];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            // `width$` pads by characters, as the widths are counted.
            line.push_str(&format!("{cell:<width$}", width = width + GAP));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// The value, or `-` when there is none.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_their_widest_value_and_lines_end_clean() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned()],
            vec!["wider".to_owned()],
        ];
        assert_eq!(
            render(&["X", "Y"], &rows),
            "X       Y\na       long value\nwider   -\n"
        );
    }
}
