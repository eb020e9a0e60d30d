//! DDL statements from the binlog applied to a [`Catalog`], read with sqlparser's MySQL
//! dialect (not regular expressions: quoting, comments and multi-table statements are the
//! parser's job).
//!
//! [`apply`] changes the catalog only when the whole statement was understood: a statement the
//! parser cannot read, or one it reads but that refers to a table or column the catalog lacks,
//! is a [`DdlError`] naming the tables it touches (from the statement's tokens), and the
//! catalog is left as it was. The caller decides what that means (a tracked table: stop; an
//! untracked one: record and go on).

use sqlparser::ast::{
    AlterTableOperation, ColumnDef, ColumnOption, CreateTable, CreateTableLikeKind, DataType, Expr,
    IndexColumn, IndexOption, IndexType, MySQLColumnPosition, ObjectName, ObjectType, Spanned,
    Statement, TableConstraint, UniqueConstraint,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::{Catalog, Column, Table, UniqueKey};

/// What a statement did, for the sync API's DDL operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Created (also `CREATE TABLE ... LIKE` / `AS SELECT`, `CREATE OR REPLACE`).
    Created {
        db: String,
        table: String,
    },
    /// Columns, their types, the primary key or the unique keys (so maybe the id) changed.
    Altered {
        db: String,
        table: String,
    },
    Renamed {
        from: (String, String),
        to: (String, String),
    },
    Truncated {
        db: String,
        table: String,
    },
    Dropped {
        db: String,
        table: String,
    },
    CreatedDatabase(String),
    DroppedDatabase(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdlError {
    #[error("cannot read the DDL statement ({reason}): {statement}")]
    Unparsed {
        statement: String,
        reason: String,
        /// `(db, table)` named after TABLE in its tokens (best effort).
        tables: Vec<(String, String)>,
    },
    #[error(
        "the DDL statement refers to {what}, which the schema history does not hold: {statement}"
    )]
    Unknown {
        statement: String,
        what: String,
        tables: Vec<(String, String)>,
    },
}

impl DdlError {
    /// The tables the failed statement touches.
    pub fn tables(&self) -> &[(String, String)] {
        match self {
            DdlError::Unparsed { tables, .. } | DdlError::Unknown { tables, .. } => tables,
        }
    }
}

/// Applies `sql` (one query event's text; `default_db` is the event's current database) to
/// `catalog`. Statements that are no DDL (DML logged as statements, GRANT, ...) change
/// nothing and return no effect. See the module docs.
pub fn apply(catalog: &mut Catalog, default_db: &str, sql: &str) -> Result<Vec<Effect>, DdlError> {
    let statements = match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(s) => s,
        // Statements sqlparser does not know but that leave every column as it was (their
        // unique-key clauses are applied).
        Err(e) if alter_without_column_change(sql).is_some() => {
            let clauses = alter_without_column_change(sql).unwrap_or_default();
            let tables = tables_in_tokens(sql, default_db);
            // Unchanged columns of a table the history does not hold are still unknown.
            if let Some((db, table)) = tables.iter().find(|(d, t)| catalog.table(d, t).is_none()) {
                return Err(DdlError::Unknown {
                    statement: sql.to_string(),
                    what: format!("table {db}.{table}"),
                    tables: tables.clone(),
                });
            }
            if let Some((db, table)) = tables.first() {
                let mut t = catalog.table(db, table).cloned().expect("checked above");
                for clause in &clauses {
                    index_clause(&mut t, clause).map_err(|reason| DdlError::Unparsed {
                        statement: sql.to_string(),
                        reason: format!("{e}; {reason}"),
                        tables: tables.clone(),
                    })?;
                }
                t.sort_unique();
                catalog.insert(t);
            }
            return Ok(tables
                .into_iter()
                .map(|(db, table)| Effect::Altered { db, table })
                .collect());
        }
        Err(e) => {
            return Err(DdlError::Unparsed {
                statement: sql.to_string(),
                reason: e.to_string(),
                tables: tables_in_tokens(sql, default_db),
            })
        }
    };
    let mut next = catalog.clone();
    let mut effects = Vec::new();
    for st in &statements {
        let mut cx = Cx {
            catalog: &mut next,
            default_db,
            sql,
        };
        effects.extend(cx.statement(st)?);
    }
    *catalog = next;
    Ok(effects)
}

struct Cx<'a> {
    catalog: &'a mut Catalog,
    default_db: &'a str,
    sql: &'a str,
}

