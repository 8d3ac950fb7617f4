//! The CLI's tables, laid out by comfy-table: borderless ones for status,
//! healing and tokens, and psql's layout for query results.

use comfy_table::{Cell, CellAlignment, ContentLineStyle, LineStyle, Table, TableStyle, presets};

/// psql's layout: `|` between columns, a `-+-` rule under the header.
const PSQL: TableStyle = TableStyle::new()
    .header_lines(ContentLineStyle::none().junction('|'))
    .header_separator(LineStyle::none().fill('-').junction('+'))
    .content_lines(ContentLineStyle::none().junction('|'));

/// A borderless table with `header` and two spaces between columns; the
/// columns numbered in `right` align right.
pub fn plain(header: &[&str], right: &[usize]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header(header.to_vec());
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((if i == 0 { 0 } else { 2 }, 0));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// A table laid out as psql does: the header centred, each cell aligned
/// as [`cell`] says.
pub fn psql(header: &[String]) -> Table {
    let mut table = Table::new();
    table.load_style(PSQL).set_header(header.iter().map(|h| Cell::new(h).set_alignment(CellAlignment::Center)));
    table
}

/// A psql cell: numbers align right, everything else left.
pub fn cell(text: &str, number: bool) -> Cell {
    Cell::new(text).set_alignment(if number { CellAlignment::Right } else { CellAlignment::Left })
}

/// The table's lines without trailing blanks, each ended by a newline.
pub fn render(table: &Table) -> String {
    table.lines().map(|line| format!("{}\n", line.trim_end())).collect()
}
