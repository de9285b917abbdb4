use std::fmt::{Display, Write as _};

/// The fields of one row, built in reusable buffers: appending a row allocates nothing once
/// the buffers have grown to a row's size. The `csv` crate quotes fields when written.
#[derive(Clone, Debug, Default)]
pub struct Record {
    fields: csv::ByteRecord,
    scratch: String,
}

impl Record {
    /// Empties the record, keeping its buffers.
    pub fn clear(&mut self) -> &mut Self {
        self.fields.clear();
        self
    }

    /// Adds a text field.
    pub fn push(&mut self, field: &str) -> &mut Self {
        self.fields.push_field(field.as_bytes());
        self
    }

    /// Adds a field written with `Display` (a float's shortest exact form, for one).
    pub fn push_display(&mut self, value: impl Display) -> &mut Self {
        self.scratch.clear();
        let _ = write!(self.scratch, "{value}");
        self.fields.push_field(self.scratch.as_bytes());
        self
    }

    /// Adds a field that may be empty.
    pub fn push_optional(&mut self, value: Option<impl Display>) -> &mut Self {
        match value {
            Some(value) => self.push_display(value),
            None => self.push(""),
        }
    }

    pub(crate) fn fields(&self) -> &csv::ByteRecord {
        &self.fields
    }
}