impl Cx<'_> {
    fn name(&self, n: &ObjectName) -> (String, String) {
        let parts: Vec<String> =
            n.0.iter()
                .map(|p| {
                    p.as_ident()
                        .map(|i| i.value.clone())
                        .unwrap_or_else(|| p.to_string())
                })
                .collect();
        match parts.as_slice() {
            [db, table] => (db.clone(), table.clone()),
            [table] => (self.default_db.to_string(), table.clone()),
            _ => (self.default_db.to_string(), n.to_string()),
        }
    }

    fn unknown(&self, what: String) -> DdlError {
        DdlError::Unknown {
            statement: self.sql.to_string(),
            what,
            tables: tables_in_tokens(self.sql, self.default_db),
        }
    }

    fn statement(&mut self, st: &Statement) -> Result<Vec<Effect>, DdlError> {
        match st {
            Statement::CreateTable(ct) => self.create(ct),
            Statement::AlterTable(at) => {
                let (db, table) = self.name(&at.name);
                let Some(mut t) = self.catalog.table(&db, &table).cloned() else {
                    return Err(self.unknown(format!("the table {db}.{table}")));
                };
                let mut effects = vec![Effect::Altered {
                    db: db.clone(),
                    table: table.clone(),
                }];
                for op in &at.operations {
                    if let Some(renamed) = self.alter(&mut t, op)? {
                        effects.push(renamed);
                    }
                }
                // The server rebuilds the table's keys in its order.
                t.sort_unique();
                self.catalog.remove(&db, &table);
                self.catalog.insert(t);
                Ok(effects)
            }
            Statement::CreateIndex(ci) if ci.unique => {
                let (db, table) = self.name(&ci.table_name);
                let Some(mut t) = self.catalog.table(&db, &table).cloned() else {
                    // A table the history does not hold: nothing to know of it.
                    return Ok(Vec::new());
                };
                let hash = matches!(ci.using, Some(IndexType::Hash))
                    || ci
                        .index_options
                        .iter()
                        .any(|o| matches!(o, IndexOption::Using(IndexType::Hash)));
                let name = ci.name.as_ref().map(|n| self.name(n).1);
                let d = declared(&t, name, &ci.columns, hash);
                add_unique(&mut t, d, ci.if_not_exists);
                t.sort_unique();
                self.catalog.insert(t);
                Ok(vec![Effect::Altered { db, table }])
            }
            Statement::RenameTable(renames) => {
                // In order: `t TO _t_old, _t_gho TO t` (an online schema change's cut-over).
                let mut effects = Vec::new();
                for r in renames {
                    let from = self.name(&r.old_name);
                    let to = self.name(&r.new_name);
                    effects.push(self.rename(from, to)?);
                }
                Ok(effects)
            }
            Statement::Truncate(tr) => Ok(tr
                .table_names
                .iter()
                .map(|t| {
                    let (db, table) = self.name(&t.name);
                    Effect::Truncated { db, table }
                })
                .collect()),
            Statement::Drop {
                object_type,
                names,
                table,
                ..
            } => match object_type {
                ObjectType::Table => Ok(names
                    .iter()
                    .filter_map(|n| {
                        let (db, table) = self.name(n);
                        // DROP TABLE IF EXISTS of a table never seen: nothing to forget.
                        self.catalog
                            .remove(&db, &table)
                            .map(|_| Effect::Dropped { db, table })
                    })
                    .collect()),
                ObjectType::Schema | ObjectType::Database => {
                    let mut effects = Vec::new();
                    for n in names {
                        let db = n.to_string().trim_matches('`').to_string();
                        let gone: Vec<(String, String)> = self
                            .catalog
                            .tables
                            .keys()
                            .filter(|(d, _)| *d == db)
                            .cloned()
                            .collect();
                        for (d, t) in gone {
                            self.catalog.remove(&d, &t);
                            effects.push(Effect::Dropped { db: d, table: t });
                        }
                        self.catalog.databases.remove(&db);
                        effects.push(Effect::DroppedDatabase(db));
                    }
                    Ok(effects)
                }
                // DROP INDEX i ON t: the id changes if it was the key.
                ObjectType::Index => {
                    let Some(on) = table else {
                        return Ok(Vec::new());
                    };
                    let (db, table) = self.name(on);
                    let Some(mut t) = self.catalog.table(&db, &table).cloned() else {
                        return Ok(Vec::new());
                    };
                    let before = t.clone();
                    for n in names {
                        drop_index(&mut t, &self.name(n).1);
                    }
                    if t == before {
                        // An index that is no key: no column, type or id changed.
                        return Ok(Vec::new());
                    }
                    t.sort_unique();
                    self.catalog.insert(t);
                    Ok(vec![Effect::Altered { db, table }])
                }
                _ => Ok(Vec::new()),
            },
            Statement::CreateDatabase { db_name, .. } => {
                let db = self.name(db_name).1;
                self.catalog.databases.insert(db.clone());
                Ok(vec![Effect::CreatedDatabase(db)])
            }
            Statement::CreateSchema { schema_name, .. } => {
                let db = schema_name.to_string().trim_matches('`').to_string();
                self.catalog.databases.insert(db.clone());
                Ok(vec![Effect::CreatedDatabase(db)])
            }
            _ => Ok(Vec::new()),
        }
    }

    fn create(&mut self, ct: &CreateTable) -> Result<Vec<Effect>, DdlError> {
        let (db, table) = self.name(&ct.name);
        if ct.if_not_exists && self.catalog.table(&db, &table).is_some() {
            return Ok(Vec::new());
        }
        let mut t = Table {
            db: db.clone(),
            name: table.clone(),
            columns: Vec::new(),
            pk: Vec::new(),
            unique: Vec::new(),
            complete: true,
        };
        if let Some(like) = &ct.like {
            let source = match like {
                CreateTableLikeKind::Parenthesized(l) | CreateTableLikeKind::Plain(l) => &l.name,
            };
            let (sdb, stable) = self.name(source);
            let Some(src) = self.catalog.table(&sdb, &stable) else {
                return Err(self.unknown(format!("the table {sdb}.{stable}")));
            };
            t.columns = src.columns.clone();
            t.pk = src.pk.clone();
            t.unique = src.unique.clone();
            t.complete = src.complete;
        } else {
            for c in &ct.columns {
                t.columns.push(column(c));
                if is_primary(c) {
                    t.pk = vec![c.name.value.clone()];
                }
            }
            // Keys in the order the statement declares them (the server names and orders
            // them so): a column's UNIQUE where the column is, among the table's constraints.
            enum Decl<'a> {
                Column(&'a ColumnDef, &'a UniqueConstraint),
                Table(&'a TableConstraint),
            }
            let mut decls: Vec<((u64, u64), Decl)> = Vec::new();
            for c in &ct.columns {
                for u in column_uniques(c) {
                    let at = c.span().start;
                    decls.push(((at.line, at.column), Decl::Column(c, u)));
                }
            }
            for k in &ct.constraints {
                let at = k.span().start;
                decls.push(((at.line, at.column), Decl::Table(k)));
            }
            decls.sort_by_key(|(at, _)| *at);
            for (_, d) in decls {
                match d {
                    Decl::Column(c, u) => add_unique(&mut t, column_unique(c, u), false),
                    Decl::Table(k) => self.constraint(&mut t, k),
                }
            }
            t.sort_unique();
            // AS SELECT adds the query's columns, of types the statement does not spell.
            if ct.query.is_some() {
                t.complete = false;
            }
        }
        self.catalog.remove(&db, &table);
        self.catalog.insert(t);
        Ok(vec![Effect::Created { db, table }])
    }

    fn constraint(&self, t: &mut Table, k: &TableConstraint) {
        match k {
            TableConstraint::PrimaryKey(pk) => {
                t.pk = pk
                    .columns
                    .iter()
                    .map(|c| c.column.expr.to_string())
                    .map(unquote)
                    .collect();
            }
            TableConstraint::Unique(u) => add_unique(t, table_unique(t, u), false),
            TableConstraint::Check(check) => {
                if let Some(col) = json_valid_column(&check.expr) {
                    if let Some(i) = t.column_index(&col) {
                        t.columns[i].json = true;
                    }
                }
            }
            _ => {}
        }
    }

    fn alter(
        &mut self,
        t: &mut Table,
        op: &AlterTableOperation,
    ) -> Result<Option<Effect>, DdlError> {
        match op {
            AlterTableOperation::AddColumn {
                if_not_exists,
                column_def,
                column_position,
                ..
            } => {
                if *if_not_exists && t.column_index(&column_def.name.value).is_some() {
                    return Ok(None);
                }
                let at = self.position(t, column_position.as_ref(), t.columns.len())?;
                t.columns.insert(at, column(column_def));
                if is_primary(column_def) {
                    t.pk = vec![column_def.name.value.clone()];
                }
                for u in column_uniques(column_def) {
                    add_unique(t, column_unique(column_def, u), false);
                }
            }
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                for name in column_names {
                    match t.column_index(&name.value) {
                        Some(i) => {
                            t.columns.remove(i);
                            t.pk.retain(|k| !k.eq_ignore_ascii_case(&name.value));
                            // The column leaves its keys; a key left without columns goes.
                            for u in &mut t.unique {
                                u.columns.retain(|k| !k.eq_ignore_ascii_case(&name.value));
                            }
                            t.unique.retain(|u| !u.columns.is_empty());
                        }
                        None if *if_exists => {}
                        None => {
                            return Err(self.unknown(format!(
                                "the column {}.{}",
                                t.qualified(),
                                name.value
                            )))
                        }
                    }
                }
            }
            AlterTableOperation::ChangeColumn {
                old_name,
                new_name,
                data_type,
                options,
                column_position,
            } => {
                self.replace(
                    t,
                    &old_name.value,
                    &new_name.value,
                    data_type,
                    options,
                    column_position.as_ref(),
                )?;
            }
            AlterTableOperation::ModifyColumn {
                col_name,
                data_type,
                options,
                column_position,
            } => {
                self.replace(
                    t,
                    &col_name.value,
                    &col_name.value,
                    data_type,
                    options,
                    column_position.as_ref(),
                )?;
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let Some(i) = t.column_index(&old_column_name.value) else {
                    return Err(self.unknown(format!(
                        "the column {}.{}",
                        t.qualified(),
                        old_column_name.value
                    )));
                };
                t.columns[i].name = new_column_name.value.clone();
                rename_in_keys(t, &old_column_name.value, &new_column_name.value);
            }
            AlterTableOperation::AddConstraint { constraint, .. } => self.constraint(t, constraint),
            AlterTableOperation::DropPrimaryKey { .. } => t.pk.clear(),
            AlterTableOperation::DropIndex { name } => drop_index(t, &name.value),
            // A CHECK or FOREIGN KEY, or (MariaDB) a unique key by its name.
            AlterTableOperation::DropConstraint { name, .. } => {
                if let Some(i) = t.unique_index(&name.value) {
                    t.unique.remove(i);
                }
            }
            AlterTableOperation::RenameTable { table_name } => {
                let new = match table_name {
                    sqlparser::ast::RenameTableNameKind::As(n)
                    | sqlparser::ast::RenameTableNameKind::To(n) => self.name(n),
                };
                let from = (t.db.clone(), t.name.clone());
                t.db = new.0.clone();
                t.name = new.1.clone();
                return Ok(Some(Effect::Renamed { from, to: new }));
            }
            // Defaults, indexes, constraints other than the key, ALGORITHM/LOCK, engine and
            // auto-increment settings: nothing a row image shows.
            _ => {}
        }
        Ok(None)
    }

    /// CHANGE / MODIFY: the column `old` becomes `new` of `data_type`, maybe moved.
    fn replace(
        &self,
        t: &mut Table,
        old: &str,
        new: &str,
        data_type: &DataType,
        options: &[ColumnOption],
        position: Option<&MySQLColumnPosition>,
    ) -> Result<(), DdlError> {
        let Some(i) = t.column_index(old) else {
            return Err(self.unknown(format!("the column {}.{old}", t.qualified())));
        };
        let def = ColumnDef {
            name: sqlparser::ast::Ident::new(new),
            data_type: data_type.clone(),
            options: options
                .iter()
                .map(|o| sqlparser::ast::ColumnOptionDef {
                    name: None,
                    option: o.clone(),
                })
                .collect(),
        };
        let mut c = column(&def);
        // A JSON CHECK stays with the column unless the type changed away from text.
        c.json |= t.columns[i].json && same_type(&t.columns[i].data_type, data_type);
        t.columns.remove(i);
        let at = self.position(t, position, i)?;
        t.columns.insert(at, c);
        rename_in_keys(t, old, new);
        if is_primary(&def) {
            t.pk = vec![new.to_string()];
        }
        for u in column_uniques(&def) {
            add_unique(t, column_unique(&def, u), false);
        }
        Ok(())
    }

    fn position(
        &self,
        t: &Table,
        pos: Option<&MySQLColumnPosition>,
        default: usize,
    ) -> Result<usize, DdlError> {
        match pos {
            None => Ok(default.min(t.columns.len())),
            Some(MySQLColumnPosition::First) => Ok(0),
            Some(MySQLColumnPosition::After(name)) => {
                t.column_index(&name.value).map(|i| i + 1).ok_or_else(|| {
                    self.unknown(format!("the column {}.{}", t.qualified(), name.value))
                })
            }
        }
    }

    fn rename(&mut self, from: (String, String), to: (String, String)) -> Result<Effect, DdlError> {
        let Some(mut t) = self.catalog.remove(&from.0, &from.1) else {
            return Err(self.unknown(format!("the table {}.{}", from.0, from.1)));
        };
        t.db = to.0.clone();
        t.name = to.1.clone();
        self.catalog.insert(t);
        Ok(Effect::Renamed { from, to })
    }
}

