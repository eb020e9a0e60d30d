use super::*;
use crate::decode::value::tests::schema;
use crate::schema::{ddl, Catalog};

const LONG: u8 = 3;
const LONGLONG: u8 = 8;
const VARCHAR: u8 = 15;
const DATETIME2: u8 = 18;
const NEWDECIMAL: u8 = 246;
const BLOB: u8 = 252;
const STRING: u8 = 254;
const ENUM: u8 = 247;

fn table(sql: &str) -> Table {
    let mut c = Catalog::default();
    ddl::apply(&mut c, "shop", sql).unwrap();
    c.tables.into_values().next().unwrap()
}

fn products() -> Table {
    table(
        "CREATE TABLE products (id INT PRIMARY KEY, b VARCHAR(10), c DECIMAL(10,2), \
         d DATETIME(3), e ENUM('a','b'), j LONGTEXT CHECK (json_valid(j)))",
    )
}

/// The table map MariaDB writes for `products()` (MINIMAL metadata: no names).
fn products_map() -> Vec<(u8, Vec<u8>)> {
    vec![
        (LONG, vec![]),
        (VARCHAR, vec![40, 0]),
        (NEWDECIMAL, vec![10, 2]),
        (DATETIME2, vec![3]),
        (STRING, vec![ENUM, 1]),
        (BLOB, vec![4]),
    ]
}

fn binlog(cols: &[(u8, Vec<u8>)]) -> TableSchema {
    let cols: Vec<(u8, &[u8])> = cols.iter().map(|(t, m)| (*t, m.as_slice())).collect();
    schema(&cols, &[])
}

#[test]
fn a_table_map_of_the_same_version_fits() {
    assert_eq!(check(&products(), &binlog(&products_map())), Ok(()));
}

#[test]
fn another_column_count_or_type_does_not_fit() {
    let t = products();
    let mut fewer = products_map();
    fewer.pop();
    let e = check(&t, &binlog(&fewer)).unwrap_err();
    assert!(
        e.0.contains("5 columns") && e.0.contains("version 6"),
        "{e}"
    );

    let mut wider = products_map();
    wider[0] = (LONGLONG, vec![]);
    let e = check(&t, &binlog(&wider)).unwrap_err();
    assert!(
        e.0.contains("column 1") && e.0.contains("8-byte integer"),
        "{e}"
    );

    let mut scaled = products_map();
    scaled[2] = (NEWDECIMAL, vec![12, 2]);
    assert!(check(&t, &binlog(&scaled))
        .unwrap_err()
        .0
        .contains("DECIMAL(12,2)"));

    let mut finer = products_map();
    finer[3] = (DATETIME2, vec![6]);
    assert!(check(&t, &binlog(&finer)).is_err());

    let mut shorter = products_map();
    shorter[5] = (BLOB, vec![2]);
    assert!(
        check(&t, &binlog(&shorter)).is_err(),
        "TEXT is not LONGTEXT"
    );
}

/// The case: a column added while binsync was stopped. Rows written before the ALTER
/// fit only the version before it.
#[test]
fn each_version_fits_only_its_own_rows() {
    let mut c = Catalog::default();
    ddl::apply(
        &mut c,
        "shop",
        "CREATE TABLE products (id INT PRIMARY KEY, a INT)",
    )
    .unwrap();
    let before = c.table("shop", "products").unwrap().clone();
    ddl::apply(
        &mut c,
        "shop",
        "ALTER TABLE products ADD COLUMN b VARCHAR(10) AFTER id",
    )
    .unwrap();
    let after = c.table("shop", "products").unwrap().clone();
    let old_rows = binlog(&[(LONG, vec![]), (LONG, vec![])]);
    let new_rows = binlog(&[(LONG, vec![]), (VARCHAR, vec![40, 0]), (LONG, vec![])]);
    assert!(check(&before, &old_rows).is_ok());
    assert!(check(&after, &old_rows).is_err());
    assert!(check(&after, &new_rows).is_ok());
    assert!(check(&before, &new_rows).is_err());
}

#[test]
fn an_incomplete_version_never_fits() {
    let mut t = products();
    t.complete = false;
    assert!(check(&t, &binlog(&products_map())).is_err());
}

#[test]
fn the_history_supplies_what_minimal_metadata_lacks() {
    let e = extra(&products());
    assert_eq!(e.columns, ["id", "b", "c", "d", "e", "j"]);
    assert_eq!(e.pk, [0]);
    assert_eq!(e.json_columns, [5]);
    assert_eq!(e.enum_labels, [(4, vec!["a".to_string(), "b".to_string()])]);
    let u = extra(&table("CREATE TABLE u (k BIGINT UNSIGNED, v VARBINARY(8))"));
    assert_eq!(u.unsigned, [0]);
    assert_eq!(u.binary, [1]);
    assert!(u.pk.is_empty());
}
