//! `--include` / `--exclude`: which tables are captured, by `db.table` globs (`*` any run of
//! characters, `?` one character). A table is captured when it matches an include (or there are
//! none) and no exclude. The decision is made once per table map, never per row.

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