/// A column renamed `old` to `new` keeps its place in the primary and unique keys.
fn rename_in_keys(t: &mut Table, old: &str, new: &str) {
    let keys =
        t.pk.iter_mut()
            .chain(t.unique.iter_mut().flat_map(|u| u.columns.iter_mut()));
    for k in keys {
        if k.eq_ignore_ascii_case(old) {
            *k = new.to_string();
        }
    }
}

/// `DROP INDEX name`: the primary key (`PRIMARY`), a unique key, or an index that is no key
/// (not tracked: nothing changes).
fn drop_index(t: &mut Table, name: &str) {
    if name.eq_ignore_ascii_case("PRIMARY") {
        t.pk.clear();
    } else if let Some(i) = t.unique_index(name) {
        t.unique.remove(i);
    }
}

/// A column's own `UNIQUE [KEY]` options.
fn column_uniques(c: &ColumnDef) -> impl Iterator<Item = &UniqueConstraint> {
    c.options.iter().filter_map(|o| match &o.option {
        ColumnOption::Unique(u) => Some(u),
        _ => None,
    })
}

/// A column's `UNIQUE`: a key on it alone, named after it.
fn column_unique(c: &ColumnDef, u: &UniqueConstraint) -> Declared {
    Declared {
        name: None,
        columns: vec![c.name.value.clone()],
        partial: false,
        hash: unique_hash(u) || long_type(&c.data_type),
    }
}

