//! Placeholder until the decoder lands (compile-only; replaced wholesale).
use mysql_common::binlog::events::TableMapEvent;
pub struct TableSchema {
    pub db: String,
    pub table: String,
    pub columns: Vec<ColumnSchema>,
    pub pk: Vec<usize>,
    pub names_from_binlog: bool,
}
pub struct ColumnSchema {
    pub name: String,
    pub json_key: Box<[u8]>,
}
#[derive(Debug, Clone, Default)]
pub struct ExtraSchema {
    pub columns: Vec<String>,
    pub pk: Vec<usize>,
    pub json_columns: Vec<usize>,
    pub unsigned: Vec<usize>,
    pub enum_labels: Vec<(usize, Vec<String>)>,
    pub binary: Vec<usize>,
}
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("placeholder")]
    Placeholder,
}
impl TableSchema {
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        _extra: Option<&ExtraSchema>,
    ) -> Result<TableSchema, DecodeError> {
        Ok(TableSchema {
            db: tme.database_name().into(),
            table: tme.table_name().into(),
            columns: vec![],
            pk: vec![],
            names_from_binlog: false,
        })
    }
}
