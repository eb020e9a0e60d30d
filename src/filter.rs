//! `--include` / `--exclude`: which tables are captured, by `db.table` globs (`*` any run of
//! characters, `?` one character). A table is captured when it matches an include (or there are
//! none) and no exclude. The decision is made once per table map, never per row.
//! `--on-ddl` picks, by the same globs, what a DDL statement on a captured table becomes.

#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Filter {
    /// Each pattern must name a database and a table: `shop.*`, `*.orders`, `app.user_?`.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, String> {
        for p in include.iter().chain(exclude) {
            if !p.contains('.') {
                return Err(format!(
                    "filter pattern `{p}` has no `.`: write db.table, e.g. `{p}.*` for every table of database {p}"
                ));
            }
        }
        Ok(Filter {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        })
    }

    pub fn matches(&self, db: &str, table: &str) -> bool {
        let name = format!("{db}.{table}");
        (self.include.is_empty()
            || self
                .include
                .iter()
                .any(|p| glob(p.as_bytes(), name.as_bytes())))
            && !self
                .exclude
                .iter()
                .any(|p| glob(p.as_bytes(), name.as_bytes()))
    }
}

impl Filter {
    /// An `--include` names `db.table` exactly (no wildcard): how a table that is skipped by
    /// default (a MariaDB SEQUENCE) is asked for.
    pub fn names(&self, db: &str, table: &str) -> bool {
        let name = format!("{db}.{table}");
        self.include.contains(&name) && self.matches(db, table)
    }
}

/// What `--on-ddl` does with a DDL statement on a captured table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlAction {
    /// Deliver it as a `ddl`, `truncate` or `drop` operation (contract v2).
    Emit,
    /// Follow it in the schema history only; receivers see nothing.
    Ignore,
    /// Stop binsync before it, with the checkpoint before it (a definite error).
    Stop,
}

impl std::str::FromStr for DdlAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emit" => Ok(DdlAction::Emit),
            "ignore" => Ok(DdlAction::Ignore),
            "stop" => Ok(DdlAction::Stop),
            other => Err(format!(
                "--on-ddl `{other}`: expected emit, ignore or stop, alone or as db.table=ACTION"
            )),
        }
    }
}

/// `--on-ddl`: an action per table pattern (`db.table` globs as for `--include`), the first
/// matching rule winning, then a default (`emit` unless one value is a bare action).
#[derive(Debug, Clone)]
pub struct OnDdl {
    rules: Vec<(String, DdlAction)>,
    default: DdlAction,
}

impl Default for OnDdl {
    fn default() -> Self {
        OnDdl {
            rules: Vec::new(),
            default: DdlAction::Emit,
        }
    }
}

impl OnDdl {
    /// Values are `ACTION` (the default) or `db.table=ACTION`.
    pub fn parse(values: &[String]) -> Result<OnDdl, String> {
        let mut on = OnDdl::default();
        for v in values {
            match v.rsplit_once('=') {
                Some((pattern, action)) => {
                    if !pattern.contains('.') {
                        return Err(format!("--on-ddl pattern `{pattern}` has no `.`: write db.table=ACTION, e.g. `{pattern}.*={action}`"));
                    }
                    on.rules.push((pattern.to_string(), action.parse()?));
                }
                None => on.default = v.parse()?,
            }
        }
        Ok(on)
    }

    pub fn action(&self, db: &str, table: &str) -> DdlAction {
        let name = format!("{db}.{table}");
        self.rules
            .iter()
            .find(|(p, _)| glob(p.as_bytes(), name.as_bytes()))
            .map_or(self.default, |(_, a)| *a)
    }

    /// Whether any table may get a DDL operation: the sync API then speaks contract v2.
    pub fn may_emit(&self) -> bool {
        self.default == DdlAction::Emit || self.rules.iter().any(|(_, a)| *a == DdlAction::Emit)
    }
}

/// Iterative glob match with backtracking to the last `*` (linear in practice).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_ddl_rules_first_match_then_the_default() {
        let on = OnDdl::parse(&[
            "shop.audit*=ignore".into(),
            "stop".into(),
            "shop.*=emit".into(),
        ])
        .unwrap();
        assert_eq!(on.action("shop", "audit_log"), DdlAction::Ignore);
        assert_eq!(on.action("shop", "orders"), DdlAction::Emit);
        assert_eq!(on.action("crm", "users"), DdlAction::Stop);
        assert!(on.may_emit());
        assert_eq!(OnDdl::default().action("a", "b"), DdlAction::Emit);
        assert!(!OnDdl::parse(&["ignore".into()]).unwrap().may_emit());
        assert!(OnDdl::parse(&["shop=stop".into()])
            .unwrap_err()
            .contains("db.table=ACTION"));
        assert!(OnDdl::parse(&["drop".into()])
            .unwrap_err()
            .contains("emit, ignore or stop"));
    }

    #[test]
    fn naming_a_table_exactly() {
        let f = Filter::new(&["shop.*".into(), "shop.ids".into()], &[]).unwrap();
        assert!(f.names("shop", "ids"));
        assert!(!f.names("shop", "orders"), "a glob does not name a table");
        let x = Filter::new(&["shop.ids".into()], &["shop.*".into()]).unwrap();
        assert!(!x.names("shop", "ids"), "an exclude still wins");
    }

    fn f(inc: &[&str], exc: &[&str]) -> Filter {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filter::new(&v(inc), &v(exc)).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob(b"shop.*", b"shop.orders"));
        assert!(!glob(b"shop.*", b"shopx.orders"));
        assert!(glob(b"*.ord?rs", b"a.orders"));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
    }

    #[test]
    fn include_then_exclude() {
        let x = f(&["shop.*"], &["shop.tmp_*"]);
        assert!(x.matches("shop", "orders"));
        assert!(!x.matches("shop", "tmp_1"));
        assert!(!x.matches("crm", "users"));
        assert!(f(&[], &[]).matches("any", "thing"));
        assert!(Filter::new(&["shop".into()], &[]).is_err());
    }
}