fn unique_hash(u: &UniqueConstraint) -> bool {
    matches!(u.index_type, Some(IndexType::Hash))
        || u.index_options
            .iter()
            .any(|o| matches!(o, IndexOption::Using(IndexType::Hash)))
}

/// BLOB and TEXT: a unique key on the whole column is MariaDB's long unique (a hash).
fn long_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Blob(_)
            | DataType::TinyBlob
            | DataType::MediumBlob
            | DataType::LongBlob
            | DataType::Text
            | DataType::TinyText
            | DataType::MediumText
            | DataType::LongText
            | DataType::JSON
    )
}

/// A table's `[CONSTRAINT c] UNIQUE [KEY] [name] (...)` (named `name`, else `c`).
fn table_unique(t: &Table, u: &UniqueConstraint) -> Declared {
    let name = u.index_name.as_ref().or(u.name.as_ref());
    declared(t, name.map(|n| n.value.clone()), &u.columns, unique_hash(u))
}

/// A unique key as a statement declares it, before it has its name.
struct Declared {
    name: Option<String>,
    columns: Vec<String>,
    partial: bool,
    hash: bool,
}

/// A unique key over `parts` of `t`: `col`, `col(10)` (a prefix), or an expression.
fn declared(t: &Table, name: Option<String>, parts: &[IndexColumn], hash: bool) -> Declared {
    let mut d = Declared {
        name,
        columns: Vec::new(),
        partial: false,
        hash,
    };
    for p in parts {
        match &p.column.expr {
            Expr::Identifier(i) => {
                d.hash |= t
                    .column_index(&i.value)
                    .is_some_and(|c| long_type(&t.columns[c].data_type));
                d.columns.push(i.value.clone());
            }
            // `col(10)`: the parser reads a prefix as a call.
            Expr::Function(f) if f.name.0.len() == 1 => {
                d.partial = true;
                d.columns.push(unquote(f.name.to_string()));
            }
            other => {
                d.partial = true;
                d.columns.push(other.to_string());
            }
        }
    }
    d
}

