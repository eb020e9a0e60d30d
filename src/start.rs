//! `--start`: where a stream begins when there is no checkpoint.

use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartSpec {
    /// The oldest binlog the source still has.
    Earliest,
    /// The source's current end: only changes committed from now on.
    Latest,
    /// After this GTID set (MySQL) or GTID list (MariaDB), in the source's dialect.
    Gtid(String),
    /// At this file and byte offset (an event boundary).
    File { name: String, pos: u64 },
}

impl FromStr for StartSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write earliest, latest, gtid:SET (e.g. gtid:0-1-100) or file:NAME:POS (e.g. file:mysql-bin.000003:4)";
        match s {
            "earliest" => Ok(StartSpec::Earliest),
            "latest" => Ok(StartSpec::Latest),
            _ => {
                if let Some(set) = s.strip_prefix("gtid:") {
                    Ok(StartSpec::Gtid(set.to_string()))
                } else if let Some(rest) = s.strip_prefix("file:") {
                    let (name, pos) = rest
                        .rsplit_once(':')
                        .ok_or_else(|| format!("--start `{s}`: {usage}"))?;
                    let pos: u64 = pos.parse().map_err(|_| {
                        format!("--start `{s}`: position `{pos}` is not a number; {usage}")
                    })?;
                    if name.is_empty() || pos < 4 {
                        return Err(format!("--start `{s}`: {usage} (positions start at 4)"));
                    }
                    Ok(StartSpec::File {
                        name: name.to_string(),
                        pos,
                    })
                } else {
                    Err(format!("--start `{s}`: {usage}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "earliest".parse::<StartSpec>().unwrap(),
            StartSpec::Earliest
        );
        assert_eq!("latest".parse::<StartSpec>().unwrap(), StartSpec::Latest);
        assert_eq!(
            "gtid:0-1-5".parse::<StartSpec>().unwrap(),
            StartSpec::Gtid("0-1-5".into())
        );
        assert_eq!(
            "file:mysql-bin.000003:1234".parse::<StartSpec>().unwrap(),
            StartSpec::File {
                name: "mysql-bin.000003".into(),
                pos: 1234
            }
        );
        for bad in ["", "first", "file:x", "file:x:abc", "file::4", "file:x:1"] {
            assert!(bad.parse::<StartSpec>().is_err(), "{bad}");
        }
    }
}