/// Adds `d` to `t`'s unique keys (after the others, as the server adds it), named as the
/// server names an unnamed key: after its first column, with `_2`, `_3`... when taken
/// (binsync knows only the unique keys' names, not other indexes'). `IF NOT EXISTS` of a
/// name taken adds nothing.
fn add_unique(t: &mut Table, d: Declared, if_not_exists: bool) {
    let taken =
        |t: &Table, n: &str| t.unique_index(n).is_some() || n.eq_ignore_ascii_case("PRIMARY");
    let name = match d.name {
        Some(n) => {
            if if_not_exists && taken(t, &n) {
                return;
            }
            n
        }
        None => {
            let base = d.columns.first().cloned().unwrap_or_default();
            std::iter::once(base.clone())
                .chain((2..100).map(|i| format!("{base}_{i}")))
                .find(|n| !taken(t, n))
                .unwrap_or(base)
        }
    };
    t.unique.push(UniqueKey {
        name,
        columns: d.columns,
        partial: d.partial,
        hash: d.hash,
    });
}

fn unquote(s: String) -> String {
    s.trim_matches('`').to_string()
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn is_primary(c: &ColumnDef) -> bool {
    c.options
        .iter()
        .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
}

/// The column a `json_valid(col)` check names (MariaDB's JSON type is LONGTEXT with it).
fn json_valid_column(e: &Expr) -> Option<String> {
    let Expr::Function(f) = e else {
        return None;
    };
    if !f.name.to_string().eq_ignore_ascii_case("json_valid") {
        return None;
    }
    let args = f.args.to_string();
    let inner = args.trim_start_matches('(').trim_end_matches(')').trim();
    Some(unquote(inner.to_string()))
}

fn column(c: &ColumnDef) -> Column {
    let mut col = Column {
        name: c.name.value.clone(),
        data_type: c.data_type.clone(),
        nullable: true,
        json: matches!(c.data_type, DataType::JSON),
        binary: matches!(
            c.data_type,
            DataType::Binary(_)
                | DataType::Varbinary(_)
                | DataType::Blob(_)
                | DataType::TinyBlob
                | DataType::MediumBlob
                | DataType::LongBlob
        ),
        generated: false,
    };
    for o in &c.options {
        match &o.option {
            ColumnOption::NotNull | ColumnOption::PrimaryKey(_) => col.nullable = false,
            ColumnOption::Null => col.nullable = true,
            ColumnOption::CharacterSet(cs) => {
                col.binary |= cs.to_string().eq_ignore_ascii_case("binary");
            }
            ColumnOption::Check(check)
                if json_valid_column(&check.expr)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&col.name)) =>
            {
                col.json = true;
            }
            ColumnOption::Generated { .. } => col.generated = true,
            _ => {}
        }
    }
    col
}

/// `sql`'s tokens without whitespace and comments; None if it cannot be tokenized.
fn words(sql: &str) -> Option<Vec<Token>> {
    let tokens = Tokenizer::new(&MySqlDialect {}, sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect(),
    )
}

/// A clause of an ALTER TABLE that sqlparser could not read which changes unique keys (the
/// id when the table has no PRIMARY KEY).
#[derive(Debug, Clone, PartialEq)]
enum IndexClause {
    /// `DROP INDEX|KEY [IF EXISTS] name`.
    Drop(String),
    /// `DROP CONSTRAINT [IF EXISTS] name`: a unique key's name, or a CHECK's or FOREIGN KEY's.
    DropConstraint(String),
    /// `RENAME INDEX|KEY from TO to`.
    Rename(String, String),
    /// `ADD [CONSTRAINT [c]] UNIQUE ...`, its text without `IF NOT EXISTS`, and whether
    /// that was there.
    AddUnique(String, bool),
}

/// Applies `clause` to `t`; an `ADD UNIQUE` clause sqlparser cannot read alone is an error.
fn index_clause(t: &mut Table, clause: &IndexClause) -> Result<(), String> {
    match clause {
        IndexClause::Drop(name) => drop_index(t, name),
        IndexClause::DropConstraint(name) => {
            if let Some(i) = t.unique_index(name) {
                t.unique.remove(i);
            }
        }
        IndexClause::Rename(from, to) => {
            if let Some(i) = t.unique_index(from) {
                t.unique[i].name = to.clone();
            }
        }
        IndexClause::AddUnique(text, if_not_exists) => {
            let sql = format!("ALTER TABLE t {text}");
            let unreadable = || format!("cannot read the unique key of `{text}`");
            let statements = Parser::parse_sql(&MySqlDialect {}, &sql).map_err(|_| unreadable())?;
            let Some(Statement::AlterTable(at)) = statements.first() else {
                return Err(unreadable());
            };
            let [AlterTableOperation::AddConstraint {
                constraint: TableConstraint::Unique(u),
                ..
            }] = at.operations.as_slice()
            else {
                return Err(unreadable());
            };
            add_unique(t, table_unique(t, u), *if_not_exists);
        }
    }
    Ok(())
}

/// An `ALTER TABLE` whose every clause (split at top-level commas) leaves the columns, their
/// types and the primary key alone: table options (ENGINE, COMMENT, AUTO_INCREMENT, the
/// table's default charset...), FORCE, index and foreign-key changes, partitioning. sqlparser
/// refuses several of these; refusing them here would stop binsync on a routine rebuild.
/// `CONVERT TO CHARACTER SET` is not one (it changes columns' charsets, even TEXT to
/// MEDIUMTEXT). Some: its clauses that change unique keys, to apply.
fn alter_without_column_change(sql: &str) -> Option<Vec<IndexClause>> {
    const HARMLESS: &[&[&str]] = &[
        &["ENGINE"],
        &["FORCE"],
        &["COMMENT"],
        &["AUTO_INCREMENT"],
        &["ROW_FORMAT"],
        &["KEY_BLOCK_SIZE"],
        &["STATS_PERSISTENT"],
        &["STATS_AUTO_RECALC"],
        &["STATS_SAMPLE_PAGES"],
        &["PACK_KEYS"],
        &["CHECKSUM"],
        &["MAX_ROWS"],
        &["MIN_ROWS"],
        &["AVG_ROW_LENGTH"],
        &["ALGORITHM"],
        &["LOCK"],
        &["ORDER", "BY"],
        &["ENABLE", "KEYS"],
        &["DISABLE", "KEYS"],
        &["DEFAULT", "CHARSET"],
        &["DEFAULT", "CHARACTER"],
        &["DEFAULT", "COLLATE"],
        &["CHARSET"],
        &["CHARACTER", "SET"],
        &["COLLATE"],
        &["RENAME", "INDEX"],
        &["RENAME", "KEY"],
        &["ADD", "INDEX"],
        &["ADD", "KEY"],
        &["ADD", "UNIQUE"],
        &["ADD", "FULLTEXT"],
        &["ADD", "SPATIAL"],
        &["ADD", "FOREIGN"],
        &["DROP", "INDEX"],
        &["DROP", "KEY"],
        &["DROP", "FOREIGN"],
        &["DROP", "CHECK"],
        &["DROP", "CONSTRAINT"],
        &["ALTER", "INDEX"],
        &["ADD", "PARTITION"],
        &["DROP", "PARTITION"],
        &["COALESCE", "PARTITION"],
        &["REORGANIZE", "PARTITION"],
        &["REMOVE", "PARTITIONING"],
        &["PARTITION", "BY"],
    ];
    let tokens = words(sql)?;
    let words: Vec<&Token> = tokens.iter().collect();
    let kw = |t: &Token| match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    if words.len() < 4
        || kw(words[0]).as_deref() != Some("ALTER")
        || kw(words[1]).as_deref() != Some("TABLE")
    {
        return None;
    }
    // The table name: a word, maybe `db.` before it.
    let mut i = 3;
    if matches!(words.get(i), Some(Token::Period)) {
        i += 2;
    }
    // Each clause's keywords at its top level, and all its tokens.
    let mut clauses: Vec<(Vec<String>, Vec<&Token>)> = vec![Default::default()];
    let mut depth = 0i32;
    for t in &words[i..] {
        match t {
            Token::Comma if depth == 0 => {
                clauses.push(Default::default());
                continue;
            }
            Token::SemiColon if depth == 0 => break,
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t => {
                if depth == 0 {
                    if let Some(k) = kw(t) {
                        clauses.last_mut().expect("one clause").0.push(k);
                    }
                }
            }
        }
        clauses.last_mut().expect("one clause").1.push(t);
    }
    let mut index_clauses = Vec::new();
    for (c, raw) in &clauses {
        // `ADD CONSTRAINT name FOREIGN KEY` / `ADD CONSTRAINT name UNIQUE`: past the name.
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        let c = match c.as_slice() {
            ["ADD", "CONSTRAINT", rest @ ..] if rest.contains(&"PRIMARY") => return None,
            ["ADD", "CONSTRAINT", _, rest @ ..] => [&["ADD"][..], rest].concat(),
            other => other.to_vec(),
        };
        let harmless = !c.is_empty()
            && HARMLESS
                .iter()
                .any(|h| c.len() >= h.len() && c[..h.len()] == **h);
        if !harmless {
            return None;
        }
        let names: Vec<String> = raw
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.value.clone()),
                _ => None,
            })
            .collect();
        let last = || names.last().cloned().unwrap_or_default();
        match c.as_slice() {
            ["RENAME", "INDEX" | "KEY", ..] if names.len() == 5 => {
                index_clauses.push(IndexClause::Rename(names[2].clone(), names[4].clone()));
            }
            ["DROP", "INDEX" | "KEY", ..] => index_clauses.push(IndexClause::Drop(last())),
            ["DROP", "CONSTRAINT", ..] => index_clauses.push(IndexClause::DropConstraint(last())),
            ["ADD", "UNIQUE", ..] => {
                // IF NOT EXISTS (which sqlparser does not read there) out of the text.
                let mut text: Vec<String> = Vec::new();
                let mut if_not_exists = false;
                let mut j = 0;
                while j < raw.len() {
                    let three: Vec<Option<String>> =
                        raw[j..].iter().take(3).map(|t| kw(t)).collect();
                    if three
                        == [
                            Some("IF".to_string()),
                            Some("NOT".to_string()),
                            Some("EXISTS".to_string()),
                        ]
                    {
                        if_not_exists = true;
                        j += 3;
                        continue;
                    }
                    text.push(raw[j].to_string());
                    j += 1;
                }
                index_clauses.push(IndexClause::AddUnique(text.join(" "), if_not_exists));
            }
            _ => {}
        }
    }
    Some(index_clauses)
}

/// The catalog a file of CREATE TABLE statements describes (`replay --schema-from
/// file:PATH`): statements end with `;` at the end of a line, `USE db;` sets the database of
/// unqualified names, and `SET`, `LOCK`/`UNLOCK` and comment-only statements (as in
/// `mysqldump --no-data` output) are passed over. A statement the reader cannot follow is an
/// error naming it.
pub fn catalog_from_file(path: &std::path::Path) -> Result<Catalog, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--schema-from file:{}: {e}", path.display()))?;
    let mut catalog = Catalog::default();
    let mut db = String::new();
    let mut statement = String::new();
    for line in text.lines() {
        if statement.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with("--")) {
            continue;
        }
        statement.push_str(line);
        statement.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        let sql = sql.trim().trim_end_matches(';').trim();
        let head = sql
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match head.as_str() {
            "USE" => db = sql[3..].trim().trim_matches('`').replace("``", "`"),
            "SET" | "LOCK" | "UNLOCK" => {}
            _ if sql.starts_with("/*") && sql.ends_with("*/") => {}
            _ => {
                apply(&mut catalog, &db, sql)
                    .map_err(|e| format!("--schema-from file:{}: {e}", path.display()))?;
            }
        }
    }
    Ok(catalog)
}

/// `(db, table)` for each name that follows the keyword TABLE (or TABLE ... TO, RENAME's
/// pairs) in `sql`'s tokens: what a statement the parser cannot read is about.
pub fn tables_in_tokens(sql: &str, default_db: &str) -> Vec<(String, String)> {
    let Some(tokens) = words(sql) else {
        return Vec::new();
    };
    let words: Vec<&Token> = tokens.iter().collect();
    let ident = |t: &Token| match t {
        Token::Word(w) => Some(w.value.clone()),
        _ => None,
    };
    let is_kw = |t: &Token, kw: &str| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        // RENAME TABLE a TO b, c TO d: names follow TO and the commas too.
        let renaming = words.first().is_some_and(|w| is_kw(w, "RENAME"));
        let after_table = is_kw(words[i], "TABLE")
            || (renaming && (is_kw(words[i], "TO") || matches!(words[i], Token::Comma)));
        if after_table {
            let mut j = i + 1;
            // IF [NOT] EXISTS
            while j < words.len()
                && (is_kw(words[j], "IF") || is_kw(words[j], "NOT") || is_kw(words[j], "EXISTS"))
            {
                j += 1;
            }
            if let Some(first) = words.get(j).and_then(|t| ident(t)) {
                if matches!(words.get(j + 1), Some(Token::Period)) {
                    if let Some(second) = words.get(j + 2).and_then(|t| ident(t)) {
                        out.push((first, second));
                        i = j + 3;
                        continue;
                    }
                }
                out.push((default_db.to_string(), first));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.clone()));
    out
}

#[cfg(test)]
mod tests;
